use super::*;

fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/hl7")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const GLUCOSE: &str = "ORU_R01_GHH_LAB_glucose.hl7";
const GENERIC: &str = "sample_oru_r01_generic.hl7";
const LAB: &str = "sample_oru_r01_lab.hl7";
const ADT: &str = "sample_adt_a01.hl7";

fn results(bytes: &[u8]) -> LabResults {
    let msg = parse(bytes).expect("parses");
    lab_results(&msg).expect("lab results")
}

fn numeric(v: &Value) -> f64 {
    match v {
        Value::Numeric { value, .. } => *value,
        other => panic!("not numeric: {other:?}"),
    }
}

#[test]
fn glucose_cr_separated_sn_value() {
    let bytes = testdata(GLUCOSE);
    assert!(!bytes.contains(&b'\n'), "the sample uses CR only");
    let msg = parse(&bytes).expect("parses");
    let msh = msg.msh();
    assert_eq!(msh.sending_application, "GHH LAB");
    assert_eq!(msh.sending_facility, "ELAB-3");
    assert_eq!(msh.receiving_application, "GHH OE");
    assert_eq!(msh.receiving_facility, "BLDG4");
    assert_eq!(msh.timestamp.as_deref(), Some("200202150930"));
    assert_eq!(msh.message_type(), "ORU^R01");
    assert_eq!(msh.control_id, "CNTRL-3456");
    assert_eq!(msh.processing_id, "P");
    assert_eq!(msh.version, "2.4");
    assert_eq!(msh.charset, None);
    assert_eq!(msg.separators(), Separators::default());
    let names: Vec<&str> = msg.segments().map(Segment::name).collect();
    assert_eq!(names, ["MSH", "PID", "OBR", "OBX", "OBX"]);

    let r = lab_results(&msg).expect("lab results");
    assert_eq!(r.patient.id, "555-44-4444");
    assert_eq!(r.patient.id_authority, None);
    assert_eq!(r.patient.name.as_deref(), Some("EVERYWOMAN^EVE"));
    assert_eq!(r.patient.sex.as_deref(), Some("F"));
    assert_eq!(r.orders.len(), 1);
    let o = &r.orders[0];
    assert_eq!(o.placer_number.as_deref(), Some("845439"));
    assert_eq!(o.filler_number.as_deref(), Some("1045813"));
    assert_eq!(o.test.code, "1554-5");
    assert_eq!(o.test.text.as_deref(), Some("GLUCOSE"));
    assert_eq!(o.specimen_time.as_deref(), Some("200202150730"));
    // This sample's OBR is one field short after OBR-15: its "F" is in OBR-24.
    assert_eq!(o.result_status, None);
    assert_eq!(
        msg.segment("OBR").and_then(|s| s.text(24)).as_deref(),
        Some("F")
    );
    assert_eq!(o.observations.len(), 2);
    let sn = &o.observations[0];
    assert_eq!(sn.value_type, "SN");
    assert_eq!(
        sn.value,
        Value::Structured {
            comparator: None,
            first: Some(182.0),
            separator: None,
            second: None,
            text: "182".into()
        }
    );
    assert_eq!(sn.units.as_deref(), Some("mg/dl"));
    assert_eq!(sn.reference_range.as_deref(), Some("70_105"));
    assert_eq!(sn.abnormal_flags, ["H"]);
    assert_eq!(sn.status.as_deref(), Some("F"));
    assert_eq!(sn.code.code, "1554-5");
    assert_eq!(
        sn.code.system.as_deref(),
        Some("POST 12H CFST:MCNC:PT:SER/PLAS:QN")
    );
    assert_eq!(sn.code.loinc, None, "no triplet is coded LN");
    // FN is no value type we read: kept as text.
    assert_eq!(
        o.observations[1].value,
        Value::Other {
            value_type: "FN".into(),
            text: "^182".into()
        }
    );
}

