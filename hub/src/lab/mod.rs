//! Laboratory results at the hub: HL7 ingest from the gateways, critical values, the
//! alerts that go down to the township and their escalation, and the results view of
//! the laboratory worklist.

use access::policy::{read_scope, store_site};
use access::Caller;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use formats::hl7::{self, LabResults, Value as Hl7Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::exams::Priority;
use storage::lab::{Ingest, NewObservation, NewOrder, Observation, Order};
use viewer_api::ApiError;

use crate::HubState;

pub mod alerts;

pub use alerts::escalate;

/// Mount the lab routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/ingest/hl7")
            .app_data(web::PayloadConfig::new(MAX_MESSAGE_BYTES))
            .route(web::post().to(ingest)),
    )
    .route("/api/exams/{id}/lab", web::get().to(exam_results))
    .route(
        "/api/admin/critical-alerts",
        web::get().to(alerts::critical_alerts),
    );
}

/// Largest HL7 message accepted.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Critical limits of one test, in `unit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// LOINC codes of the test (several specimen variants share limits).
    pub loinc: Vec<String>,
    /// Local codes and names that mean the same test (upper case).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Name for people.
    pub name: String,
    /// Unit the limits are in.
    pub unit: String,
    /// Critical below this.
    pub low: Option<f64>,
    /// Critical above this.
    pub high: Option<f64>,
}

