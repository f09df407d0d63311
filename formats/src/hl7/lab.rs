//! Laboratory results: what an ORU^R01 (or OUL^R22) says about a patient's orders and
//! their observations.

use serde::Serialize;

use super::message::{Field, Message, Segment};
use super::Hl7Error;

/// HL7 versions (MSH-12) accepted for laboratory results (docs/lab.md).
pub const SUPPORTED_VERSIONS: &[&str] = &["2.3", "2.3.1", "2.4", "2.5", "2.5.1"];

/// A coded element (CE, CWE, CNE): the primary triplet, the alternate one, and the LOINC
/// code when either triplet is coded in LOINC (`LN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coded {
    /// Identifier (component 1; the alternate identifier when only that is given).
    pub code: String,
    /// Text (component 2, else the alternate text).
    pub text: Option<String>,
    /// Coding system (component 3, else the alternate system).
    pub system: Option<String>,
    /// The identifier of whichever triplet's coding system is `LN`.
    pub loinc: Option<String>,
    /// Alternate identifier (component 4).
    pub alternate_code: Option<String>,
    /// Alternate text (component 5).
    pub alternate_text: Option<String>,
    /// Alternate coding system (component 6).
    pub alternate_system: Option<String>,
}

impl Coded {
    /// Read a coded element from (the first repetition of) a field; `None` when it holds
    /// neither an identifier nor a text.
    pub fn from_field(field: &Field<'_>) -> Option<Coded> {
        let part = |c: usize| field.component(c).and_then(|f| f.text());
        let (c1, t1, s1) = (part(1), part(2), part(3));
        let (c4, t4, s4) = (part(4), part(5), part(6));
        let is_loinc =
            |s: &Option<String>| s.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("LN"));
        let loinc = if is_loinc(&s1) && c1.is_some() {
            c1.clone()
        } else if is_loinc(&s4) {
            c4.clone()
        } else {
            None
        };
        let (code, text, system) = match (&c1, &t1) {
            (None, None) => (c4.clone(), t4.clone(), s4.clone()),
            _ => (c1, t1.or_else(|| t4.clone()), s1),
        };
        if code.is_none() && text.is_none() {
            return None;
        }
        Some(Coded {
            code: code.unwrap_or_default(),
            text,
            system,
            loinc,
            alternate_code: c4,
            alternate_text: t4,
            alternate_system: s4,
        })
    }
}

/// OBX-5, read according to OBX-2.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Value {
    /// NM.
    Numeric {
        /// The number.
        value: f64,
        /// As written.
        text: String,
    },
    /// SN (and an NM written with a comparator, e.g. `<0.5`): `[comparator] num1
    /// [separator num2]`, e.g. `>10`, `1:128`, `10-20`.
    Structured {
        /// `>`, `<`, `>=`, `<=`, `=`, `<>`.
        comparator: Option<String>,
        /// First number.
        first: Option<f64>,
        /// `-`, `+`, `/`, `.`, `:`.
        separator: Option<String>,
        /// Second number.
        second: Option<f64>,
        /// Readable form, e.g. `>10` or `1:128`.
        text: String,
    },
    /// ST, TX, FT (repetitions as lines).
    Text(String),
    /// CE, CWE, CNE.
    Coded(Coded),
    /// Any other value type, as text.
    Other {
        /// OBX-2.
        value_type: String,
        /// OBX-5 unescaped.
        text: String,
    },
    /// OBX-5 is empty (a pending, cancelled or deleted result).
    Empty,
}

/// One OBX.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// OBX-1.
    pub set_id: Option<String>,
    /// OBX-2, e.g. `NM` (empty only when OBX-5 is empty too).
    pub value_type: String,
    /// OBX-3.
    pub code: Coded,
    /// OBX-4.
    pub sub_id: Option<String>,
    /// OBX-5.
    pub value: Value,
    /// OBX-6 identifier (else its text), e.g. `mg/dl`.
    pub units: Option<String>,
    /// OBX-7, e.g. `3.8-11.0`.
    pub reference_range: Option<String>,
    /// OBX-8, each repetition, e.g. `H`, `LL`.
    pub abnormal_flags: Vec<String>,
    /// OBX-11: P, F, C, ...
    pub status: Option<String>,
    /// OBX-14 (HL7 TS).
    pub observed_at: Option<String>,
}