#[test]
fn generic_cbc_lf_separated_with_loinc_alternates() {
    let bytes = testdata(GENERIC);
    assert!(!bytes.contains(&b'\r'), "the sample uses LF only");
    let msg = parse(&bytes).expect("parses");
    assert_eq!(msg.msh().control_id, "59689");
    assert_eq!(msg.msh().version, "2.3");
    let r = lab_results(&msg).expect("lab results");
    assert_eq!(r.patient.id, "12345");
    assert_eq!(r.patient.id_authority.as_deref(), Some("MIE"));
    assert_eq!(r.patient.name.as_deref(), Some("MOUSE^MINNIE"));
    assert_eq!(r.patient.birth_date.as_deref(), Some("19240101"));
    let o = &r.orders[0];
    assert_eq!(o.placer_number, None);
    assert_eq!(o.filler_number.as_deref(), Some("12376"));
    assert_eq!(o.test.code, "cbc");
    assert_eq!(o.priority.as_deref(), Some("R"));
    assert_eq!(o.specimen_time.as_deref(), Some("20120410160227"));
    assert_eq!(o.result_status.as_deref(), Some("F"));
    assert_eq!(o.observations.len(), 14);
    let wbc = &o.observations[0];
    assert_eq!(wbc.set_id.as_deref(), Some("1"));
    assert_eq!(wbc.code.code, "wbc");
    assert_eq!(wbc.code.system.as_deref(), Some("Local"));
    assert_eq!(wbc.code.loinc.as_deref(), Some("6690-2"));
    assert_eq!(numeric(&wbc.value), 7.0);
    assert!(matches!(&wbc.value, Value::Numeric { text, .. } if text == "7.0"));
    assert_eq!(wbc.units.as_deref(), Some("/nl"));
    assert_eq!(wbc.reference_range.as_deref(), Some("3.8-11.0"));
    assert!(wbc.abnormal_flags.is_empty());
    assert_eq!(wbc.status.as_deref(), Some("F"));
    assert_eq!(wbc.observed_at.as_deref(), Some("20120410160227"));
    let monos = &o.observations[3];
    assert_eq!(monos.abnormal_flags, ["H"]);
    assert_eq!(monos.code.loinc.as_deref(), Some("5905-5"));
    let rbc = &o.observations[7];
    assert_eq!(numeric(&rbc.value), 4.02);
    assert_eq!(rbc.abnormal_flags, ["L"]);
    assert_eq!(rbc.reference_range.as_deref(), Some("4.07-4.92"));
    // Local code only: no LOINC.
    assert_eq!(o.observations[11].code.code, "mch");
    assert_eq!(o.observations[11].code.loinc, None);
    assert_eq!(numeric(&o.observations[13].value), 221.0);
}

#[test]
fn lab_sample_unescapes_units_and_texts() {
    let msg = parse(&testdata(LAB)).expect("parses");
    assert_eq!(msg.msh().processing_id, "D");
    assert_eq!(msg.msh().receiving_facility, "");
    let r = lab_results(&msg).expect("lab results");
    assert_eq!(r.patient.id, "AND234DA_PID3");
    assert_eq!(r.patient.name.as_deref(), Some("Patlast^Patfirst"));
    let o = &r.orders[0];
    assert_eq!(o.placer_number.as_deref(), Some("PT1311:H00001R301.0100"));
    assert_eq!(o.filler_number.as_deref(), Some("PT1311:H00001R"));
    assert_eq!(o.test.code, "301.0100");
    assert_eq!(o.test.text.as_deref(), Some("Complete Blood Count (CBC)"));
    assert_eq!(o.test.alternate_code.as_deref(), Some("57021-8"));
    // \T\ is the subcomponent separator.
    assert_eq!(
        o.test.alternate_text.as_deref(),
        Some("CBC & Auto Differential")
    );
    assert_eq!(o.test.alternate_system.as_deref(), Some("pCLOCD"));
    assert_eq!(o.test.loinc, None, "pCLOCD is not LN");
    assert_eq!(o.priority.as_deref(), Some("R"));
    assert_eq!(o.observations.len(), 14);
    let wbc = &o.observations[0];
    assert_eq!(wbc.sub_id.as_deref(), Some("1"));
    assert_eq!(numeric(&wbc.value), 10.1);
    // \S\ is the component separator.
    assert_eq!(wbc.units.as_deref(), Some("10^9/L"));
    assert_eq!(wbc.reference_range.as_deref(), Some("3.1-9.7"));
    assert_eq!(wbc.abnormal_flags, ["H"]);
    assert_eq!(wbc.observed_at.as_deref(), Some("201411130916"));
    let plt = &o.observations[8];
    assert_eq!(numeric(&plt.value), 125.0);
    assert_eq!(plt.abnormal_flags, ["L"]);
    assert_eq!(o.observations[2].abnormal_flags, ["N"]);
    // The Z segments at the end are read as segments and ignored by lab_results.
    assert!(msg.segment("ZDR").is_some());
    let obx = msg.segments_named("OBX").nth(1).expect("second OBX");
    assert_eq!(obx.label(), "OBX 2");
    assert_eq!(obx.raw(6), Some("10\\S\\12/L"));
    assert_eq!(obx.component(6, 1).as_deref(), Some("10^12/L"));
    assert_eq!(obx.repetitions(10).len(), 2, "A~S");
}