/// The default critical limits for adults.
///
/// Source: the adult critical-value lists commonly adopted by Chinese hospital
/// laboratories under the 危急值报告制度 (e.g. the tables in 《临床检验危急值规范化管理专家共识》
/// and CAP/CLSI GP47 surveys); every hospital confirms its own list with its clinicians
/// and replaces these through the `critical_limits` configuration.
pub fn default_limits() -> Vec<Limit> {
    let l = |loinc: &[&str],
             aliases: &[&str],
             name: &str,
             unit: &str,
             low: Option<f64>,
             high: Option<f64>| Limit {
        loinc: loinc.iter().map(|s| s.to_string()).collect(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        name: name.into(),
        unit: unit.into(),
        low,
        high,
    };
    vec![
        l(
            &["2823-3", "6298-4"],
            &["K", "POTASSIUM", "钾"],
            "钾 Potassium",
            "mmol/L",
            Some(2.8),
            Some(6.2),
        ),
        l(
            &["2951-2", "2947-0"],
            &["NA", "SODIUM", "钠"],
            "钠 Sodium",
            "mmol/L",
            Some(120.0),
            Some(160.0),
        ),
        l(
            &["2345-7", "2339-0", "1554-5", "41653-7"],
            &["GLU", "GLUCOSE", "葡萄糖"],
            "葡萄糖 Glucose",
            "mmol/L",
            Some(2.8),
            Some(22.2),
        ),
        l(
            &["718-7"],
            &["HGB", "HB", "血红蛋白"],
            "血红蛋白 Haemoglobin",
            "g/L",
            Some(50.0),
            Some(200.0),
        ),
        l(
            &["777-3", "26515-7"],
            &["PLT", "血小板"],
            "血小板 Platelets",
            "10*9/L",
            Some(30.0),
            Some(1000.0),
        ),
        l(
            &["6690-2", "26464-8"],
            &["WBC", "白细胞"],
            "白细胞 White cells",
            "10*9/L",
            Some(1.0),
            Some(30.0),
        ),
        l(
            &["6301-6", "34714-6"],
            &["INR"],
            "INR",
            "1",
            None,
            Some(5.0),
        ),
        l(
            &["10839-9", "42757-5"],
            &["TNI", "CTNI"],
            "肌钙蛋白I Troponin I",
            "ng/mL",
            None,
            Some(0.5),
        ),
        l(
            &["6598-7"],
            &["TNT", "CTNT"],
            "肌钙蛋白T Troponin T",
            "ng/mL",
            None,
            Some(0.1),
        ),
    ]
}

/// Convert `value` from `from` to `to` for the units these limits use; `None` when the
/// units are not known to match (then only the flags decide).
fn convert(value: f64, from: &str, to: &str) -> Option<f64> {
    let norm = |u: &str| {
        u.trim()
            .to_ascii_lowercase()
            .replace(['^', '*'], "")
            .replace("x10", "10")
            .replace("μ", "u")
            .replace("µ", "u")
    };
    let (f, t) = (norm(from), norm(to));
    let same =
        |a: &str, b: &str| a == b || (a.replace("109/l", "10e9/l") == b.replace("109/l", "10e9/l"));
    if same(&f, &t) || (t == "1" && f.is_empty()) {
        return Some(value);
    }
    match (f.as_str(), t.as_str()) {
        ("mg/dl", "mmol/l") => Some(value / 18.016), // glucose
        ("g/dl", "g/l") => Some(value * 10.0),
        ("meq/l", "mmol/l") => Some(value),
        ("/nl", "109/l") | ("k/ul", "109/l") | ("10e3/ul", "109/l") | ("103/ul", "109/l") => {
            Some(value)
        }
        ("ug/l", "ng/ml") => Some(value),
        _ => None,
    }
}

/// Is this result critical? By the limits of its test, or by its OBX-8 flags.
pub fn is_critical(limits: &[Limit], o: &NewObservation) -> bool {
    if o.flags
        .iter()
        .any(|f| matches!(f.as_str(), "HH" | "LL" | "AA"))
    {
        return true;
    }
    let Some(value) = o.value_num else {
        return false;
    };
    let code = o.code.to_uppercase();
    let text = o.code_text.as_deref().unwrap_or_default().to_uppercase();
    let limit = limits.iter().find(|l| {
        o.loinc
            .as_deref()
            .is_some_and(|c| l.loinc.iter().any(|x| x == c))
            || l.aliases.iter().any(|a| *a == code || *a == text)
    });
    let Some(limit) = limit else {
        return false;
    };
    let Some(v) = convert(value, o.units.as_deref().unwrap_or(""), &limit.unit) else {
        return false;
    };
    limit.low.is_some_and(|low| v < low) || limit.high.is_some_and(|high| v > high)
}

fn priority_of(code: Option<&str>) -> Priority {
    match code.map(|c| c.trim().to_ascii_uppercase()) {
        Some(c) if c == "S" || c == "STAT" => Priority::Stat,
        Some(c) if c == "A" || c == "ASAP" || c == "URGENT" => Priority::Urgent,
        _ => Priority::Routine,
    }
}

/// Map parsed results to what storage keeps, deciding criticality.
pub fn orders_of(results: &LabResults, limits: &[Limit]) -> Vec<NewOrder> {
    results
        .orders
        .iter()
        .map(|o| {
            let number = o
                .filler_number
                .clone()
                .or_else(|| o.placer_number.clone())
                .unwrap_or_default();
            let observations = o
                .observations
                .iter()
                .map(|x| {
                    let (value_text, value_num) = match &x.value {
                        Hl7Value::Numeric { value, text } => (text.clone(), Some(*value)),
                        Hl7Value::Structured {
                            comparator,
                            first,
                            second,
                            text,
                            ..
                        } => {
                            // A plain number written as SN (e.g. "^182"); ranges and
                            // comparisons are not one value.
                            let plain = comparator
                                .as_deref()
                                .is_none_or(|c| c.is_empty() || c == "=")
                                && second.is_none();
                            (text.clone(), if plain { *first } else { None })
                        }
                        Hl7Value::Text(t) => (t.clone(), None),
                        Hl7Value::Coded(c) => {
                            (c.text.clone().unwrap_or_else(|| c.code.clone()), None)
                        }
                        Hl7Value::Other { text, .. } => (text.clone(), None),
                        Hl7Value::Empty => (String::new(), None),
                    };
                    let mut obs = NewObservation {
                        set_id: x.set_id.clone(),
                        code: x.code.code.clone(),
                        code_text: x.code.text.clone(),
                        code_system: x.code.system.clone(),
                        loinc: x.code.loinc.clone(),
                        sub_id: x.sub_id.clone(),
                        value_type: x.value_type.clone(),
                        value_text,
                        value_num,
                        units: x.units.clone(),
                        reference_range: x.reference_range.clone(),
                        flags: x.abnormal_flags.clone(),
                        status: x.status.clone(),
                        observed_at: x.observed_at.as_deref().and_then(hl7::ts_to_ms),
                        critical: false,
                    };
                    obs.critical = is_critical(limits, &obs);
                    obs
                })
                .collect();
            NewOrder {
                order_key: format!("{number}|{}", o.test.code),
                patient_id: results.patient.id.clone(),
                patient_name: results.patient.name.clone(),
                birth_date: results.patient.birth_date.clone(),
                sex: results.patient.sex.clone(),
                placer_number: o.placer_number.clone(),
                filler_number: o.filler_number.clone(),
                test_code: o.test.code.clone(),
                test_text: o.test.text.clone(),
                test_system: o.test.system.clone(),
                test_loinc: o.test.loinc.clone(),
                specimen_at: o.specimen_time.as_deref().and_then(hl7::ts_to_ms),
                observed_at: o.observation_end.as_deref().and_then(hl7::ts_to_ms),
                priority: priority_of(o.priority.as_deref()),
                result_status: o.result_status.clone(),
                observations,
            }
        })
        .collect()
}

fn error(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
}

/// `POST /ingest/hl7`: one HL7 message from a gateway, raw bytes.
async fn ingest(
    caller: Caller,
    state: web::Data<HubState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let site = store_site(&caller.principal)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only gateways send lab results",
            )
        })?
        .to_string();
    let message = match hl7::parse(&body) {
        Ok(m) => m,
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                format!("HL7 message cannot be parsed: {e}"),
            ))
        }
    };
    let results = match hl7::lab_results(&message) {
        Ok(r) => r,
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                format!("not usable lab results: {e}"),
            ))
        }
    };
    let msh = message.msh();
    let orders = orders_of(&results, &state.critical_limits);
    let sha = hex::encode(Sha256::digest(&body));
    let message_type = format!("{}^{}", msh.message_code, msh.trigger_event);
    let audit = caller.event(EventType::IMPORT, Action::Create, Outcome::Success);
    let outcome = storage::lab::ingest(
        &state.storage.db,
        &storage::lab::Message {
            site: &site,
            control_id: &msh.control_id,
            sha256: &sha,
            message_type: &message_type,
            raw: &body,
        },
        &orders,
        &state.deadlines().await?,
        &audit,
    )
    .await?;
    match &outcome {
        Ingest::ControlIdReused => {
            return Ok(error(
                StatusCode::CONFLICT,
                format!(
                    "message control id {} was already used by a different message from {site}",
                    msh.control_id
                ),
            ))
        }
        Ingest::Stored { .. } | Ingest::Duplicate => {}
    }
    // Alerts follow what this message says: corrections of alerted results first (so a
    // corrected critical value replaces its alert instead of raising a second one), then
    // every critical result still without one. Also after a resend, so a crash between
    // storing and alerting loses nothing.
    alerts::follow_up(&state, &caller, &site, &msh.control_id).await?;
    alerts::raise(&state, &caller, &site, &msh.control_id).await?;
    state.changes.notify_waiters();
    Ok(HttpResponse::Ok().json(outcome))
}

