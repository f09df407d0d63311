//! HL7 v3 annotated ECG (aECG, `PORT_MT020001`) XML.
//!
//! The whole document is parsed in memory with roxmltree (DTDs refused, node count
//! capped), so input is capped at [`MAX_AECG_BYTES`]: a 10 s, 12-lead aECG at 1 kHz is
//! about 0.5 MB. Elements are matched by local name, because files in the wild use
//! `urn:hl7-org:v3`, older namespaces or none.

use std::borrow::Cow;

use roxmltree::{Document, Node, ParsingOptions};

use super::leads::normalize_label;
use super::time::{parse_dt_ms, DEFAULT_OFFSET_MINUTES};
use super::{Ecg, EcgError, Measurements, SourceFormat};

/// Largest aECG document accepted (64 MiB).
pub const MAX_AECG_BYTES: usize = 64 * 1024 * 1024;
/// Elements plus attributes plus text nodes accepted; the 12-lead test file has ~2,000.
const MAX_NODES: u32 = 4_000_000;
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Read an HL7 aECG document: the rhythm series (not the representative beat) for the
/// leads, device measurements and interpretation statements from annotations anywhere
/// in the document, patient and device from the header.
pub fn read_aecg(bytes: &[u8]) -> Result<Ecg, EcgError> {
    if bytes.len() > MAX_AECG_BYTES {
        return Err(EcgError::TooLarge {
            format: SourceFormat::HL7aECG,
            size: bytes.len(),
            limit: MAX_AECG_BYTES,
        });
    }
    let text = decode_text(bytes)?;
    let options = ParsingOptions {
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(&text, options)
        .map_err(|e| EcgError::Aecg(format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "AnnotatedECG" {
        return Err(EcgError::Aecg(format!(
            "root element is <{}>, not <AnnotatedECG>",
            root.tag_name().name()
        )));
    }
    let mut ecg = Ecg::empty(SourceFormat::HL7aECG);
    let all_series = || children(root, "component").flat_map(|c| children(c, "series"));
    let series = all_series()
        .find(|s| code_of(*s) == Some("RHYTHM"))
        .or_else(|| all_series().next())
        .ok_or_else(|| EcgError::Aecg("no <series> under <AnnotatedECG><component>".into()))?;
    read_waveforms(series, &mut ecg)?;

    let time = child(root, "effectiveTime")
        .or_else(|| child(series, "effectiveTime"))
        .and_then(|t| child(t, "low").or_else(|| child(t, "center")))
        .and_then(|v| v.attribute("value"))
        .map(str::to_string);
    if let Some(time) = time {
        ecg.acquired_at_ms = parse_dt_ms(&time, DEFAULT_OFFSET_MINUTES);
        ecg.acquired_at = Some(time);
    }
    read_patient(root, &mut ecg);
    ecg.device = read_device(series);
    read_filters(series, &mut ecg);
    read_annotations(root, &mut ecg.device_measurements, &mut ecg.statements);
    Ok(ecg.finish())
}

/// Whether the bytes look like XML: an optional BOM, whitespace, then `<`.
pub(crate) fn looks_like_xml(bytes: &[u8]) -> bool {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return true;
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'<')
}

/// The document as UTF-8: UTF-16 by BOM, another declared encoding by its label.
fn decode_text(bytes: &[u8]) -> Result<Cow<'_, str>, EcgError> {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        if had_errors {
            return Err(EcgError::Aecg(format!("invalid {} text", encoding.name())));
        }
        return Ok(text);
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]);
    let declared = head
        .strip_prefix("<?xml")
        .and_then(|h| h.split("?>").next())
        .and_then(|decl| decl.split_once("encoding"))
        .and_then(|(_, rest)| rest.split(['"', '\'']).nth(1))
        .and_then(|label| encoding_rs::Encoding::for_label(label.trim().as_bytes()));
    match declared {
        Some(enc) if enc != encoding_rs::UTF_8 => {
            let (text, had_errors) = enc.decode_without_bom_handling(bytes);
            if had_errors {
                return Err(EcgError::Aecg(format!("invalid {} text", enc.name())));
            }
            Ok(text)
        }
        _ => std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|e| EcgError::Aecg(format!("not UTF-8 at byte {}", e.valid_up_to()))),
    }
}