#[test]
fn adt_is_rejected_with_a_clear_error() {
    let msg = parse(&testdata(ADT)).expect("an ADT message parses");
    assert_eq!(msg.msh().message_type(), "ADT^A01");
    let err = lab_results(&msg).expect_err("not a result message");
    assert_eq!(err, Hl7Error::UnsupportedMessageType("ADT^A01".into()));
    assert_eq!(
        err.to_string(),
        "unsupported message type ADT^A01 (ORU^R01 and OUL^R22 are accepted)"
    );
    assert_eq!(err.ack_code(), AckCode::AR);
    assert_eq!(err.hl7_code(), "200");
}

#[test]
fn cr_lf_and_crlf_segment_ends_read_the_same() {
    let lf = testdata(GENERIC);
    let cr: Vec<u8> = lf
        .iter()
        .map(|&b| if b == b'\n' { b'\r' } else { b })
        .collect();
    let crlf = String::from_utf8(lf.clone())
        .expect("ascii")
        .replace('\n', "\r\n")
        .into_bytes();
    let expected = results(&lf);
    assert_eq!(results(&cr), expected);
    assert_eq!(results(&crlf), expected);
    // Mixed, with blank lines and MLLP block characters left around it.
    let mut mixed = vec![0x0B];
    mixed.extend_from_slice(&crlf);
    mixed.extend_from_slice(b"\r\n\r\n\x1c\r");
    assert_eq!(results(&mixed), expected);
    // The glucose sample (CR) with LF instead.
    let glucose = testdata(GLUCOSE);
    let glucose_lf: Vec<u8> = glucose
        .iter()
        .map(|&b| if b == b'\r' { b'\n' } else { b })
        .collect();
    assert_eq!(results(&glucose_lf), results(&glucose));
}

/// An ORU^R01 with Chinese text, declared as `charset`.
fn chinese_oru(charset: &str) -> String {
    format!(
        "MSH|^~\\&|LIS|億區乗县医院|GATEWAY|TOWNSHIP|20240601083000||ORU^R01^ORU_R01|CN-0001|P|2.5.1|||AL|NE||{charset}\r\
         PID|1||330102199001011234^^^县医院^MR||張^億||19900101|M\r\
         ORC|RE|PL-1|FL-1||CM||^^^^^S\r\
         OBR|1|||14749-6^葡萄糖^LN|||202406010800\r\
         OBX|1|NM|14749-6^葡萄糖^LN||2.1|mmol/L|3.9-6.1|LL|||F|||202406010825\r\
         OBX|2|ST|NOTE^备注^L||危急值，已电话通知\\T\\复核|||||||F\r\
         OBX|3|CWE|HBSAG^乙肝表面抗原^L||POS^阳性^L||||A|||F\r"
    )
}

fn gb18030(text: &str) -> Vec<u8> {
    encoding_rs::GB18030.encode(text).0.into_owned()
}

#[test]
fn gb18030_message_with_chinese_names() {
    let text = chinese_oru("GB18030");
    let (bytes, _, unmappable) = encoding_rs::GB18030.encode(&text);
    assert!(!unmappable);
    // 億 and 區 end in the bytes of | and ^: splitting bytes would shift MSH-4's fields.
    assert!(bytes.windows(2).any(|w| w == [0x83, b'|']));
    let msg = parse(&bytes).expect("GB18030 parses");
    assert_eq!(msg.charset(), Charset::Gb18030);
    assert_eq!(msg.msh().sending_facility, "億區乗县医院");
    assert_eq!(msg.msh().charset.as_deref(), Some("GB18030"));
    let r = lab_results(&msg).expect("lab results");
    assert_eq!(r.patient.name.as_deref(), Some("張^億"));
    assert_eq!(r.patient.id_authority.as_deref(), Some("县医院"));
    let o = &r.orders[0];
    assert_eq!(o.priority.as_deref(), Some("S"), "from ORC-7");
    assert_eq!(o.placer_number.as_deref(), Some("PL-1"));
    assert_eq!(o.test.loinc.as_deref(), Some("14749-6"));
    assert_eq!(o.test.text.as_deref(), Some("葡萄糖"));
    assert_eq!(o.observations[0].abnormal_flags, ["LL"]);
    assert_eq!(
        o.observations[1].value,
        Value::Text("危急值，已电话通知&复核".into())
    );
    match &o.observations[2].value {
        Value::Coded(c) => {
            assert_eq!(c.code, "POS");
            assert_eq!(c.text.as_deref(), Some("阳性"));
        }
        other => panic!("{other:?}"),
    }
    // The ACK goes back in GB18030, names intact.
    let ack_bytes = ack(msg.msh(), AckCode::AA, None, "20240601083001+0800", "A1");
    let (decoded, _, bad) = encoding_rs::GB18030.decode(&ack_bytes);
    assert!(!bad);
    assert!(decoded.starts_with("MSH|^~\\&|GATEWAY|TOWNSHIP|LIS|億區乗县医院|"));
    let back = parse(&ack_bytes).expect("our ACK parses");
    assert_eq!(back.msh().charset.as_deref(), Some("GB18030"));
    assert_eq!(back.msh().receiving_facility, "億區乗县医院");
    // Other spellings of the same character set.
    for name in ["GB 18030-2000", "GBK", "gb18030"] {
        let r = results(&gb18030(&chinese_oru(name)));
        assert_eq!(r.patient.name.as_deref(), Some("張^億"), "{name}");
    }
}