/// The patient (PID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Patient {
    /// PID-3: the ID of the first repetition that has one (else PID-2).
    pub id: String,
    /// Its assigning authority (CX-4: namespace ID, else universal ID).
    pub id_authority: Option<String>,
    /// PID-5 (first repetition) as `Family^Given` text (`Family` when no given name).
    pub name: Option<String>,
    /// PID-7.
    pub birth_date: Option<String>,
    /// PID-8.
    pub sex: Option<String>,
}

/// One order (ORC + OBR) with its observations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    /// OBR-2, else ORC-2.
    pub placer_number: Option<String>,
    /// OBR-3, else ORC-3.
    pub filler_number: Option<String>,
    /// OBR-4.
    pub test: Coded,
    /// OBR-7.
    pub specimen_time: Option<String>,
    /// OBR-8.
    pub observation_end: Option<String>,
    /// OBR-5, else the priority of OBR-27, ORC-7 or TQ1-9: S (stat), A (asap), R
    /// (routine)... upper-cased.
    pub priority: Option<String>,
    /// OBR-25.
    pub result_status: Option<String>,
    /// The OBX segments after this OBR.
    pub observations: Vec<Observation>,
}

/// What a result message says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabResults {
    /// The patient.
    pub patient: Patient,
    /// The orders, in message order.
    pub orders: Vec<Order>,
}

/// The result message structures we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// ORU^R01: unsolicited observation result.
    OruR01,
    /// OUL^R22: unsolicited specimen-oriented observation.
    OulR22,
}

impl MessageKind {
    /// Check MSH-9 and MSH-12: a result message in a version we take.
    pub fn of(msg: &Message) -> Result<MessageKind, Hl7Error> {
        let msh = msg.msh();
        if msh.message_code.is_empty() {
            return Err(Hl7Error::MissingField {
                segment: "MSH".into(),
                field: "MSH-9".into(),
                name: "message type",
            });
        }
        let kind = match (
            msh.message_code.to_ascii_uppercase().as_str(),
            msh.trigger_event.to_ascii_uppercase().as_str(),
        ) {
            ("ORU", "R01") => MessageKind::OruR01,
            ("OUL", "R22") => MessageKind::OulR22,
            _ => return Err(Hl7Error::UnsupportedMessageType(msh.message_type())),
        };
        let version = msh.version.trim();
        if version.is_empty() {
            return Err(Hl7Error::MissingField {
                segment: "MSH".into(),
                field: "MSH-12".into(),
                name: "version ID",
            });
        }
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(Hl7Error::UnsupportedVersion(version.to_string()));
        }
        Ok(kind)
    }
}

/// Placer, filler and priority from an ORC, waiting for their OBR.
#[derive(Debug, Default)]
struct OrcInfo {
    placer: Option<String>,
    filler: Option<String>,
    priority: Option<String>,
}

fn orc_info(seg: &Segment) -> OrcInfo {
    OrcInfo {
        placer: seg.component(2, 1),
        filler: seg.component(3, 1),
        // ORC-7 quantity/timing (TQ), component 6: priority.
        priority: seg.component(7, 6).map(|p| p.to_ascii_uppercase()),
    }
}

fn missing(seg: &Segment, n: usize, name: &'static str) -> Hl7Error {
    Hl7Error::MissingField {
        segment: seg.label(),
        field: format!("{}-{n}", seg.name()),
        name,
    }
}

fn invalid(seg: &Segment, n: usize, name: &'static str, reason: String) -> Hl7Error {
    Hl7Error::InvalidField {
        segment: seg.label(),
        field: format!("{}-{n}", seg.name()),
        name,
        reason,
    }
}

fn patient(seg: &Segment) -> Result<Patient, Hl7Error> {
    // CX: ID ^ check digit ^ scheme ^ assigning authority (HD: namespace & universal ID).
    let identifier = |n: usize| {
        seg.repetitions(n).into_iter().find_map(|rep| {
            let id = rep.component(1)?.text()?;
            let authority = rep.component(4).and_then(|hd| {
                hd.subcomponent(1)
                    .and_then(|f| f.text())
                    .or_else(|| hd.subcomponent(2).and_then(|f| f.text()))
            });
            Some((id, authority))
        })
    };
    let (id, id_authority) = identifier(3)
        .or_else(|| identifier(2))
        .ok_or_else(|| missing(seg, 3, "patient identifier list"))?;
    let name = seg.field(5).and_then(|f| f.first()).and_then(|xpn| {
        let family = xpn
            .component(1)
            .and_then(|c| c.subcomponent(1))
            .and_then(|f| f.text());
        let given = xpn.component(2).and_then(|f| f.text());
        match (family, given) {
            (None, None) => None,
            (Some(f), None) => Some(f),
            (f, Some(g)) => Some(format!("{}^{g}", f.unwrap_or_default())),
        }
    });
    Ok(Patient {
        id,
        id_authority,
        name,
        birth_date: seg.component(7, 1),
        sex: seg.component(8, 1),
    })
}