/// The leads of the first sequence set of the rhythm series, plus leads of later sets
/// with the same timing and length (some writers split leads over sets).
fn read_waveforms(series: Node, ecg: &mut Ecg) -> Result<(), EcgError> {
    let sets: Vec<Node> = children(series, "component")
        .flat_map(|c| children(c, "sequenceSet"))
        .collect();
    if sets.is_empty() {
        return Err(EcgError::Aecg("rhythm series has no <sequenceSet>".into()));
    }
    for (i, set) in sets.iter().enumerate() {
        let (interval_s, head) = read_timing(*set)?;
        let rate = snap(1.0 / interval_s);
        let mut expected = ecg.leads.first().map(|l| l.samples_uv.len());
        if i > 0 && rate != ecg.sample_rate_hz {
            continue;
        }
        ecg.sample_rate_hz = rate;
        if i == 0 {
            if let Some(head) = head {
                ecg.acquired_at_ms = parse_dt_ms(&head, DEFAULT_OFFSET_MINUTES);
                ecg.acquired_at = Some(head);
            }
        }
        for seq in children(*set, "component").flat_map(|c| children(c, "sequence")) {
            let Some(code) = code_of(seq).filter(|c| !c.trim().is_empty()) else {
                return Err(EcgError::Aecg(format!(
                    "sequence set {} has a sequence without a code",
                    i + 1
                )));
            };
            if code.starts_with("TIME_") {
                continue;
            }
            let label = normalize_label(code);
            if ecg.leads.iter().any(|l| l.label == label) {
                continue;
            }
            let samples = read_digits(seq, code)?;
            match expected {
                Some(n) if n != samples.len() && i == 0 => {
                    return Err(EcgError::Aecg(format!(
                        "sequence for {code} has {} digits, expected {n}",
                        samples.len()
                    )))
                }
                Some(n) if n != samples.len() => continue,
                _ => expected = Some(samples.len()),
            }
            ecg.leads.push(super::Lead {
                label,
                samples_uv: samples,
                derived: false,
            });
        }
    }
    if ecg.leads.is_empty() {
        return Err(EcgError::Aecg("rhythm series has no lead sequences".into()));
    }
    Ok(())
}

/// Sample interval in seconds and, for absolute time, the first sample's timestamp.
fn read_timing(set: Node) -> Result<(f64, Option<String>), EcgError> {
    let time = children(set, "component")
        .flat_map(|c| children(c, "sequence"))
        .find(|s| code_of(*s).is_some_and(|c| c.starts_with("TIME_")))
        .ok_or_else(|| {
            EcgError::Aecg("sequence set without TIME_ABSOLUTE or TIME_RELATIVE sequence".into())
        })?;
    let value = child(time, "value")
        .ok_or_else(|| EcgError::Aecg("time sequence without <value>".into()))?;
    let increment = child(value, "increment")
        .ok_or_else(|| EcgError::Aecg("time sequence without <increment>".into()))?;
    let amount = number_attr(increment, "value")
        .ok_or_else(|| EcgError::Aecg("time increment without a numeric value".into()))?;
    let unit = increment.attribute("unit").unwrap_or("s");
    let seconds = match unit {
        "s" => amount,
        "ms" => amount / 1e3,
        "us" | "µs" => amount / 1e6,
        other => {
            return Err(EcgError::Aecg(format!(
                "time increment unit \"{other}\" (s, ms or us expected)"
            )))
        }
    };
    // 10 Hz to 1 MHz: anything else is not an ECG sampling rate.
    if !(1e-6..=0.1).contains(&seconds) {
        return Err(EcgError::Aecg(format!(
            "time increment of {seconds} s is not an ECG sample interval"
        )));
    }
    let head = (code_of(time) == Some("TIME_ABSOLUTE"))
        .then(|| child(value, "head").and_then(|h| h.attribute("value")))
        .flatten()
        .map(str::to_string);
    Ok((seconds, head))
}