#[test]
fn utf8_message_declared_or_not() {
    for charset in ["UNICODE UTF-8", "UNICODE", ""] {
        let text = chinese_oru(charset);
        let msg = parse(text.as_bytes()).expect("UTF-8 parses");
        let expected = if charset.is_empty() {
            Charset::Unspecified
        } else {
            Charset::Utf8
        };
        assert_eq!(msg.charset(), expected, "{charset:?}");
        let r = lab_results(&msg).expect("lab results");
        assert_eq!(r.patient.name.as_deref(), Some("張^億"));
        assert_eq!(msg.msh().sending_facility, "億區乗县医院");
    }
    // Declared UTF-8 but GB18030 bytes: refused, naming the character set.
    let gb = gb18030(&chinese_oru("UNICODE UTF-8"));
    let err = parse(&gb).expect_err("not UTF-8");
    assert!(matches!(err, Hl7Error::Charset { .. }), "{err:?}");
    assert!(err.to_string().contains("UTF-8"), "{err}");
    assert_eq!(err.ack_code(), AckCode::AE);
    // No MSH-18 and not UTF-8: read as ISO-8859-1.
    let latin = b"MSH|^~\\&|LIS|H\xF4pital||GW|20240101||ORU^R01|L1|P|2.4\rPID|||77||M\xFCller^J\xFCrgen\rOBR|1|||GLU^Glucose^L\rOBX|1|NM|GLU^Glucose^L||5.5|mmol/L\r";
    let msg = parse(latin).expect("latin-1 fallback");
    assert_eq!(msg.msh().sending_facility, "Hôpital");
    let r = lab_results(&msg).expect("lab results");
    assert_eq!(r.patient.name.as_deref(), Some("Müller^Jürgen"));
    // Declared 8859/1.
    let declared = b"MSH|^~\\&|LIS|H\xF4pital||GW|20240101||ORU^R01|L2|P|2.4||||||8859/1\rPID|||77\rOBR|1|||GLU\rOBX|1|NM|GLU||5.5\r";
    let msg = parse(declared).expect("8859/1");
    assert_eq!(msg.charset(), Charset::Latin1);
    assert_eq!(msg.msh().sending_facility, "Hôpital");
    // A character set we do not read.
    let cyrillic = b"MSH|^~\\&|LIS|X||GW|20240101||ORU^R01|L3|P|2.4||||||8859/5\rPID|||77\r";
    let err = parse(cyrillic).expect_err("unsupported");
    assert_eq!(err, Hl7Error::UnsupportedCharset("8859/5".into()));
    assert_eq!(err.ack_code(), AckCode::AR);
    // ... whose header can still be read to acknowledge it.
    let msh = parse_header(cyrillic).expect("header");
    assert_eq!(msh.control_id, "L3");
}

fn err_of(text: &str) -> Hl7Error {
    match parse(text.as_bytes()) {
        Err(e) => e,
        Ok(msg) => lab_results(&msg).expect_err("refused"),
    }
}

const HEADER: &str = "MSH|^~\\&|LIS|LAB|GW|TS|20240101||ORU^R01|C1|P|2.5.1\r";

