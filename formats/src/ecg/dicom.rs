//! DICOM 12-lead and general ECG waveform objects (PS3.3 A.34.3, A.34.4, C.10.9).

use std::io::{BufReader, Cursor};

use dicom_core::value::PrimitiveValue;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::leads::{lead_name_for_code, normalize_label};
use super::time::{parse_dt_ms, parse_zone, DEFAULT_OFFSET_MINUTES};
use super::{Ecg, EcgError, Lead, Measurements, SourceFormat};
use crate::dicom::scan_part10;

/// Largest data set (before pixel data) accepted: waveform data lives there.
const MAX_HEADER_BYTES: u64 = 64 * 1024 * 1024;
/// 12-lead ECG allows 13 channels per group, general ECG 24; leave room, refuse absurd.
const MAX_CHANNELS: usize = 64;

const TWELVE_LEAD: &str = "1.2.840.10008.5.1.4.1.1.9.1.1";
const GENERAL_ECG: &str = "1.2.840.10008.5.1.4.1.1.9.1.2";
const AMBULATORY_ECG: &str = "1.2.840.10008.5.1.4.1.1.9.1.3";

/// Read a DICOM Part 10 ECG waveform object (12-lead, general or ambulatory ECG).
///
/// Leads come from the first multiplex group with originality ORIGINAL (the rhythm
/// data, not a median beat), plus further original groups with the same rate and
/// length. Sample values become µV as `(raw × sensitivity × correction + baseline)`
/// in the channel's sensitivity units (PS3.3 C.10.9.1.4.3), then converted from
/// nV/µV/mV/V. Device measurements and statements come from the Waveform Annotation
/// Sequence.
pub fn read_dicom(bytes: &[u8]) -> Result<Ecg, EcgError> {
    // The structural scan refuses declared lengths the bytes cannot back, so that
    // dicom-object never allocates for a length the file merely claims.
    scan_part10(
        BufReader::new(Cursor::new(bytes)),
        bytes.len() as u64,
        MAX_HEADER_BYTES,
    )?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .from_reader(BufReader::new(Cursor::new(bytes)))
        .map_err(|e| EcgError::Dicom(format!("unreadable data set: {e}")))?;
    let ds: &InMemDicomObject = &obj;
    let sop_class = text(ds, tags::SOP_CLASS_UID).unwrap_or_default();
    if ![TWELVE_LEAD, GENERAL_ECG, AMBULATORY_ECG].contains(&sop_class.as_str()) {
        return Err(EcgError::Dicom(format!(
            "SOP class \"{sop_class}\" is not an ECG waveform (12-lead {TWELVE_LEAD} or general {GENERAL_ECG} expected)"
        )));
    }
    let groups = items(ds, tags::WAVEFORM_SEQUENCE);
    if groups.is_empty() {
        return Err(EcgError::Dicom("no WaveformSequence items".into()));
    }
    let is_original =
        |g: &InMemDicomObject| text(g, tags::WAVEFORM_ORIGINALITY).as_deref() == Some("ORIGINAL");
    let first = groups.iter().position(is_original).unwrap_or_default();

    let mut ecg = Ecg::empty(SourceFormat::Dicom);
    let primary = read_group(&groups[first], first + 1)?;
    ecg.sample_rate_hz = primary.rate;
    ecg.filters = primary.filters.clone();
    let length = primary.leads.first().map_or(0, |l| l.samples_uv.len());
    ecg.leads = primary.leads;
    for (i, g) in groups.iter().enumerate().skip(first + 1) {
        if !is_original(g) {
            continue;
        }
        let more = read_group(g, i + 1)?;
        let same_shape = more.rate == ecg.sample_rate_hz
            && more.leads.iter().all(|l| l.samples_uv.len() == length);
        if same_shape {
            for lead in more.leads {
                if !ecg.leads.iter().any(|l| l.label == lead.label) {
                    ecg.leads.push(lead);
                }
            }
        }
    }

    read_time(ds, &mut ecg);
    ecg.patient.id = text(ds, tags::PATIENT_ID);
    ecg.patient.name = text(ds, tags::PATIENT_NAME);
    ecg.patient.birth_date = text(ds, tags::PATIENT_BIRTH_DATE);
    ecg.patient.sex = text(ds, tags::PATIENT_SEX);
    ecg.order.accession_number = text(ds, tags::ACCESSION_NUMBER);
    ecg.order.study_uid = text(ds, tags::STUDY_INSTANCE_UID);
    let request = items(ds, tags::REQUEST_ATTRIBUTES_SEQUENCE);
    ecg.order.requested_priority = text(ds, tags::REQUESTED_PROCEDURE_PRIORITY)
        .or_else(|| {
            request
                .first()
                .and_then(|r| text(r, tags::REQUESTED_PROCEDURE_PRIORITY))
        })
        .or_else(|| text(ds, tags::SCHEDULED_PROCEDURE_STEP_PRIORITY))
        .map(|p| p.to_ascii_uppercase());
    ecg.device = match (
        text(ds, tags::MANUFACTURER),
        text(ds, tags::MANUFACTURER_MODEL_NAME),
    ) {
        (Some(a), Some(b)) => Some(format!("{a} {b}")),
        (a, b) => a.or(b),
    };
    read_annotations(ds, &mut ecg.device_measurements, &mut ecg.statements);
    Ok(ecg.finish())
}

