//! Tests of the readers on the real files in `shared/testdata/ecg`, and of hostile
//! variants of them (truncations, byte flips with CRCs recomputed so that the decoders,
//! not only the checksums, see the damage).

use super::scp::crc_ccitt;
use super::*;

fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/ecg")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SCP: &str = "scptools_ECG_20070321_110542_191010101010.SCP";
const AECG: &str = "cvrg_hl7aecg-Example2.xml";
const AECG_MIN: &str = "fda_minimum_aecg.xml";

fn labels(ecg: &Ecg) -> Vec<&str> {
    ecg.leads.iter().map(|l| l.label.as_str()).collect()
}

#[test]
fn ecg_scp_welch_allyn_record_reads_completely() {
    let ecg = read_scp(&testdata(SCP)).expect("reads");
    assert_eq!(ecg.source_format, SourceFormat::ScpEcg);
    assert_eq!(ecg.sample_rate_hz, 1_000_000.0 / 1667.0);
    assert_eq!(
        labels(&ecg),
        ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    );
    assert!(ecg.leads.iter().all(|l| l.samples_uv.len() == 6000));
    let derived: Vec<bool> = ecg.leads.iter().map(|l| l.derived).collect();
    assert_eq!(derived[..7], [false, false, true, true, true, true, false]);
    // First samples as biosig's save2gdf prints them (3750 nV steps).
    assert_eq!(
        ecg.leads[0].samples_uv[..5],
        [18.75, 22.5, 26.25, 26.25, 30.0]
    );
    let m = &ecg.device_measurements;
    assert_eq!(m.heart_rate_bpm, Some(75.0));
    assert_eq!(m.rr_ms, Some(800.0));
    assert_eq!(m.pr_ms, Some(157.0));
    assert_eq!(m.qrs_ms, Some(88.0));
    assert_eq!(m.qt_ms, Some(360.0));
    assert_eq!(m.qtc_ms, Some(402.0));
    assert_eq!(
        (m.p_axis, m.qrs_axis, m.t_axis),
        (Some(29.0), Some(53.0), Some(56.0))
    );
    assert_eq!(ecg.filters.lowpass_hz, Some(35.0));
    assert_eq!(ecg.filters.notch_hz, Some(50.0));
    assert_eq!(ecg.filters.highpass_hz, None);
    assert_eq!(ecg.patient.id.as_deref(), Some("191010101010"));
    assert_eq!(ecg.patient.name.as_deref(), Some("Karlsson^Peter"));
    assert_eq!(ecg.patient.birth_date.as_deref(), Some("19680227"));
    assert_eq!(ecg.patient.sex.as_deref(), Some("M"));
    assert_eq!(
        ecg.device.as_deref(),
        Some("Welch Allyn Cardio Control MDW14")
    );
    assert_eq!(ecg.acquired_at.as_deref(), Some("20070321110542"));
    // No zone in the record: 11:05:42 at UTC+8.
    assert_eq!(ecg.acquired_at_ms, Some(1_174_446_342_000));
    assert_eq!(
        ecg.statements.first().map(String::as_str),
        Some("sinusrytm")
    );
    assert!(
        ecg.statements
            .iter()
            .any(|s| s.contains("ålderskorrigerat")),
        "Latin-1 text decoded: {:?}",
        ecg.statements
    );
}

#[test]
fn ecg_aecg_cvrg_example_reads_rhythm_not_representative_beat() {
    let ecg = read_aecg(&testdata(AECG)).expect("reads");
    assert_eq!(ecg.source_format, SourceFormat::HL7aECG);
    assert_eq!(ecg.sample_rate_hz, 1000.0);
    assert_eq!(
        labels(&ecg),
        ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    );
    assert!(ecg
        .leads
        .iter()
        .all(|l| l.samples_uv.len() == 10_000 && !l.derived));
    // digits 65 67 70 at scale 2.5 uV.
    assert_eq!(ecg.leads[0].samples_uv[..3], [162.5, 167.5, 175.0]);
    assert_eq!(ecg.device_measurements.heart_rate_bpm, Some(52.0));
    assert_eq!(ecg.acquired_at.as_deref(), Some("20040115112004.000"));
    assert_eq!(ecg.acquired_at_ms, Some(1_074_136_804_000));
    assert_eq!(ecg.patient.id.as_deref(), Some("106_ABC"));
    assert_eq!(ecg.patient.name.as_deref(), Some("ABC"));
    assert_eq!(ecg.patient.birth_date.as_deref(), Some("19710616"));
    assert_eq!(ecg.device.as_deref(), Some("Manufacturer ABC 12345"));
}