#[test]
fn malformed_messages_name_the_problem() {
    assert_eq!(parse(b"").expect_err("empty"), Hl7Error::Empty);
    assert_eq!(
        parse(b" \r\n\x0b\x1c\r").expect_err("blank"),
        Hl7Error::Empty
    );
    let e = parse(b"hello world").expect_err("garbage");
    assert!(e.to_string().contains("must start with MSH"), "{e}");
    assert_eq!(e.ack_code(), AckCode::AE);
    assert!(matches!(
        parse(b"PID|1||123\r").expect_err("no MSH"),
        Hl7Error::NoMsh(_)
    ));
    let e = parse(b"MSH|^~\\&|LIS|LAB|GW|TS|20240101||ORU^R01||P|2.5.1\rPID|||1\r")
        .expect_err("no control id");
    assert_eq!(
        e.to_string(),
        "MSH-10 (message control ID) is missing in MSH"
    );
    assert_eq!(e.hl7_code(), "101");
    for bad in [
        &b"MSH"[..],
        b"MSH|^~|LIS",
        b"MSH|^^\\&|LIS",
        b"MSHA^~\\&|LIS",
        b"MSH|^~\\&&&&|LIS",
        b"MSH ^~\\& LIS",
    ] {
        let e = parse(bad).expect_err("bad separators");
        assert!(matches!(e, Hl7Error::Separators(_)), "{bad:?}: {e:?}");
    }
    let e = err_of(&format!("{HEADER}PID|||1\rthis is not a segment\r"));
    assert_eq!(
        e,
        Hl7Error::BadSegment {
            position: 3,
            found: "this is not a segmen".into()
        }
    );
    let e = err_of(&format!("{HEADER}{HEADER}"));
    assert!(e.to_string().contains("second MSH"), "{e}");
    let e = err_of(&format!("{HEADER}PID|||1\rOBX|1|NM|GLU||5\r"));
    assert_eq!(
        e.to_string(),
        "segment sequence error: OBX 1 comes before any OBR"
    );
    let e = err_of(&format!(
        "{HEADER}PID|||1\rOBR|1|||GLU\rOBX|1|NM|A||1\rOBX|2|NM|B||2\rOBX|3||C||3\r"
    ));
    assert_eq!(e.to_string(), "OBX-2 (value type) is missing in OBX 3");
    assert_eq!(e.hl7_code(), "101");
    let e = err_of(&format!("{HEADER}PID|||1\rOBR|1|||GLU\rOBX|1|NM|||1\r"));
    assert_eq!(
        e.to_string(),
        "OBX-3 (observation identifier) is missing in OBX 1"
    );
    let e = err_of(&format!("{HEADER}PID|||1\rOBR|1|||GLU\rOBX|1|NM|A||high\r"));
    assert_eq!(
        e.to_string(),
        "OBX-5 (observation value) in OBX 1 is invalid: \"high\" is not a number (OBX-2 is NM)"
    );
    assert_eq!(e.hl7_code(), "102");
    let e = err_of(&format!("{HEADER}PID|||1\rOBR|1\r"));
    assert_eq!(
        e.to_string(),
        "OBR-4 (universal service identifier) is missing in OBR 1"
    );
    let e = err_of(&format!("{HEADER}PID|1\rOBR|1|||GLU\r"));
    assert_eq!(
        e.to_string(),
        "PID-3 (patient identifier list) is missing in PID 1"
    );
    assert_eq!(
        err_of(&format!("{HEADER}OBR|1|||GLU\r")),
        Hl7Error::MissingSegment("PID")
    );
    assert_eq!(
        err_of(&format!("{HEADER}PID|||1\r")),
        Hl7Error::MissingSegment("OBR")
    );
    let e = err_of(&format!(
        "{HEADER}PID|||1\rOBR|1|||GLU\rPID|||2\rOBR|1|||GLU\r"
    ));
    assert_eq!(
        e,
        Hl7Error::SeveralPatients {
            first: "1".into(),
            other: "2".into()
        }
    );
    let e = err_of("MSH|^~\\&|LIS|LAB|GW|TS|20240101||ORU^R01|C1|P|2.6\rPID|||1\r");
    assert_eq!(e, Hl7Error::UnsupportedVersion("2.6".into()));
    assert_eq!((e.ack_code(), e.hl7_code()), (AckCode::AR, "203"));
    let e = err_of("MSH|^~\\&|LIS|LAB|GW|TS|20240101||ORU^R01|C1|P\rPID|||1\r");
    assert_eq!(e.to_string(), "MSH-12 (version ID) is missing in MSH");
    let e = err_of("MSH|^~\\&|LIS|LAB|GW|TS|20240101|||C1|P|2.5\rPID|||1\r");
    assert_eq!(e.to_string(), "MSH-9 (message type) is missing in MSH");
}