struct Group {
    rate: f64,
    leads: Vec<Lead>,
    filters: super::Filters,
}

/// One multiplex group: channel definitions applied to the interleaved samples.
fn read_group(g: &InMemDicomObject, number: usize) -> Result<Group, EcgError> {
    let err = |problem: String| EcgError::Dicom(format!("multiplex group {number}: {problem}"));
    let channels = int(g, tags::NUMBER_OF_WAVEFORM_CHANNELS)
        .ok_or_else(|| err("no NumberOfWaveformChannels".into()))?;
    let samples = int(g, tags::NUMBER_OF_WAVEFORM_SAMPLES)
        .ok_or_else(|| err("no NumberOfWaveformSamples".into()))?;
    let rate = float(g, tags::SAMPLING_FREQUENCY)
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| err("no positive SamplingFrequency".into()))?;
    if samples == 0 {
        return Err(err("NumberOfWaveformSamples is 0".into()));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(err(format!(
            "{channels} channels (1 to {MAX_CHANNELS} accepted)"
        )));
    }
    let definitions = items(g, tags::CHANNEL_DEFINITION_SEQUENCE);
    if definitions.len() != channels {
        return Err(err(format!(
            "{channels} channels but {} channel definitions",
            definitions.len()
        )));
    }
    let bits = int(g, tags::WAVEFORM_BITS_ALLOCATED).unwrap_or(16);
    let interpretation = text(g, tags::WAVEFORM_SAMPLE_INTERPRETATION).unwrap_or_default();
    let data = g
        .element_opt(tags::WAVEFORM_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| err("no WaveformData".into()))?;
    let raw = raw_samples(data.value().primitive(), bits, &interpretation)
        .ok_or_else(|| {
            err(format!(
                "{bits}-bit \"{interpretation}\" samples are not supported (16-bit SS/US or 8-bit SB/UB)"
            ))
        })?;
    let needed = channels.saturating_mul(samples);
    if raw.len() < needed {
        return Err(err(format!(
            "{channels} channels × {samples} samples need {needed} values but WaveformData holds {}",
            raw.len()
        )));
    }
    let mut leads = Vec::with_capacity(channels);
    for (c, def) in definitions.iter().enumerate() {
        let label = channel_label(def).unwrap_or_else(|| format!("channel {}", c + 1));
        let sensitivity = float(def, tags::CHANNEL_SENSITIVITY)
            .filter(|s| s.is_finite())
            .ok_or_else(|| {
                err(format!(
                    "channel {} ({label}) has no ChannelSensitivity: amplitudes unknown",
                    c + 1
                ))
            })?;
        let units = items(def, tags::CHANNEL_SENSITIVITY_UNITS_SEQUENCE)
            .first()
            .and_then(|u| text(u, tags::CODE_VALUE))
            .unwrap_or_default();
        let to_uv = match units.as_str() {
            "nV" => 1e-3,
            "uV" | "µV" => 1.0,
            "mV" => 1e3,
            "V" => 1e6,
            other => {
                return Err(err(format!(
                "channel {} ({label}) has sensitivity units \"{other}\" (nV, uV, mV or V expected)",
                c + 1
            )))
            }
        };
        let correction = float(def, tags::CHANNEL_SENSITIVITY_CORRECTION_FACTOR)
            .filter(|f| f.is_finite())
            .unwrap_or(1.0);
        let baseline = float(def, tags::CHANNEL_BASELINE)
            .filter(|b| b.is_finite())
            .unwrap_or(0.0);
        let samples_uv = raw[..needed]
            .iter()
            .skip(c)
            .step_by(channels)
            .map(|v| ((f64::from(*v) * sensitivity * correction + baseline) * to_uv) as f32)
            .collect();
        leads.push(Lead {
            label,
            samples_uv,
            derived: false,
        });
    }
    let filters = definitions
        .first()
        .map(|d| super::Filters {
            highpass_hz: float(d, tags::FILTER_LOW_FREQUENCY).filter(|f| *f > 0.0),
            lowpass_hz: float(d, tags::FILTER_HIGH_FREQUENCY).filter(|f| *f > 0.0),
            notch_hz: float(d, tags::NOTCH_FILTER_FREQUENCY).filter(|f| *f > 0.0),
        })
        .unwrap_or_default();
    Ok(Group {
        rate,
        leads,
        filters,
    })
}

