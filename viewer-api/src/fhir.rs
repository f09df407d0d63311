//! A signed report version as a FHIR R4 `DiagnosticReport`.
//!
//! The resource is self-contained: the Patient, the ImagingStudy (imaging exams), the
//! reading centre and the readers are `contained` resources, because a township system
//! receiving it has no shared FHIR server to resolve references against. The PDF rides
//! along as `presentedForm`, and the signature facts (key, payload digest, verification
//! result), the critical flag and the amendment reason as extensions, since R4 has no
//! elements for them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use formats::report::{payload_sha256, ReportPayload, ReportStatus, Signer};
use serde_json::{json, Map, Value};

use crate::printout::{
    format_cst, iso8601_cst, report_title, status_label, ExamKind, Printout, VerificationState,
};

/// System of the report identifier.
pub const REPORT_ID_SYSTEM: &str = "urn:county-hub:report";
/// System of reader identifiers (hub user names).
pub const USER_SYSTEM: &str = "urn:county-hub:user";
/// Extension: the report carries a critical finding (危急值), `valueBoolean`.
pub const EXT_CRITICAL: &str = "urn:county-hub:fhir:critical-finding";
/// Extension: why this version replaces the previous one, `valueString`.
pub const EXT_AMENDMENT_REASON: &str = "urn:county-hub:fhir:amendment-reason";
/// Extension: the version this one replaces, `valueReference`.
pub const EXT_REPLACES: &str = "urn:county-hub:fhir:replaces";
/// Extension: the electronic signature (`keyId`, `payloadSha256`, `verified`, `failure`).
pub const EXT_SIGNATURE: &str = "urn:county-hub:fhir:report-signature";

const V2_0074: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const LOINC: &str = "http://loinc.org";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";
const ISO21090_EN_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

/// One component group of a DICOM person name (`Family^Given^Middle^Prefix^Suffix`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameGroup {
    /// Family name.
    pub family: String,
    /// Given and middle names, non-empty ones only.
    pub given: Vec<String>,
    /// Prefix.
    pub prefix: String,
    /// Suffix.
    pub suffix: String,
}

impl NameGroup {
    fn parse(group: &str) -> Option<Self> {
        let parts: Vec<&str> = group.split('^').map(str::trim).collect();
        let get = |i: usize| parts.get(i).copied().unwrap_or("").to_string();
        let name = NameGroup {
            family: get(0),
            given: [get(1), get(2)]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            prefix: get(3),
            suffix: get(4),
        };
        if name.family.is_empty()
            && name.given.is_empty()
            && name.prefix.is_empty()
            && name.suffix.is_empty()
        {
            None
        } else {
            Some(name)
        }
    }

    /// The name as one string, family name first (the Chinese order, used here for
    /// romanised names too): without spaces when it is written in Chinese characters.
    pub fn text(&self) -> String {
        let parts: Vec<&str> = std::iter::once(self.prefix.as_str())
            .chain(std::iter::once(self.family.as_str()))
            .chain(self.given.iter().map(String::as_str))
            .chain(std::iter::once(self.suffix.as_str()))
            .filter(|s| !s.is_empty())
            .collect();
        let han = parts.iter().any(|p| p.chars().any(is_han));
        parts.join(if han { "" } else { " " })
    }
}

fn is_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF)
}

/// A DICOM PN value: up to three groups separated by `=` (alphabetic, ideographic,
/// phonetic), e.g. `Zhang^San=张^三`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonName {
    /// The alphabetic (single-byte) group.
    pub alphabetic: Option<NameGroup>,
    /// The ideographic group (Chinese characters).
    pub ideographic: Option<NameGroup>,
    /// The phonetic group.
    pub phonetic: Option<NameGroup>,
}

impl PersonName {
    /// Parse a PN value (empty groups are `None`).
    pub fn parse(pn: &str) -> Self {
        let mut groups = pn.split('=');
        PersonName {
            alphabetic: groups.next().and_then(NameGroup::parse),
            ideographic: groups.next().and_then(NameGroup::parse),
            phonetic: groups.next().and_then(NameGroup::parse),
        }
    }

    /// The name as printed: the ideographic group if present, else the alphabetic one.
    pub fn display(&self) -> Option<String> {
        self.ideographic
            .as_ref()
            .or(self.alphabetic.as_ref())
            .map(NameGroup::text)
    }