#[test]
fn several_patient_result_groups_of_one_patient_are_merged() {
    let r = results(
        format!(
            "{HEADER}PID|||1^^^SITE\rOBR|1|||GLU\rOBX|1|NM|GLU||5.1\rPID|||1^^^SITE\rORC|NW|P2\rOBR|2|||K\rOBX|1|NM|K||4.2\rTQ1|||||||||A\r"
        )
        .as_bytes(),
    );
    assert_eq!(r.orders.len(), 2);
    assert_eq!(r.orders[1].placer_number.as_deref(), Some("P2"));
    assert_eq!(r.orders[1].priority.as_deref(), Some("A"), "from TQ1-9");
}

#[test]
fn value_types() {
    let r = results(
        format!(
            "{HEADER}PID|||1\rOBR|1|||PANEL\r\
             OBX|1|NM|A||<0.5|mg/L\r\
             OBX|2|SN|B||>^10\r\
             OBX|3|SN|C||^1^:^128\r\
             OBX|4|SN|D||^10^-^20\r\
             OBX|5|TX|E||line one~line two\\.br\\line three\r\
             OBX|6|NM|F||||||||I\r\
             OBX|7|NM|G||+12.50\r\
             OBX|8|ED|H||^AP^PDF^Base64^JVBERi0=\r\
             OBX|9|CWE|I||^Positive\r"
        )
        .as_bytes(),
    );
    let v: Vec<&Value> = r.orders[0].observations.iter().map(|o| &o.value).collect();
    assert_eq!(
        *v[0],
        Value::Structured {
            comparator: Some("<".into()),
            first: Some(0.5),
            separator: None,
            second: None,
            text: "<0.5".into()
        }
    );
    assert!(
        matches!(v[1], Value::Structured { comparator: Some(c), first: Some(f), text, .. } if c == ">" && *f == 10.0 && text == ">10")
    );
    assert!(
        matches!(v[2], Value::Structured { first: Some(a), separator: Some(s), second: Some(b), text, .. } if *a == 1.0 && s == ":" && *b == 128.0 && text == "1:128")
    );
    assert!(matches!(v[3], Value::Structured { text, .. } if text == "10-20"));
    assert_eq!(*v[4], Value::Text("line one\nline two\nline three".into()));
    assert_eq!(*v[5], Value::Empty);
    assert_eq!(r.orders[0].observations[5].status.as_deref(), Some("I"));
    assert_eq!(numeric(v[6]), 12.5);
    assert!(
        matches!(v[7], Value::Other { value_type, text } if value_type == "ED" && text.ends_with("JVBERi0="))
    );
    assert!(
        matches!(v[8], Value::Coded(c) if c.code.is_empty() && c.text.as_deref() == Some("Positive"))
    );
    for bad in ["1e5", "NaN", "inf", "1.2.3", "-", "12a"] {
        let e = err_of(&format!("{HEADER}PID|||1\rOBR|1|||X\rOBX|1|NM|A||{bad}\r"));
        assert!(matches!(e, Hl7Error::InvalidField { .. }), "{bad}: {e:?}");
    }
    let e = err_of(&format!("{HEADER}PID|||1\rOBR|1|||X\rOBX|1|SN|A||^abc\r"));
    assert!(e.to_string().contains("component 2"), "{e}");
}

#[test]
fn oul_r22_specimen_oriented() {
    let r = results(
        b"MSH|^~\\&|LIS|LAB|GW|TS|20240101||OUL^R22^OUL_R22|U1|P|2.5.1\r\
          PID|||900^^^LAB\r\
          SPM|1|SP1||BLD\r\
          OBX|1|NM|TEMP^Specimen temperature^L||4\r\
          OBR|1|||GLU^Glucose^L\r\
          ORC|SC|P9|F9||||^^^^^S\r\
          OBX|1|NM|GLU^Glucose^L||6.2|mmol/L\r",
    );
    assert_eq!(r.patient.id, "900");
    assert_eq!(r.orders.len(), 1);
    let o = &r.orders[0];
    assert_eq!(o.placer_number.as_deref(), Some("P9"));
    assert_eq!(o.priority.as_deref(), Some("S"));
    assert_eq!(
        o.observations.len(),
        1,
        "the specimen's own OBX is not a result"
    );
    assert_eq!(numeric(&o.observations[0].value), 6.2);
}