/// One line per current result, as the signed lab report carries them; a corrected
/// value says so and what it replaced (a correction never hides the original).
pub fn results_text(order: &Order) -> String {
    let shown = |o: &Observation| {
        format!("{} {}", o.value_text, o.units.as_deref().unwrap_or(""))
            .trim()
            .to_string()
    };
    order
        .results
        .iter()
        .map(|o| {
            let corrected = o
                .is_correction()
                .then(|| order.history.iter().find(|h| Some(h.id) == o.replaces))
                .flatten()
                .map(|was| format!(" 〔更正，原报告 {}〕", shown(was)))
                .unwrap_or_default();
            format!(
                "{} {}{}{}{}",
                o.code_text.clone().unwrap_or_else(|| o.code.clone()),
                shown(o),
                o.reference_range
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                if o.flags.is_empty() {
                    String::new()
                } else {
                    format!(" {}", o.flags.join(","))
                },
                corrected,
            )
            .trim_end()
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `GET /api/exams/{id}/lab`: results with flags, units, ranges, corrections, and the
/// patient's previous values of the same tests.
async fn exam_results(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let order = storage::lab::order_of_exam(&state.storage.db, &read_scope(&caller.principal), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no lab exam {id}")))?;
    let previous: Vec<Observation> =
        storage::lab::previous_results(&state.storage.db, &order, 5).await?;
    let event = NewEvent {
        patient_id: Some(order.patient_id.clone()),
        exam_id: Some(order.exam_id),
        ..caller.event(EventType::PATIENT_RECORD, Action::Read, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "order": order, "previous": previous })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(loinc: &str, value: f64, units: &str, flags: &[&str]) -> NewObservation {
        NewObservation {
            set_id: None,
            code: "X".into(),
            code_text: None,
            code_system: None,
            loinc: Some(loinc.into()),
            sub_id: None,
            value_type: "NM".into(),
            value_text: value.to_string(),
            value_num: Some(value),
            units: Some(units.into()),
            reference_range: None,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            status: Some("F".into()),
            observed_at: None,
            critical: false,
        }
    }

    #[test]
    fn critical_by_limits_units_and_flags() {
        let limits = default_limits();
        assert!(is_critical(&limits, &obs("2823-3", 6.8, "mmol/L", &[])));
        assert!(!is_critical(&limits, &obs("2823-3", 5.1, "mmol/L", &["H"])));
        assert!(is_critical(&limits, &obs("2823-3", 2.5, "mmol/L", &[])));
        // 450 mg/dl glucose = 25 mmol/L.
        assert!(is_critical(&limits, &obs("2345-7", 450.0, "mg/dl", &[])));
        assert!(!is_critical(
            &limits,
            &obs("2345-7", 182.0, "mg/dl", &["H"])
        ));
        // 4.5 g/dl haemoglobin = 45 g/L.
        assert!(is_critical(&limits, &obs("718-7", 4.5, "g/dl", &[])));
        // Unknown units: only flags count.
        assert!(!is_critical(&limits, &obs("2823-3", 9.0, "furlongs", &[])));
        assert!(is_critical(&limits, &obs("9999-9", 1.0, "", &["HH"])));
    }
}