    /// FHIR `HumanName`s: the ideographic group first (its `text` is how the patient's
    /// name is shown), then the alphabetic one, each marked with the ISO 21090
    /// representation extension (`IDE` / `ABC`) so neither is lost.
    fn to_fhir(&self) -> Vec<Value> {
        let mut names = Vec::new();
        let both = self.ideographic.is_some() && self.alphabetic.is_some();
        for (group, representation, usage) in [
            (&self.ideographic, "IDE", "official"),
            (
                &self.alphabetic,
                "ABC",
                if both { "usual" } else { "official" },
            ),
        ] {
            let Some(group) = group else { continue };
            let mut name = Map::new();
            if both {
                name.insert(
                    "extension".into(),
                    json!([{ "url": ISO21090_EN_REPRESENTATION, "valueCode": representation }]),
                );
            }
            name.insert("use".into(), json!(usage));
            name.insert("text".into(), json!(group.text()));
            if !group.family.is_empty() {
                name.insert("family".into(), json!(group.family));
            }
            if !group.given.is_empty() {
                name.insert("given".into(), json!(group.given));
            }
            if !group.prefix.is_empty() {
                name.insert("prefix".into(), json!([group.prefix]));
            }
            if !group.suffix.is_empty() {
                name.insert("suffix".into(), json!([group.suffix]));
            }
            names.push(Value::Object(name));
        }
        names
    }
}

/// DICOM modality code → its display in the DCM code system, for the codes a county
/// reading centre sees; others get no coding rather than an invented one.
fn dcm_modality(code: &str) -> Option<&'static str> {
    Some(match code {
        "CT" => "Computed Tomography",
        "MR" => "Magnetic Resonance",
        "CR" => "Computed Radiography",
        "DX" => "Digital Radiography",
        "RF" => "Radio Fluoroscopy",
        "US" => "Ultrasound",
        "MG" => "Mammography",
        "XA" => "X-Ray Angiography",
        "NM" => "Nuclear Medicine",
        "PT" => "Positron emission tomography",
        "ES" => "Endoscopy",
        "IO" => "Intra-oral Radiography",
        "PX" => "Panoramic X-Ray",
        "OT" => "Other",
        "ECG" => "Electrocardiography",
        _ => return None,
    })
}

/// Percent-encode everything but RFC 3986 unreserved characters, so site names and ids
/// of any spelling make valid URNs and URL path segments.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A FHIR resource id (`[A-Za-z0-9\-\.]{1,64}`) from a report id and version; other
/// characters become `-`.
fn resource_id(report_id: &str, version: i64) -> String {
    let raw = format!("{report_id}-v{version}");
    let id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Keep the version suffix if the id is too long: it is what distinguishes versions.
    if id.len() > 64 {
        let suffix = format!("-v{version}");
        format!("{}{}", &id[..64 - suffix.len()], suffix)
    } else {
        id
    }
}

/// Escape text for XHTML; drops characters XML 1.0 cannot carry at all.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Multi-line text as XHTML: escaped, line breaks as `<br/>`.
fn xhtml_lines(s: &str) -> String {
    s.lines()
        .map(|l| xml_escape(l.trim_end_matches('\r')))
        .collect::<Vec<_>>()
        .join("<br/>")
}

/// The text of the conclusion: `impression`, else `conclusion`.
fn conclusion_of(payload: &ReportPayload) -> Option<&str> {
    ["impression", "conclusion"]
        .iter()
        .filter_map(|k| payload.content.get(*k))
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
}

fn practitioner(id: &str, signer: &Signer) -> Value {
    json!({
        "resourceType": "Practitioner",
        "id": id,
        "identifier": [{ "system": USER_SYSTEM, "value": signer.username }],
        "name": [{ "text": signer.display_name }],
    })
}

/// Labels of the content fields in print order (template order, then the rest by key).
fn ordered_fields<'a>(p: &'a Printout) -> Vec<(&'a str, &'a str)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (key, label) in p.field_labels {
        if let Some(text) = p.payload.content.get(key) {
            if seen.insert(key.as_str()) {
                out.push((label.as_str(), text.as_str()));
            }
        }
    }
    for (key, text) in &p.payload.content {
        if seen.insert(key.as_str()) {
            out.push((key.as_str(), text.as_str()));
        }
    }
    out
}