#[test]
fn escapes_round_trip() {
    let seps = Separators::default();
    let text = "a|b^c&d~e\\f";
    let escaped = escape(text, &seps);
    assert_eq!(escaped, "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f");
    assert_eq!(unescape(&escaped, &seps), text);
    assert_eq!(unescape("x\\.br\\y", &seps), "x\ny");
    assert_eq!(escape("x\r\ny\nz\t", &seps), "x\\.br\\y\\.br\\z");
    // Unknown and unterminated sequences are kept as written.
    assert_eq!(
        unescape("\\H\\bold\\N\\ \\X0D\\", &seps),
        "\\H\\bold\\N\\ \\X0D\\"
    );
    assert_eq!(unescape("50\\", &seps), "50\\");
    // Other separators, declared in MSH-2.
    let msg = parse(b"MSH#:*!@#LIS#LAB#GW#TS#20240101##ORU:R01#C!F!1#P#2.4\rPID###7:::AUTH\rOBR#1###GLU\rOBX#1#NM#GLU##5*6\r")
        .expect("custom separators");
    assert_eq!(msg.msh().control_id, "C#1");
    let r = lab_results(&msg).expect("lab results");
    assert_eq!(r.patient.id_authority.as_deref(), Some("AUTH"));
    assert_eq!(
        numeric(&r.orders[0].observations[0].value),
        5.0,
        "first repetition"
    );
}

#[test]
fn timestamps() {
    // 2024-01-01T00:00:00Z
    const JAN1: i64 = 1_704_067_200_000;
    const H8: i64 = 8 * 3_600_000;
    assert_eq!(ts_to_ms("20240101000000+0000"), Some(JAN1));
    assert_eq!(
        ts_to_ms("20240101000000"),
        Some(JAN1 - H8),
        "UTC+8 by default"
    );
    assert_eq!(ts_to_ms("2024"), Some(JAN1 - H8));
    assert_eq!(ts_to_ms("202401"), Some(JAN1 - H8));
    assert_eq!(ts_to_ms("2024010108"), Some(JAN1));
    assert_eq!(ts_to_ms("202401010800"), Some(JAN1));
    assert_eq!(ts_to_ms("20240101000000.5+0000"), Some(JAN1 + 500));
    assert_eq!(ts_to_ms("20240101000000.1234+0000"), Some(JAN1 + 123));
    assert_eq!(ts_to_ms("20231231190000-0500"), Some(JAN1));
    assert_eq!(
        ts_to_ms("20240229120000+0000"),
        Some(JAN1 + (59 * 24 + 12) * 3_600_000)
    );
    assert_eq!(ts_to_ms(" 19700101080000 "), Some(0));
    for bad in [
        "",
        "2024013",
        "20240230",
        "20230229",
        "20241301",
        "20240101240000",
        "20240101006000",
        "abc",
        "20240101+08",
        "20240101+0860",
        "2024.5",
        "20240101000000.12345",
        "196203520",
        "2024-01-01",
    ] {
        assert_eq!(ts_to_ms(bad), None, "{bad:?}");
    }
}

fn ack_message(bytes: &[u8]) -> Message {
    parse(bytes).expect("our ACK parses")
}

#[test]
fn acks_echo_the_control_id_and_name_errors() {
    let msg = parse(&testdata(GLUCOSE)).expect("parses");
    let aa = ack(msg.msh(), AckCode::AA, None, "20240601083000+0800", "GW-1");
    let text = String::from_utf8(aa.clone()).expect("utf8");
    assert!(text.ends_with('\r'));
    assert!(!text.contains("ERR"));
    let a = ack_message(&aa);
    let msh = a.msh();
    assert_eq!(msh.sending_application, "GHH OE");
    assert_eq!(msh.sending_facility, "BLDG4");
    assert_eq!(msh.receiving_application, "GHH LAB");
    assert_eq!(msh.receiving_facility, "ELAB-3");
    assert_eq!(msh.message_type(), "ACK^R01");
    assert_eq!(msh.message_structure.as_deref(), Some("ACK"));
    assert_eq!(msh.control_id, "GW-1");
    assert_eq!(msh.version, "2.4");
    assert_eq!(msh.processing_id, "P");
    assert_eq!(msh.timestamp.as_deref(), Some("20240601083000+0800"));
    let msa = a.segment("MSA").expect("MSA");
    assert_eq!(msa.text(1).as_deref(), Some("AA"));
    assert_eq!(msa.text(2).as_deref(), Some("CNTRL-3456"));

    let why = "OBX-2 (value type) is missing in OBX 3 | really";
    let ae = ack(
        msg.msh(),
        AckCode::AE,
        Some(("101", why)),
        "20240601083000",
        "GW-2",
    );
    let a = ack_message(&ae);
    let msa = a.segment("MSA").expect("MSA");
    assert_eq!(msa.text(1).as_deref(), Some("AE"));
    assert_eq!(msa.text(2).as_deref(), Some("CNTRL-3456"));
    assert_eq!(msa.text(3).as_deref(), Some(why));
    let err = a.segment("ERR").expect("ERR");
    assert_eq!(err.component(3, 1).as_deref(), Some("101"));
    assert_eq!(
        err.component(3, 2).as_deref(),
        Some("Required field missing")
    );
    assert_eq!(err.component(3, 3).as_deref(), Some("HL70357"));
    assert_eq!(err.subcomponent(1, 4, 1).as_deref(), Some("101"));
    assert_eq!(err.text(4).as_deref(), Some("E"));
    assert_eq!(err.text(8).as_deref(), Some(why));

    // v2.3: no message structure component; an AR without a given reason still has ERR.
    let generic = parse(&testdata(GENERIC)).expect("parses");
    let ar = ack(generic.msh(), AckCode::AR, None, "20240601", "GW-3");
    let a = ack_message(&ar);
    assert_eq!(a.msh().message_type(), "ACK^R01");
    assert_eq!(a.msh().message_structure, None);
    assert_eq!(
        a.segment("ERR").and_then(|e| e.component(3, 1)).as_deref(),
        Some("207")
    );

    let raw = ack_without_msh(AckCode::AE, "not an HL7 v2 message", "20240601", "GW-4");
    let a = ack_message(&raw);
    assert_eq!(a.msh().control_id, "GW-4");
    let msa = a.segment("MSA").expect("MSA");
    assert_eq!(msa.text(1).as_deref(), Some("AE"));
    assert_eq!(msa.text(2), None);
    assert_eq!(
        a.segment("ERR").and_then(|e| e.component(3, 1)).as_deref(),
        Some("100")
    );
}