#[test]
fn ecg_aecg_minimal_fda_example_reads() {
    let ecg = read_aecg(&testdata(AECG_MIN)).expect("reads");
    assert_eq!(ecg.sample_rate_hz, 500.0);
    assert_eq!(labels(&ecg), ["II"]);
    assert_eq!(ecg.leads[0].samples_uv.len(), 13);
    assert_eq!(ecg.leads[0].samples_uv[..3], [-5.0, -5.0, -5.0]);
    assert_eq!(ecg.acquired_at.as_deref(), Some("20021122091000"));
    assert_eq!(ecg.patient.id.as_deref(), Some("SBJ-123"));
}

#[test]
fn ecg_aecg_several_subjects_keep_the_patient_id() {
    let original = String::from_utf8(testdata(AECG_MIN)).expect("utf-8");
    let subject = r#"<id root="2.16.840.1.113883.3.456" extension="SBJ-123"/>"#;
    assert!(original.contains(subject));
    // A first subject with demographics only and an identifier given by its OID alone,
    // before the one with the patient's identifier.
    let extra = r#"<trialSubject><id root="2.16.840.1.113883.3.999"/><subjectDemographicPerson><name><family>Wang</family><given>Li</given></name></subjectDemographicPerson></trialSubject></subject><subject><trialSubject>"#;
    let changed = original.replacen("<trialSubject>", extra, 1);
    assert_ne!(changed, original);
    let ecg = read_aecg(changed.as_bytes()).expect("reads");
    assert_eq!(ecg.patient.id.as_deref(), Some("SBJ-123"));
    assert_eq!(ecg.patient.name.as_deref(), Some("Wang^Li"));
}