/// The human-readable narrative: what a FHIR viewer shows without understanding codes.
fn narrative(p: &Printout, title: &str, patient: &str) -> String {
    let pl = p.payload;
    let mut div = format!("<div xmlns=\"{XHTML_NS}\">");
    div.push_str(&format!(
        "<h3>{}</h3><p>{}</p>",
        xml_escape(title),
        xml_escape(p.hospital_name)
    ));
    if let VerificationState::Invalid { reason } = p.verification {
        div.push_str(&format!(
            "<p><b>签名验证失败：{}</b></p>",
            xml_escape(reason)
        ));
    }
    if pl.critical {
        div.push_str("<p><b>危急值：本报告含危急值</b></p>");
    }
    div.push_str(&format!(
        "<p>患者：{}（患者ID {}），送检单位：{}，报告 {} 第 {} 版，状态：{}</p>",
        xml_escape(patient),
        xml_escape(pl.exam.patient_id.as_deref().unwrap_or("—")),
        xml_escape(p.site_name),
        xml_escape(&pl.report_id),
        pl.version,
        status_label(pl.status),
    ));
    if let Some(reason) = pl.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        div.push_str(&format!("<p>修正原因：{}</p>", xhtml_lines(reason)));
    }
    for (label, text) in ordered_fields(p) {
        if text.trim().is_empty() {
            continue;
        }
        div.push_str(&format!(
            "<p><b>{}</b></p><p>{}</p>",
            xml_escape(label),
            xhtml_lines(text)
        ));
    }
    if let Some(junior) = &pl.preliminary_by {
        div.push_str(&format!(
            "<p>初诊医师：{} {}</p>",
            xml_escape(&junior.display_name),
            format_cst(junior.signed_at_ms)
        ));
    }
    div.push_str(&format!(
        "<p>签名医师：{} {}（北京时间）</p>",
        xml_escape(&pl.signer.display_name),
        format_cst(pl.signer.signed_at_ms)
    ));
    if let VerificationState::Valid { key_id } = p.verification {
        div.push_str(&format!(
            "<p>电子签名验证通过（验证密钥 {}）</p>",
            xml_escape(key_id)
        ));
    }
    div.push_str("</div>");
    div
}

/// The hub origin from `base_url`: tolerates a trailing `/` and a trailing `/dicomweb`
/// (what [`crate::base_url`] returns for a request).
fn origin(base_url: &str) -> &str {
    let base = base_url.trim_end_matches('/');
    base.strip_suffix("/dicomweb").unwrap_or(base)
}