/// `origin + scale × digit` in µV for one `SLIST_PQ` sequence.
fn read_digits(seq: Node, code: &str) -> Result<Vec<f32>, EcgError> {
    let value = child(seq, "value")
        .ok_or_else(|| EcgError::Aecg(format!("sequence for {code} has no <value>")))?;
    let quantity = |name: &'static str, default: f64| -> Result<f64, EcgError> {
        let Some(node) = child(value, name) else {
            return Ok(default);
        };
        let amount = number_attr(node, "value").ok_or_else(|| {
            EcgError::Aecg(format!("sequence for {code}: {name} has no numeric value"))
        })?;
        let unit = node.attribute("unit").unwrap_or("uV");
        let factor = match unit {
            "nV" => 1e-3,
            "uV" | "µV" => 1.0,
            "mV" => 1e3,
            "V" => 1e6,
            other => {
                return Err(EcgError::Aecg(format!(
                    "sequence for {code}: {name} unit \"{other}\" is not a voltage"
                )))
            }
        };
        Ok(amount * factor)
    };
    let origin = quantity("origin", 0.0)?;
    let scale = quantity("scale", 1.0)?;
    let digits = child(value, "digits")
        .ok_or_else(|| EcgError::Aecg(format!("sequence for {code} has no <digits>")))?
        .text()
        .unwrap_or_default();
    digits
        .split_ascii_whitespace()
        .enumerate()
        .map(|(i, d)| {
            d.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| (origin + scale * v) as f32)
                .ok_or_else(|| {
                    EcgError::Aecg(format!(
                        "sequence for {code}: digit {} (\"{}\") is not a number",
                        i + 1,
                        d.chars().take(20).collect::<String>()
                    ))
                })
        })
        .collect()
}

/// Patient identification from the `trialSubject` elements. A document may carry
/// several (`subject` repeated, one with the identifier and one with the demographics,
/// or an identifier given first by its assigning authority's OID only): the patient
/// ID is the first `id` with an `extension`, the OID alone only when there is nothing
/// else, and the demographics come from the first subject that has them.
fn read_patient(root: Node, ecg: &mut Ecg) {
    let subjects: Vec<Node> = root
        .descendants()
        .filter(|n| n.has_tag_name_local("trialSubject"))
        .collect();
    let ids = || subjects.iter().flat_map(|s| children(*s, "id"));
    ecg.patient.id = ids()
        .find_map(|id| id.attribute("extension").and_then(non_empty))
        .or_else(|| ids().find_map(|id| id.attribute("root").and_then(non_empty)));
    let Some(person) = subjects
        .iter()
        .find_map(|s| child(*s, "subjectDemographicPerson"))
    else {
        return;
    };
    ecg.patient.name = child(person, "name").and_then(|name| {
        let part = |p: &'static str| child(name, p).and_then(|n| n.text()).and_then(non_empty);
        match (part("family"), part("given")) {
            (Some(f), Some(g)) => Some(format!("{f}^{g}")),
            (Some(f), None) => Some(f),
            (None, Some(g)) => Some(format!("^{g}")),
            (None, None) => name.text().and_then(non_empty),
        }
    });
    ecg.patient.birth_date = child(person, "birthTime")
        .and_then(|b| b.attribute("value"))
        .and_then(|v| v.get(..8))
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string);
    ecg.patient.sex = child(person, "administrativeGenderCode")
        .and_then(|g| g.attribute("code"))
        .and_then(|c| match c {
            "M" | "F" => Some(c.to_string()),
            "UN" | "U" => Some("U".to_string()),
            _ => None,
        });
}

fn read_device(series: Node) -> Option<String> {
    let author = child(series, "author").and_then(|a| child(a, "seriesAuthor"))?;
    let model = child(author, "manufacturedSeriesDevice")
        .and_then(|d| child(d, "manufacturerModelName"))
        .and_then(|m| m.text())
        .and_then(non_empty);
    let maker = child(author, "manufacturerOrganization")
        .and_then(|o| child(o, "name"))
        .and_then(|n| n.text())
        .and_then(non_empty);
    match (maker, model) {
        (Some(a), Some(b)) => Some(format!("{a} {b}")),
        (a, b) => a.or(b),
    }
}