fn order(seg: &Segment, orc: Option<OrcInfo>) -> Result<Order, Hl7Error> {
    let orc = orc.unwrap_or_default();
    let test = seg
        .field(4)
        .and_then(|f| Coded::from_field(&f))
        .filter(|c| !c.code.is_empty())
        .ok_or_else(|| missing(seg, 4, "universal service identifier"))?;
    let priority = seg
        .text(5)
        // OBR-27 quantity/timing (TQ), component 6: priority.
        .or_else(|| seg.component(27, 6))
        .map(|p| p.to_ascii_uppercase())
        .or(orc.priority);
    Ok(Order {
        placer_number: seg.component(2, 1).or(orc.placer),
        filler_number: seg.component(3, 1).or(orc.filler),
        test,
        specimen_time: seg.component(7, 1),
        observation_end: seg.component(8, 1),
        priority,
        result_status: seg.component(25, 1),
        observations: Vec::new(),
    })
}

/// An NM as HL7 writes it: optional sign, digits, at most one decimal point. (Rust's own
/// float parsing would also take `inf`, `NaN` and exponents, which are not numbers here.)
fn parse_nm(text: &str) -> Option<f64> {
    let t = text.trim();
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let digits = unsigned.chars().filter(char::is_ascii_digit).count();
    let points = unsigned.chars().filter(|&c| c == '.').count();
    if digits == 0 || points > 1 || digits + points != unsigned.len() {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

const COMPARATORS: &[&str] = &[">=", "<=", "<>", ">", "<", "="];

fn observation(seg: &Segment) -> Result<Observation, Hl7Error> {
    let value_type = seg
        .component(2, 1)
        .map(|t| t.to_ascii_uppercase())
        .unwrap_or_default();
    let code = seg
        .field(3)
        .and_then(|f| Coded::from_field(&f))
        .filter(|c| !c.code.is_empty())
        .ok_or_else(|| missing(seg, 3, "observation identifier"))?;
    let value = match seg.field(5) {
        None => Value::Empty,
        Some(_) if value_type.is_empty() => return Err(missing(seg, 2, "value type")),
        Some(field) => read_value(seg, &value_type, &field)?,
    };
    let abnormal_flags = seg
        .repetitions(8)
        .iter()
        .filter_map(|rep| rep.component(1).and_then(|c| c.text()))
        .collect();
    Ok(Observation {
        set_id: seg.text(1),
        value_type,
        code,
        sub_id: seg.text(4),
        value,
        units: seg.component(6, 1).or_else(|| seg.component(6, 2)),
        reference_range: seg.text(7),
        abnormal_flags,
        status: seg.component(11, 1).map(|s| s.to_ascii_uppercase()),
        observed_at: seg.component(14, 1),
    })
}

fn read_value(seg: &Segment, value_type: &str, field: &Field<'_>) -> Result<Value, Hl7Error> {
    const NAME: &str = "observation value";
    let first = field.first();
    Ok(match value_type {
        "NM" => {
            let text = first.and_then(|f| f.text()).unwrap_or_default();
            match parse_nm(&text) {
                Some(value) => Value::Numeric { value, text },
                None => {
                    // Laboratory systems often send "<0.5" as NM: keep its meaning
                    // rather than refuse the whole report.
                    let comparator = COMPARATORS.iter().find(|c| text.starts_with(**c));
                    match comparator.and_then(|c| Some((c, parse_nm(&text[c.len()..])?))) {
                        Some((c, number)) => Value::Structured {
                            comparator: Some((*c).to_string()),
                            first: Some(number),
                            separator: None,
                            second: None,
                            text: text.clone(),
                        },
                        None => {
                            return Err(invalid(
                                seg,
                                5,
                                NAME,
                                format!("{text:?} is not a number (OBX-2 is NM)"),
                            ))
                        }
                    }
                }
            }
        }
        "SN" => {
            let part = |c: usize| first.and_then(|f| f.component(c)).and_then(|f| f.text());
            let number = |c: usize| -> Result<(Option<f64>, String), Hl7Error> {
                match part(c) {
                    None => Ok((None, String::new())),
                    Some(t) => match parse_nm(&t) {
                        Some(v) => Ok((Some(v), t)),
                        None => Err(invalid(
                            seg,
                            5,
                            NAME,
                            format!("{t:?} in component {c} is not a number (OBX-2 is SN)"),
                        )),
                    },
                }
            };
            let comparator = part(1);
            let (first_number, first_text) = number(2)?;
            let separator = part(3);
            let (second, second_text) = number(4)?;
            let text = format!(
                "{}{first_text}{}{second_text}",
                comparator.as_deref().unwrap_or(""),
                separator.as_deref().unwrap_or("")
            );
            Value::Structured {
                comparator,
                first: first_number,
                separator,
                second,
                text,
            }
        }
        "ST" | "TX" | "FT" => Value::Text(
            field
                .repetitions()
                .map(|rep| super::unescape(rep.raw(), &seg.separators()))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string(),
        ),
        "CE" | "CWE" | "CNE" => match first.as_ref().and_then(Coded::from_field) {
            Some(coded) => Value::Coded(coded),
            None => Value::Empty,
        },
        other => Value::Other {
            value_type: other.to_string(),
            text: super::unescape(field.raw(), &seg.separators())
                .trim()
                .to_string(),
        },
    })
}

/// The patient, orders and observations of an ORU^R01 (one or more PATIENT_RESULT groups;
/// the first patient is taken, and a second, different patient is an error) or an
/// OUL^R22 (specimen-level OBX before the first OBR of a specimen are skipped; an ORC
/// after its OBR fills what the OBR left empty). Checks MSH-9 and MSH-12 first.
pub fn lab_results(msg: &Message) -> Result<LabResults, Hl7Error> {
    let kind = MessageKind::of(msg)?;
    let oul = kind == MessageKind::OulR22;
    let mut first_patient: Option<Patient> = None;
    let mut orders: Vec<Order> = Vec::new();
    let mut current: Option<Order> = None;
    let mut pending_orc: Option<OrcInfo> = None;
    for seg in msg.segments().skip(1) {
        match seg.name() {
            "PID" => {
                let p = patient(seg)?;
                match &first_patient {
                    None => first_patient = Some(p),
                    Some(first) if first.id == p.id && first.id_authority == p.id_authority => {}
                    Some(first) => {
                        return Err(Hl7Error::SeveralPatients {
                            first: first.id.clone(),
                            other: p.id,
                        })
                    }
                }
                orders.extend(current.take());
                pending_orc = None;
            }
            "ORC" => match current.as_mut() {
                // OUL^R22 puts ORC after its OBR.
                Some(o) if oul => {
                    let info = orc_info(seg);
                    o.placer_number = o.placer_number.take().or(info.placer);
                    o.filler_number = o.filler_number.take().or(info.filler);
                    o.priority = o.priority.take().or(info.priority);
                }
                _ => {
                    orders.extend(current.take());
                    pending_orc = Some(orc_info(seg));
                }
            },
            "OBR" => {
                orders.extend(current.take());
                current = Some(order(seg, pending_orc.take())?);
            }
            "TQ1" => {
                if let Some(o) = current.as_mut() {
                    if o.priority.is_none() {
                        o.priority = seg.component(9, 1).map(|p| p.to_ascii_uppercase());
                    }
                }
            }
            "SPM" if oul => orders.extend(current.take()),
            "OBX" => match current.as_mut() {
                Some(o) => o.observations.push(observation(seg)?),
                None if oul => {}
                None => {
                    return Err(Hl7Error::Sequence(format!(
                        "{} comes before any OBR",
                        seg.label()
                    )))
                }
            },
            _ => {}
        }
    }
    orders.extend(current.take());
    let patient = first_patient.ok_or(Hl7Error::MissingSegment("PID"))?;
    if orders.is_empty() {
        return Err(Hl7Error::MissingSegment("OBR"));
    }
    Ok(LabResults { patient, orders })
}