/// The report version as a FHIR R4 `DiagnosticReport` (JSON).
///
/// `pdf`, when given, is embedded as `presentedForm` data (base64); the attachment also
/// names the URL the PDF is served at, so without `pdf` a client can still fetch it.
/// `base_url` is the hub's public origin (`https://host`); the PDF URL and the DICOMweb
/// endpoint of the ImagingStudy are built on it.
pub fn diagnostic_report(p: &Printout, pdf: Option<&[u8]>, base_url: &str) -> Value {
    let pl = p.payload;
    let exam = &pl.exam;
    let kind = ExamKind::of(exam);
    let origin = origin(base_url);
    let title = report_title(exam);
    let id = resource_id(&pl.report_id, pl.version);
    let issued = iso8601_cst(pl.signer.signed_at_ms);
    let person = exam
        .patient_name
        .as_deref()
        .map(PersonName::parse)
        .unwrap_or_default();
    let patient_display = person.display().unwrap_or_default();

    let mut contained = Vec::new();

    let mut patient = Map::new();
    patient.insert("resourceType".into(), json!("Patient"));
    patient.insert("id".into(), json!("patient"));
    if let Some(pid) = exam.patient_id.as_deref().filter(|s| !s.trim().is_empty()) {
        // Patient IDs are only unique within a township: the site is part of the system.
        patient.insert(
            "identifier".into(),
            json!([{
                "system": format!("urn:county-hub:site:{}:patient-id", encode_component(&exam.site)),
                "value": pid,
            }]),
        );
    }
    let names = person.to_fhir();
    if !names.is_empty() {
        patient.insert("name".into(), Value::Array(names));
    }
    contained.push(Value::Object(patient));

    contained.push(json!({
        "resourceType": "Organization",
        "id": "reading-centre",
        "name": p.hospital_name,
    }));

    let mut interpreters = Vec::new();
    if let Some(junior) = &pl.preliminary_by {
        contained.push(practitioner("preliminary-reader", junior));
        interpreters.push(json!({
            "reference": "#preliminary-reader",
            "display": junior.display_name,
        }));
    }
    contained.push(practitioner("signer", &pl.signer));
    interpreters.push(json!({ "reference": "#signer", "display": pl.signer.display_name }));

    let modality = exam
        .modality
        .as_deref()
        .map(|m| m.trim().to_uppercase())
        .filter(|m| !m.is_empty());
    let mut imaging_study = None;
    if kind == ExamKind::Imaging {
        contained.push(json!({
            "resourceType": "Endpoint",
            "id": "dicomweb",
            "status": "active",
            "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "dicom-wado-rs",
            },
            "payloadType": [{ "text": "DICOM" }],
            "payloadMimeType": ["application/dicom"],
            "address": format!("{origin}/dicomweb"),
        }));
        let mut study = Map::new();
        study.insert("resourceType".into(), json!("ImagingStudy"));
        study.insert("id".into(), json!("study"));
        let mut identifiers: Vec<Value> = exam
            .study_uid
            .iter()
            .map(|uid| json!({ "system": "urn:dicom:uid", "value": format!("urn:oid:{uid}") }))
            .collect();
        if let Some(acc) = exam.accession_number.as_deref().filter(|s| !s.is_empty()) {
            identifiers.push(json!({
                "type": { "coding": [{ "system": V2_0203, "code": "ACSN" }] },
                "value": acc,
            }));
        }
        study.insert("identifier".into(), Value::Array(identifiers));
        study.insert("status".into(), json!("available"));
        if let Some((code, display)) = modality
            .as_deref()
            .and_then(|m| dcm_modality(m).map(|d| (m, d)))
        {
            study.insert(
                "modality".into(),
                json!([{ "system": DCM, "code": code, "display": display }]),
            );
        }
        study.insert("subject".into(), json!({ "reference": "#patient" }));
        study.insert("endpoint".into(), json!([{ "reference": "#dicomweb" }]));
        contained.push(Value::Object(study));
        imaging_study = Some(json!([{ "reference": "#study" }]));
    }

    let (category, code) = match kind {
        ExamKind::Imaging => (
            Some(("RAD", "Radiology")),
            Some(("18748-4", "Diagnostic imaging study")),
        ),
        ExamKind::Ecg => (
            Some(("EC", "Electrocardiac (e.g., EKG, EEC, Holter)")),
            Some(("11524-6", "EKG study")),
        ),
        ExamKind::Lab => (
            Some(("LAB", "Laboratory")),
            Some(("11502-2", "Laboratory report")),
        ),
        ExamKind::Other => (None, None),
    };

    let mut extensions = Vec::new();
    if pl.critical {
        extensions.push(json!({ "url": EXT_CRITICAL, "valueBoolean": true }));
    }
    if let Some(reason) = pl.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        extensions.push(json!({ "url": EXT_AMENDMENT_REASON, "valueString": reason }));
    }
    if let Some(prev) = &pl.supersedes {
        extensions.push(json!({
            "url": EXT_REPLACES,
            "valueReference": {
                "reference": format!("DiagnosticReport/{}", resource_id(&pl.report_id, prev.version)),
            },
        }));
    }
    let mut signature = vec![
        json!({ "url": "keyId", "valueString": p.signed.key_id }),
        json!({ "url": "payloadSha256", "valueString": payload_sha256(&p.signed.payload) }),
        json!({ "url": "verified", "valueBoolean": p.verification.is_valid() }),
    ];
    if let VerificationState::Invalid { reason } = p.verification {
        signature.push(json!({ "url": "failure", "valueString": reason }));
    }
    extensions.push(json!({ "url": EXT_SIGNATURE, "extension": signature }));

    let mut report = Map::new();
    report.insert("resourceType".into(), json!("DiagnosticReport"));
    report.insert("id".into(), json!(id));
    report.insert(
        "meta".into(),
        json!({ "versionId": pl.version.to_string(), "lastUpdated": issued }),
    );
    report.insert("language".into(), json!("zh-CN"));
    report.insert(
        "text".into(),
        json!({ "status": "generated", "div": narrative(p, &title, &patient_display) }),
    );
    report.insert("contained".into(), Value::Array(contained));
    report.insert("extension".into(), Value::Array(extensions));
    let mut identifiers = vec![json!({ "system": REPORT_ID_SYSTEM, "value": pl.report_id })];
    if let Some(acc) = exam.accession_number.as_deref().filter(|s| !s.is_empty()) {
        identifiers.push(json!({
            "type": { "coding": [{ "system": V2_0203, "code": "ACSN" }] },
            "value": acc,
        }));
    }
    report.insert("identifier".into(), Value::Array(identifiers));
    report.insert(
        "status".into(),
        json!(match pl.status {
            ReportStatus::Preliminary => "preliminary",
            ReportStatus::Final => "final",
            ReportStatus::Amended => "amended",
        }),
    );
    if let Some((code, display)) = category {
        report.insert(
            "category".into(),
            json!([{ "coding": [{ "system": V2_0074, "code": code, "display": display }] }]),
        );
    }
    report.insert(
        "code".into(),
        match code {
            Some((code, display)) => json!({
                "coding": [{ "system": LOINC, "code": code, "display": display }],
                "text": title,
            }),
            None => json!({ "text": title }),
        },
    );
    let mut subject = json!({ "reference": "#patient" });
    if !patient_display.is_empty() {
        subject["display"] = json!(patient_display);
    }
    report.insert("subject".into(), subject);
    report.insert("effectiveDateTime".into(), json!(issued));
    report.insert("issued".into(), json!(issued));
    report.insert(
        "performer".into(),
        json!([{ "reference": "#reading-centre", "display": p.hospital_name }]),
    );
    report.insert("resultsInterpreter".into(), Value::Array(interpreters));
    if let Some(study) = imaging_study {
        report.insert("imagingStudy".into(), study);
    }
    if let Some(conclusion) = conclusion_of(pl) {
        report.insert("conclusion".into(), json!(conclusion));
    }

    let mut form = Map::new();
    form.insert("contentType".into(), json!("application/pdf"));
    form.insert("language".into(), json!("zh-CN"));
    if let Some(pdf) = pdf {
        form.insert("data".into(), json!(STANDARD.encode(pdf)));
        form.insert("size".into(), json!(pdf.len()));
    }
    form.insert(
        "url".into(),
        json!(format!(
            "{origin}/api/reports/{}/versions/{}/pdf",
            encode_component(&pl.report_id),
            pl.version
        )),
    );
    form.insert(
        "title".into(),
        json!(format!("{title}（{} 第 {} 版）", pl.report_id, pl.version)),
    );
    form.insert("creation".into(), json!(issued));
    report.insert("presentedForm".into(), json!([Value::Object(form)]));

    Value::Object(report)
}