/// A small deterministic generator for the mutation loop (no dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn truncated_and_mutated_messages_never_panic() {
    let mut samples: Vec<Vec<u8>> = [GLUCOSE, GENERIC, LAB, ADT].map(testdata).to_vec();
    samples.push(gb18030(&chinese_oru("GB18030")));
    let mut parsed = 0;
    for sample in &samples {
        for end in 0..=sample.len() {
            let cut = &sample[..end];
            if let Ok(msg) = parse(cut) {
                parsed += 1;
                let _ = lab_results(&msg);
            }
            let _ = parse_header(cut);
            let _ = parse(&sample[end..]);
        }
    }
    assert!(parsed > 100, "most truncations after MSH-10 still parse");
    let mut rng = Lcg(0x5eed);
    let interesting = [
        b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n', 0x0B, 0x1C, 0xFF, 0x83, 0,
    ];
    for round in 0..4000 {
        let mut bytes = samples[round % samples.len()].clone();
        for _ in 0..(1 + rng.next() % 4) {
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = if rng.next() & 1 == 0 {
                interesting[(rng.next() as usize) % interesting.len()]
            } else {
                rng.next() as u8
            };
        }
        if let Ok(msg) = parse(&bytes) {
            let _ = lab_results(&msg);
            let _ = ack(msg.msh(), AckCode::AE, Some(("102", "x")), "2024", "1");
        }
        let _ = parse_header(&bytes);
    }
}

#[test]
fn content_digest_ignores_framing_and_separators_but_not_values() {
    let original = testdata(LAB);
    let digest = |b: &[u8]| parse(b).expect("parses").content_digest();
    let text = String::from_utf8(original.clone()).expect("ASCII sample");
    let cr_only = text.replace("\r\n", "\r").replace('\n', "\r");
    let without_trailer = cr_only.trim_end_matches('\r').to_string();
    let lf_only = cr_only.replace('\r', "\n");
    assert_ne!(cr_only, without_trailer);
    for variant in [&cr_only, &without_trailer, &lf_only] {
        assert_eq!(digest(variant.as_bytes()), digest(&original), "{variant:?}");
    }
    // `#` for components says the same (in a sample without escape sequences: `\S\`
    // means whatever the component separator is, so it would change the text).
    let glucose = testdata(GLUCOSE);
    let hashes = String::from_utf8(glucose.clone())
        .expect("ASCII")
        .replace('^', "#");
    assert_eq!(digest(hashes.as_bytes()), digest(&glucose));
    // A trailing empty field is not content either.
    let padded = without_trailer.clone() + "|";
    assert_eq!(digest(padded.as_bytes()), digest(&original));
    // A changed value is.
    let changed = cr_only.replacen("OBX|1|", "OBX|2|", 1);
    assert_ne!(changed, cr_only);
    assert_ne!(digest(changed.as_bytes()), digest(&original));
}