/// `controlVariable`s coded `MDC_ECG_CTL_VBL_ATTR_FILTER_{LOW_PASS,HIGH_PASS,NOTCH}`
/// carry the cut-off as a nested value in Hz.
fn read_filters(series: Node, ecg: &mut Ecg) {
    for cv in series
        .descendants()
        .filter(|n| n.has_tag_name_local("controlVariable"))
    {
        let Some(code) = code_of(cv) else { continue };
        let slot = if code.contains("LOW_PASS") {
            &mut ecg.filters.lowpass_hz
        } else if code.contains("HIGH_PASS") {
            &mut ecg.filters.highpass_hz
        } else if code.contains("NOTCH") {
            &mut ecg.filters.notch_hz
        } else {
            continue;
        };
        let hz = cv
            .descendants()
            .filter(|n| n.has_tag_name_local("value"))
            .find(|v| v.attribute("unit") == Some("Hz"))
            .and_then(|v| number_attr(v, "value"));
        if slot.is_none() {
            *slot = hz;
        }
    }
}

/// Device measurements and statements from `annotation` elements, first one wins.
fn read_annotations(root: Node, m: &mut Measurements, statements: &mut Vec<String>) {
    for annotation in root
        .descendants()
        .filter(|n| n.has_tag_name_local("annotation"))
    {
        let Some(code) = code_of(annotation) else {
            continue;
        };
        let Some(value) = child(annotation, "value") else {
            continue;
        };
        let upper = code.to_ascii_uppercase();
        let upper = upper.strip_suffix("_GL").unwrap_or(&upper);
        if upper.contains("INTERPRETATION") || upper.contains("STATEMENT") {
            let text = match xsi_type(value) {
                Some("CD" | "CE") => value.attribute("displayName"),
                _ => value.text(),
            };
            if let Some(text) = text.and_then(non_empty) {
                statements.push(text);
            }
            continue;
        }
        let Some(amount) = number_attr(value, "value") else {
            continue;
        };
        let ms = match value.attribute("unit").unwrap_or("ms") {
            "s" => amount * 1e3,
            "us" => amount / 1e3,
            _ => amount,
        };
        let (slot, v) = match upper {
            "MDC_ECG_HEART_RATE" => (&mut m.heart_rate_bpm, amount),
            "MDC_ECG_TIME_PD_RR" => (&mut m.rr_ms, ms),
            "MDC_ECG_TIME_PD_PR" => (&mut m.pr_ms, ms),
            "MDC_ECG_TIME_PD_QRS" => (&mut m.qrs_ms, ms),
            "MDC_ECG_TIME_PD_QT" => (&mut m.qt_ms, ms),
            "MDC_ECG_TIME_PD_QTC" | "MDC_ECG_TIME_PD_QTCB" => (&mut m.qtc_ms, ms),
            "MDC_ECG_ANGLE_P_FRONT" => (&mut m.p_axis, amount),
            "MDC_ECG_ANGLE_QRS_FRONT" => (&mut m.qrs_axis, amount),
            "MDC_ECG_ANGLE_T_FRONT" => (&mut m.t_axis, amount),
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v);
        }
    }
}

/// A rate computed as 1/increment is 999.9999999999999 for 0.001 s; snap such values.
fn snap(rate: f64) -> f64 {
    let rounded = rate.round();
    if (rate - rounded).abs() < 1e-6 * rate.max(1.0) {
        rounded
    } else {
        rate
    }
}

trait LocalName {
    fn has_tag_name_local(&self, name: &str) -> bool;
}

impl LocalName for Node<'_, '_> {
    fn has_tag_name_local(&self, name: &str) -> bool {
        self.is_element() && self.tag_name().name() == name
    }
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |n| n.has_tag_name_local(name))
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
    children(node, name).next()
}

/// The `code` attribute of the element's `<code>` child.
fn code_of<'a>(node: Node<'a, '_>) -> Option<&'a str> {
    child(node, "code").and_then(|c| c.attribute("code"))
}

fn xsi_type<'a>(node: Node<'a, '_>) -> Option<&'a str> {
    node.attribute((XSI, "type"))
        .or_else(|| node.attribute("type"))
}

fn number_attr(node: Node, name: &str) -> Option<f64> {
    node.attribute(name)?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (!s.is_empty()).then_some(s)
}