/// Add a lab order's results to a DiagnosticReport as contained Observations, referenced
/// from `result` (FHIR R4 Observation: code with LOINC when known, value, unit,
/// reference range, interpretation from the HL7 v2 abnormal flags, status from OBX-11).
pub fn add_lab_observations(report: &mut Value, results: &[storage::lab::Observation]) {
    let patient = report.get("subject").cloned();
    let mut contained = report
        .get("contained")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut refs = Vec::new();
    for (n, o) in results.iter().enumerate() {
        let id = format!("obs{}", n + 1);
        let mut coding = vec![
            json!({ "system": "urn:county-hub:lab-code", "code": o.code, "display": o.code_text }),
        ];
        if let Some(loinc) = &o.loinc {
            coding.insert(
                0,
                json!({ "system": "http://loinc.org", "code": loinc, "display": o.code_text }),
            );
        }
        let status = match o.status.as_deref() {
            Some("F") => "final",
            Some("C") => "corrected",
            Some("P") | Some("R") | Some("S") => "preliminary",
            Some("X") => "cancelled",
            Some("W") => "entered-in-error",
            _ => "unknown",
        };
        let mut obs = json!({
            "resourceType": "Observation",
            "id": id,
            "status": status,
            "category": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory" }] }],
            "code": { "coding": coding, "text": o.code_text.clone().unwrap_or_else(|| o.code.clone()) },
        });
        if let Some(subject) = &patient {
            obs["subject"] = subject.clone();
        }
        match (o.value_num, o.value_type.as_str()) {
            (Some(v), "NM" | "SN") => {
                let mut q = json!({ "value": v });
                if let Some(u) = &o.units {
                    q["unit"] = json!(u);
                }
                obs["valueQuantity"] = q;
            }
            _ => obs["valueString"] = json!(o.value_text),
        }
        if let Some(range) = o.reference_range.as_deref().filter(|r| !r.is_empty()) {
            obs["referenceRange"] = json!([{ "text": range }]);
        }
        let interpretation: Vec<Value> = o
            .flags
            .iter()
            .filter(|f| matches!(f.as_str(), "H" | "L" | "HH" | "LL" | "A" | "AA" | "N"))
            .map(|f| {
                json!({ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": f }] })
            })
            .collect();
        if !interpretation.is_empty() {
            obs["interpretation"] = Value::Array(interpretation);
        }
        if let Some(at) = o.observed_at {
            obs["effectiveDateTime"] = json!(crate::printout::iso8601_cst(at));
        }
        contained.push(obs);
        refs.push(json!({ "reference": format!("#{id}") }));
    }
    if !refs.is_empty() {
        report["contained"] = Value::Array(contained);
        report["result"] = Value::Array(refs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printout::fixtures::*;
    use crate::printout::{render_pdf, ReportFont};
    use formats::report::{ReportPayload, SignedReport};
    use std::process::Command;

    /// The project's FHIR check (`tests/py/fhir_check.py`): the `fhir.resources` models
    /// plus value sets, XHTML narrative, local references and the PDF attachment.
    const VALIDATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/fhir_check.py");

    fn validate(resource: &Value) {
        let dir = tempfile::tempdir().expect("tempdir");
        let json_path = dir.path().join("report.json");
        std::fs::write(
            &json_path,
            serde_json::to_vec_pretty(resource).expect("json"),
        )
        .expect("write json");
        let out = Command::new("python3")
            .arg(VALIDATE)
            .arg(&json_path)
            .output()
            .expect("python3 with fhir.resources (pip install fhir.resources)");
        assert!(
            out.status.success(),
            "FHIR validation failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            serde_json::to_string_pretty(resource).unwrap_or_default()
        );
    }

    fn export(
        payload: &ReportPayload,
        signed: &SignedReport,
        state: &VerificationState,
        with_pdf: bool,
    ) -> Value {
        let labels = labels();
        let history = vec!["v1 终审 王医生 2026-11-23 10:02".to_string()];
        let p = Printout {
            payload,
            signed,
            verification: state,
            hospital_name: "县人民医院 区域诊断中心",
            site_name: "青石镇卫生院",
            field_labels: &labels,
            history: &history,
            tracing: None,
        };
        let pdf = with_pdf.then(|| {
            let font = ReportFont::load(None).expect("font");
            render_pdf(&p, &font).expect("pdf")
        });
        diagnostic_report(&p, pdf.as_deref(), "https://hub.county.example/dicomweb/")
    }

    fn contained<'v>(r: &'v Value, id: &str) -> &'v Value {
        r["contained"]
            .as_array()
            .and_then(|c| c.iter().find(|x| x["id"] == id))
            .unwrap_or_else(|| panic!("no contained {id}"))
    }

    fn valid(p: &ReportPayload) -> VerificationState {
        VerificationState::Valid {
            key_id: p.key_id.clone(),
        }
    }

    #[test]
    fn imaging_report() {
        let p = payload("imaging", Some("CT"));
        let s = signed(&p);
        let r = export(&p, &s, &valid(&p), true);
        validate(&r);

        assert_eq!(r["resourceType"], "DiagnosticReport");
        assert_eq!(r["id"], "r-2026-0042-v1");
        assert_eq!(r["meta"]["versionId"], "1");
        assert_eq!(r["status"], "final");
        assert_eq!(
            r["identifier"][0],
            json!({"system": "urn:county-hub:report", "value": "r-2026-0042"})
        );
        assert_eq!(r["identifier"][1]["value"], "ACC20261123");
        assert_eq!(r["category"][0]["coding"][0]["code"], "RAD");
        assert_eq!(r["code"]["coding"][0]["system"], "http://loinc.org");
        assert_eq!(r["code"]["coding"][0]["code"], "18748-4");
        assert_eq!(r["issued"], "2026-11-23T10:02:00+08:00");
        assert_eq!(r["effectiveDateTime"], "2026-11-23T10:02:00+08:00");
        assert_eq!(r["conclusion"], "胸部 CT 平扫未见明显异常。");
        assert_eq!(
            r["subject"],
            json!({"reference": "#patient", "display": "张三"})
        );

        let patient = contained(&r, "patient");
        assert_eq!(
            patient["identifier"][0],
            json!({"system": "urn:county-hub:site:township-a:patient-id", "value": "PID0001"})
        );
        assert_eq!(patient["name"][0]["text"], "张三");
        assert_eq!(patient["name"][0]["family"], "张");
        assert_eq!(patient["name"][0]["given"], json!(["三"]));
        assert_eq!(patient["name"][0]["extension"][0]["valueCode"], "IDE");
        assert_eq!(patient["name"][1]["text"], "Zhang San");
        assert_eq!(patient["name"][1]["family"], "Zhang");
        assert_eq!(patient["name"][1]["extension"][0]["valueCode"], "ABC");

        assert_eq!(r["imagingStudy"], json!([{"reference": "#study"}]));
        let study = contained(&r, "study");
        assert_eq!(
            study["identifier"][0],
            json!({"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.8.498.1"})
        );
        assert_eq!(study["status"], "available");
        assert_eq!(study["subject"]["reference"], "#patient");
        assert_eq!(
            study["modality"][0],
            json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT", "display": "Computed Tomography"})
        );
        assert_eq!(
            contained(&r, "dicomweb")["address"],
            "https://hub.county.example/dicomweb"
        );

        // Junior then senior, each a contained Practitioner named by display name and
        // identified by user name.
        assert_eq!(
            r["resultsInterpreter"][0]["reference"],
            "#preliminary-reader"
        );
        assert_eq!(r["resultsInterpreter"][1]["reference"], "#signer");
        let signer = contained(&r, "signer");
        assert_eq!(signer["name"][0]["text"], "王医生");
        assert_eq!(
            signer["identifier"][0],
            json!({"system": "urn:county-hub:user", "value": "wang"})
        );

        let form = &r["presentedForm"][0];
        assert_eq!(form["contentType"], "application/pdf");
        assert_eq!(form["language"], "zh-CN");
        assert!(form["title"]
            .as_str()
            .is_some_and(|t| t.contains("CT 检查报告")));
        assert_eq!(
            form["url"],
            "https://hub.county.example/api/reports/r-2026-0042/versions/1/pdf"
        );
        let pdf = STANDARD
            .decode(form["data"].as_str().expect("data"))
            .expect("base64");
        assert!(pdf.starts_with(b"%PDF-"));

        let div = r["text"]["div"].as_str().expect("div");
        assert!(div.starts_with("<div xmlns=\"http://www.w3.org/1999/xhtml\">"));
        assert!(div.contains("双肺纹理清晰，未见明显实质性病变。"));
        assert!(div.contains("电子签名验证通过"));
        let sig = r["extension"]
            .as_array()
            .and_then(|e| e.iter().find(|x| x["url"] == EXT_SIGNATURE))
            .expect("signature extension");
        assert_eq!(
            sig["extension"][2],
            json!({"url": "verified", "valueBoolean": true})
        );
    }

    #[test]
    fn ecg_report_has_no_imaging_study() {
        let mut p = payload("ecg", Some("ECG"));
        p.preliminary_by = None;
        p.content = [
            (
                "findings".to_string(),
                "窦性心律，心率 72 次/分。\nPR 间期 0.16 s，QRS 时限 0.08 s。".to_string(),
            ),
            ("conclusion".to_string(), "正常心电图".to_string()),
        ]
        .into();
        p.exam.study_uid = Some("1.2.3.4".into());
        let s = signed(&p);
        let r = export(&p, &s, &valid(&p), false);
        validate(&r);
        assert_eq!(
            r["category"][0]["coding"][0],
            json!({
                "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                "code": "EC",
                "display": "Electrocardiac (e.g., EKG, EEC, Holter)"
            })
        );
        assert_eq!(r["code"]["coding"][0]["code"], "11524-6");
        assert_eq!(r["code"]["coding"][0]["display"], "EKG study");
        assert!(r.get("imagingStudy").is_none());
        assert!(r["contained"]
            .as_array()
            .is_some_and(|c| c.iter().all(|x| x["resourceType"] != "ImagingStudy")));
        assert_eq!(r["conclusion"], "正常心电图");
        assert_eq!(r["resultsInterpreter"].as_array().map(Vec::len), Some(1));
        // No PDF bytes given: the attachment still says where to fetch it.
        assert!(r["presentedForm"][0].get("data").is_none());
        assert!(r["presentedForm"][0]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/versions/1/pdf")));
        let div = r["text"]["div"].as_str().expect("div");
        assert!(
            div.contains("窦性心律，心率 72 次/分。<br/>PR 间期"),
            "{div}"
        );
    }

    #[test]
    fn amended_lab_report_with_markup_in_text() {
        let v1 = payload("lab", None);
        let s1 = signed(&v1);
        let mut p = amended(v1, &s1);
        p.exam.patient_name = Some("Li^Si".into());
        p.exam.site = "青石镇 卫生院".into();
        p.content.insert(
            "findings".into(),
            "血钾 6.8 mmol/L (参考 3.5-5.5) <危急> & \"复查\"".into(),
        );
        let s = signed(&p);
        let state = VerificationState::Invalid {
            reason: "签名密钥 x 不是可信密钥".into(),
        };
        let r = export(&p, &s, &state, true);
        validate(&r);
        assert_eq!(r["id"], "r-2026-0042-v2");
        assert_eq!(r["meta"]["versionId"], "2");
        assert_eq!(r["status"], "amended");
        assert_eq!(r["category"][0]["coding"][0]["code"], "LAB");
        assert_eq!(r["code"]["coding"][0]["code"], "11502-2");
        assert!(r.get("imagingStudy").is_none());
        let ext = |url: &str| {
            r["extension"]
                .as_array()
                .and_then(|e| e.iter().find(|x| x["url"] == url))
                .cloned()
                .unwrap_or_else(|| panic!("no extension {url}"))
        };
        assert_eq!(ext(EXT_CRITICAL)["valueBoolean"], true);
        assert!(ext(EXT_AMENDMENT_REASON)["valueString"]
            .as_str()
            .is_some_and(|s| s.starts_with("补充右肺下叶结节描述")));
        assert_eq!(
            ext(EXT_REPLACES)["valueReference"]["reference"],
            "DiagnosticReport/r-2026-0042-v1"
        );
        assert_eq!(ext(EXT_SIGNATURE)["extension"][2]["valueBoolean"], false);
        let patient = contained(&r, "patient");
        assert_eq!(
            patient["identifier"][0]["system"],
            "urn:county-hub:site:%E9%9D%92%E7%9F%B3%E9%95%87%20%E5%8D%AB%E7%94%9F%E9%99%A2:patient-id"
        );
        assert_eq!(
            patient["name"],
            json!([{"use": "official", "text": "Li Si", "family": "Li", "given": ["Si"]}])
        );
        let div = r["text"]["div"].as_str().expect("div");
        assert!(div.contains("&lt;危急&gt; &amp; &quot;复查&quot;"), "{div}");
        assert!(
            div.contains("签名验证失败：签名密钥 x 不是可信密钥"),
            "{div}"
        );
        assert!(div.contains("危急值"));
    }

    #[test]
    fn person_names() {
        let n = PersonName::parse("Zhang^San=张^三=zhang^san");
        assert_eq!(n.display().as_deref(), Some("张三"));
        assert_eq!(n.phonetic.map(|g| g.family), Some("zhang".to_string()));
        assert_eq!(
            PersonName::parse("王^小明").display().as_deref(),
            Some("王小明")
        );
        assert_eq!(PersonName::parse("").display(), None);
        assert_eq!(
            PersonName::parse("=欧阳^娜娜").display().as_deref(),
            Some("欧阳娜娜")
        );
        assert_eq!(
            PersonName::parse("Smith^John^Q^Dr").display().as_deref(),
            Some("Dr Smith John Q")
        );
        assert_eq!(resource_id("a/b c", 3), "a-b-c-v3");
        assert_eq!(resource_id(&"x".repeat(100), 12).len(), 64);
        assert!(resource_id(&"x".repeat(100), 12).ends_with("-v12"));
        assert_eq!(origin("https://h/"), "https://h");
        assert_eq!(origin("https://h/dicomweb"), "https://h");
    }
}