#[test]
fn ecg_aecg_errors_name_the_sequence() {
    let text = String::from_utf8(testdata(AECG_MIN)).expect("utf-8");
    let lead = text
        .find("<component>\n\t\t\t\t\t\t<sequence classCode")
        .expect("lead component");
    let end = text[lead..].find("</component>").expect("end") + lead + "</component>".len();
    let v1 = text[lead..end]
        .replace("MDC_ECG_LEAD_II", "MDC_ECG_LEAD_V1")
        .replace("-6 -9 -9 ", "-6 -9 ");
    let two_leads = format!("{}{v1}{}", &text[..end], &text[end..]);
    let err = read_aecg(two_leads.as_bytes())
        .expect_err("short lead")
        .to_string();
    assert_eq!(
        err,
        "aECG: sequence for MDC_ECG_LEAD_V1 has 12 digits, expected 13"
    );

    let err = read_aecg(b"<Other/>").expect_err("wrong root").to_string();
    assert!(err.contains("root element is <Other>"), "{err}");
    let err = read_aecg(br#"<!DOCTYPE x [<!ENTITY a "aaaa">]><AnnotatedECG/>"#)
        .expect_err("DTD")
        .to_string();
    assert!(err.starts_with("aECG: not well-formed XML"), "{err}");
    let bad_digit = text.replace("-2 -2 -2", "-2 x2 -2");
    let err = read_aecg(bad_digit.as_bytes())
        .expect_err("digit")
        .to_string();
    assert!(err.contains("digit 2 (\"x2\") is not a number"), "{err}");
}

#[test]
fn ecg_read_any_recognises_each_format() {
    assert_eq!(
        read_any(&testdata(SCP)).expect("scp").source_format,
        SourceFormat::ScpEcg
    );
    assert_eq!(
        read_any(&testdata(AECG_MIN)).expect("aecg").source_format,
        SourceFormat::HL7aECG
    );
    let err = read_any(b"MSH|^~\\&|").expect_err("hl7 v2").to_string();
    assert!(err.starts_with("not an ECG file we can read"), "{err}");
    assert!(read_any(&[]).is_err());
}

#[test]
fn ecg_scp_crc_mismatches_are_errors() {
    let mut bytes = testdata(SCP);
    let at = 5000; // inside section 6
    bytes[at] ^= 0x10;
    let err = read_scp(&bytes).expect_err("record crc").to_string();
    assert!(err.starts_with("SCP-ECG record: CRC mismatch"), "{err}");
    let crc = crc_ccitt(&bytes[2..]);
    bytes[..2].copy_from_slice(&crc.to_le_bytes());
    let err = read_scp(&bytes).expect_err("section crc").to_string();
    assert!(err.starts_with("SCP section 6: CRC mismatch"), "{err}");
}

/// Sections of the record as (start, length), from section 0.
fn scp_sections(bytes: &[u8]) -> Vec<(usize, usize)> {
    let len0 = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    bytes[22..6 + len0]
        .chunks_exact(10)
        .filter_map(|p| {
            let len = u32::from_le_bytes([p[2], p[3], p[4], p[5]]) as usize;
            let index = u32::from_le_bytes([p[6], p[7], p[8], p[9]]) as usize;
            (len > 0).then(|| (index - 1, len))
        })
        .collect()
}

/// Recompute every section CRC and the record CRC after a change, where the
/// structure still allows it.
fn fix_scp_crcs(bytes: &mut [u8], sections: &[(usize, usize)]) {
    for &(start, len) in sections {
        if start + len <= bytes.len() && len >= 2 {
            let crc = crc_ccitt(&bytes[start + 2..start + len]);
            bytes[start..start + 2].copy_from_slice(&crc.to_le_bytes());
        }
    }
    if bytes.len() >= 2 {
        let crc = crc_ccitt(&bytes[2..]);
        bytes[..2].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A small deterministic generator: the loops must be reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn ecg_scp_hostile_variants_never_panic() {
    let original = testdata(SCP);
    let sections = scp_sections(&original);
    for cut in (0..original.len()).step_by(97) {
        assert!(read_scp(&original[..cut]).is_err(), "truncated at {cut}");
        assert!(read_any(&original[..cut]).is_err(), "truncated at {cut}");
    }
    let mut rng = XorShift(0x005C_9EC6);
    let mut decoded_damage = 0;
    for _ in 0..600 {
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
        fix_scp_crcs(&mut bytes, &sections);
        if read_scp(&bytes).is_ok() {
            decoded_damage += 1;
        }
    }
    // Most flips land in Huffman data, which decodes to other samples: the decoder,
    // not only the CRC check, was exercised.
    assert!(decoded_damage > 100, "{decoded_damage}");
    // Declared lengths far beyond the record are refused before allocation.
    let mut huge = original.clone();
    let s6 = sections[6].0;
    huge[s6 + 16 + 6..s6 + 16 + 8].copy_from_slice(&u16::MAX.to_le_bytes());
    let s3 = sections[3].0;
    huge[s3 + 16 + 6..s3 + 16 + 10].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_scp_crcs(&mut huge, &sections);
    let err = read_scp(&huge).expect_err("absurd").to_string();
    assert!(err.starts_with("SCP section 3"), "{err}");
}

#[test]
fn ecg_aecg_hostile_variants_never_panic() {
    for (name, step, flips) in [(AECG_MIN, 7, 400), (AECG, 9973, 40)] {
        let original = testdata(name);
        for cut in (0..original.len()).step_by(step) {
            assert!(read_aecg(&original[..cut]).is_err(), "{name} cut at {cut}");
        }
        let mut rng = XorShift(0xAEC6);
        for _ in 0..flips {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            let _ = read_any(&bytes);
        }
    }
    let too_big = vec![b' '; MAX_AECG_BYTES + 1];
    let err = read_aecg(&too_big).expect_err("too big").to_string();
    assert!(
        err.contains("larger than the 67108864 bytes accepted"),
        "{err}"
    );
}

/// The record with every lead of section 3 given the sample range `first..=last`.
fn scp_with_range(first: u32, last: u32) -> Vec<u8> {
    let mut bytes = testdata(SCP);
    let sections = scp_sections(&bytes);
    let (start, _) = *sections
        .iter()
        .find(|(s, _)| u16::from_le_bytes([bytes[s + 2], bytes[s + 3]]) == 3)
        .expect("section 3");
    let body = start + 16;
    let count = usize::from(bytes[body]);
    for i in 0..count {
        let at = body + 2 + i * 9;
        bytes[at..at + 4].copy_from_slice(&first.to_le_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&last.to_le_bytes());
    }
    fix_scp_crcs(&mut bytes, &sections);
    bytes
}

#[test]
fn ecg_scp_zero_based_sample_ranges_are_read_as_the_data_say() {
    // The file's own 1..=6000, then a cart counting from 0 (0..=5999), then one
    // writing 0 for "from the start" (0..=6000): all are the same 6000 samples.
    for (first, last) in [(1, 6000), (0, 5999), (0, 6000)] {
        let ecg = read_scp(&scp_with_range(first, last))
            .unwrap_or_else(|e| panic!("{first}..={last}: {e}"));
        assert!(
            ecg.leads.iter().all(|l| l.samples_uv.len() == 6000),
            "{first}..={last}: {:?}",
            ecg.leads
                .iter()
                .map(|l| l.samples_uv.len())
                .collect::<Vec<_>>()
        );
        assert_eq!(ecg.leads[0].samples_uv[..3], [18.75, 22.5, 26.25]);
    }
    // What the data cannot hold is still refused, naming the lead.
    for (first, last) in [(0, 9000), (1, 9000), (0, 0)] {
        let err = read_scp(&scp_with_range(first, last))
            .expect_err("inconsistent range")
            .to_string();
        assert!(err.contains("lead"), "{first}..={last}: {err}");
    }
}