/// Interleaved samples as integers. OW data arrive as u16 words already in native
/// order; OB data (and 8-bit samples) as bytes.
fn raw_samples(
    value: Option<&PrimitiveValue>,
    bits: usize,
    interpretation: &str,
) -> Option<Vec<i32>> {
    let value = value?;
    match (bits, interpretation) {
        (16, "SS" | "US") => {
            let signed = interpretation == "SS";
            let convert = |w: u16| {
                if signed {
                    i32::from(w as i16)
                } else {
                    i32::from(w)
                }
            };
            match value {
                PrimitiveValue::U16(words) => Some(words.iter().map(|w| convert(*w)).collect()),
                PrimitiveValue::I16(words) => {
                    Some(words.iter().map(|w| convert(*w as u16)).collect())
                }
                PrimitiveValue::U8(bytes) => Some(
                    bytes
                        .chunks_exact(2)
                        .map(|b| convert(u16::from_le_bytes([b[0], b[1]])))
                        .collect(),
                ),
                _ => None,
            }
        }
        (8, "SB" | "UB") => match value {
            PrimitiveValue::U8(bytes) => Some(
                bytes
                    .iter()
                    .map(|b| {
                        if interpretation == "SB" {
                            i32::from(*b as i8)
                        } else {
                            i32::from(*b)
                        }
                    })
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}

/// Lead label from the Channel Source Sequence code: SCPECG `5.6.3-9-n`, MDC `2:n` or
/// `131072 + n` (all number leads like SCP-ECG), else the code meaning, else the
/// Channel Label.
fn channel_label(def: &InMemDicomObject) -> Option<String> {
    let source = items(def, tags::CHANNEL_SOURCE_SEQUENCE);
    let code = source.first();
    let value = code
        .and_then(|c| text(c, tags::CODE_VALUE))
        .unwrap_or_default();
    let scheme = code
        .and_then(|c| text(c, tags::CODING_SCHEME_DESIGNATOR))
        .unwrap_or_default();
    let number = match scheme.as_str() {
        "SCPECG" => value.strip_prefix("5.6.3-9-").and_then(|n| n.parse().ok()),
        "MDC" => value
            .strip_prefix("2:")
            .and_then(|n| n.parse().ok())
            .or_else(|| {
                value
                    .parse::<u32>()
                    .ok()
                    .and_then(|n| n.checked_sub(131_072))
            }),
        _ => None,
    };
    if let Some(name) = number.and_then(lead_name_for_code) {
        return Some(name.to_string());
    }
    code.and_then(|c| text(c, tags::CODE_MEANING))
        .or_else(|| text(def, tags::CHANNEL_LABEL))
        .map(|t| normalize_label(&t))
}

/// Acquisition DateTime, else Content Date + Time, else Study Date + Time; Timezone
/// Offset From UTC applies when the value has no zone.
fn read_time(ds: &InMemDicomObject, ecg: &mut Ecg) {
    let joined = |d: Tag, t: Tag| {
        text(ds, d).map(|date| format!("{date}{}", text(ds, t).unwrap_or_default()))
    };
    let value = text(ds, tags::ACQUISITION_DATE_TIME)
        .or_else(|| joined(tags::CONTENT_DATE, tags::CONTENT_TIME))
        .or_else(|| joined(tags::STUDY_DATE, tags::STUDY_TIME));
    let offset = text(ds, tags::TIMEZONE_OFFSET_FROM_UTC)
        .and_then(|z| parse_zone(&z))
        .unwrap_or(DEFAULT_OFFSET_MINUTES);
    if let Some(value) = value {
        ecg.acquired_at_ms = parse_dt_ms(&value, offset);
        ecg.acquired_at = Some(value);
    }
}

/// Numeric measurements and free-text statements of the Waveform Annotation Sequence.
/// Measurements are recognised by SCPECG code or, for other schemes, by code meaning.
fn read_annotations(ds: &InMemDicomObject, m: &mut Measurements, statements: &mut Vec<String>) {
    for item in items(ds, tags::WAVEFORM_ANNOTATION_SEQUENCE) {
        if let Some(t) = text(item, tags::UNFORMATTED_TEXT_VALUE) {
            statements.push(t);
            continue;
        }
        let Some(value) = float(item, tags::NUMERIC_VALUE).filter(|v| v.is_finite()) else {
            continue;
        };
        let concept = items(item, tags::CONCEPT_NAME_CODE_SEQUENCE);
        let Some(concept) = concept.first() else {
            continue;
        };
        let code = text(concept, tags::CODE_VALUE).unwrap_or_default();
        let meaning = text(concept, tags::CODE_MEANING)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let unit = items(item, tags::MEASUREMENT_UNITS_CODE_SEQUENCE)
            .first()
            .and_then(|u| text(u, tags::CODE_VALUE))
            .unwrap_or_default();
        let ms = if unit == "s" { value * 1000.0 } else { value };
        let (slot, v) = match (code.as_str(), meaning.as_str()) {
            ("5.10.2.1-3", _) | (_, "rr interval") => (&mut m.rr_ms, ms),
            ("5.13.5-7", _) | (_, "pr interval") => (&mut m.pr_ms, ms),
            ("5.13.5-9", _) | (_, "qrs duration") => (&mut m.qrs_ms, ms),
            ("5.13.5-11", _) | (_, "qt interval") => (&mut m.qt_ms, ms),
            ("5.10.2.5-5", _) | (_, "qtc interval") => (&mut m.qtc_ms, ms),
            ("5.10.3-11", _) | (_, "p axis") => (&mut m.p_axis, value),
            ("5.10.3-13", _) | (_, "qrs axis") => (&mut m.qrs_axis, value),
            ("5.10.3-15", _) | (_, "t axis") => (&mut m.t_axis, value),
            (_, "heart rate" | "ventricular heart rate" | "ventricular rate") => {
                (&mut m.heart_rate_bpm, value)
            }
            _ => continue,
        };
        // The first value wins: later groups repeat measurements per beat or lead.
        if slot.is_none() {
            *slot = Some(v);
        }
    }
}

fn items(ds: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    ds.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or_default()
}

/// The whole text value, trimmed of padding; `None` when absent or empty.
fn text(ds: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = ds.element_opt(tag).ok()??;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn int(ds: &InMemDicomObject, tag: Tag) -> Option<usize> {
    ds.element_opt(tag)
        .ok()??
        .to_int::<u32>()
        .ok()
        .map(|v| v as usize)
}

fn float(ds: &InMemDicomObject, tag: Tag) -> Option<f64> {
    ds.element_opt(tag).ok()??.to_float64().ok()
}
