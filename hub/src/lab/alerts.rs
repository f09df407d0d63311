//! Critical-value (危急值) alerts at the hub: raised for a critical result, replaced or
//! withdrawn when the laboratory corrects it (the rule is `formats::critical`), signed
//! like reports and delivered to the township through the report channel, escalated to
//! the county when nobody acknowledges them in time.
//!
//! One alert is one delivery id (`alert-...`) with versions: version 1 raised, later
//! versions amending it. The township shows the newest verified version, so a withdrawal
//! stops the page asking to treat the withdrawn value, and a replacement asks again
//! for the new one.

use std::collections::BTreeMap;

use access::Caller;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use formats::critical::{follow_up as decide, AlertNow, FollowUp, NewResult};
use formats::report::{
    payload_sha256, sign, ExamRef, ReportPayload, ReportStatus, Signer, Supersedes, FORMAT,
};
use serde::Deserialize;
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::lab::{LiveAlert, Observation, OrderRef};
use viewer_api::ApiError;

use crate::HubState;

/// The test's name as the alert states it.
fn test_name(o: &Observation) -> String {
    o.code_text.clone().unwrap_or_else(|| o.code.clone())
}

/// A value with its unit, as shown.
fn value_of(o: &Observation) -> String {
    format!("{} {}", o.value_text, o.units.as_deref().unwrap_or(""))
        .trim()
        .to_string()
}

/// The order number the alert, the signed lab report and its PDF all name.
pub fn accession_of(order: &OrderRef) -> Option<String> {
    order
        .filler_number
        .clone()
        .or_else(|| order.placer_number.clone())
}

/// What one alert version says.
enum Says<'a> {
    /// A critical value (raised, or the corrected critical value replacing `was`).
    Critical { was: Option<&'a Observation> },
    /// The value `was` was corrected to a non-critical one.
    Withdrawn { was: &'a Observation },
}

/// The alert's sentence for the township.
fn sentence(observation: &Observation, says: &Says<'_>) -> String {
    let range = observation.reference_range.as_deref().unwrap_or("-");
    let flags = if observation.flags.is_empty() {
        "-".to_string()
    } else {
        observation.flags.join(",")
    };
    let test = test_name(observation);
    let value = value_of(observation);
    match says {
        Says::Critical { was: None } => format!(
            "危急值：{test} {value}（参考范围 {range}；标志 {flags}）。请临床医生立即处理并确认。"
        ),
        Says::Critical { was: Some(was) } => format!(
            "危急值更正：{test} {value}（参考范围 {range}；标志 {flags}），检验科已将原报告的 {} 更正为此值。\
             请按更正后的结果立即处理并确认。",
            value_of(was)
        ),
        Says::Withdrawn { was } => format!(
            "危急值已撤回：{test} 原报告 {} 已由检验科更正为 {value}（参考范围 {range}），不再属于危急值。\
             请勿按原值处理。",
            value_of(was)
        ),
    }
}

/// Sign one version of an alert about `observation`.
fn signed_version(
    state: &HubState,
    site: &str,
    order: &OrderRef,
    observation: &Observation,
    report_id: &str,
    previous: Option<&LiveAlert>,
    says: &Says<'_>,
) -> Result<formats::report::SignedReport, ApiError> {
    let mut content = BTreeMap::new();
    content.insert("alert".to_string(), sentence(observation, says));
    content.insert("test".into(), test_name(observation));
    content.insert("value".into(), value_of(observation));
    let (critical, reason) = match says {
        Says::Critical { was: None } => (true, None),
        Says::Critical { was: Some(was) } => (
            true,
            Some(format!(
                "检验科更正结果：{} {} → {}",
                test_name(observation),
                value_of(was),
                value_of(observation)
            )),
        ),
        Says::Withdrawn { was } => (
            false,
            Some(format!(
                "检验科更正结果，危急值撤回：{} {} → {}",
                test_name(observation),
                value_of(was),
                value_of(observation)
            )),
        ),
    };
    let payload = ReportPayload {
        format: FORMAT.to_string(),
        report_id: report_id.to_string(),
        version: previous.map_or(1, |p| p.version + 1),
        status: match previous {
            None => ReportStatus::Preliminary,
            Some(_) => ReportStatus::Amended,
        },
        supersedes: previous.map(|p| Supersedes {
            version: p.version,
            payload_sha256: payload_sha256(&p.payload),
        }),
        reason,
        exam: ExamRef {
            exam_id: order.exam_id,
            kind: "lab".into(),
            site: site.to_string(),
            patient_id: Some(order.patient_id.clone()),
            patient_name: order.patient_name.clone(),
            study_uid: None,
            accession_number: accession_of(order),
            modality: Some("LAB".into()),
        },
        template: "critical-alert".into(),
        content,
        critical,
        preliminary_by: None,
        signer: Signer {
            username: "system".into(),
            display_name: "危急值自动通知".into(),
            grade: "system".into(),
            signed_at_ms: storage::now_ms(),
        },
        key_id: state.signer.key_id.clone(),
    };
    sign(&payload, &state.signer.key)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "sign", e.to_string()))
}

fn audit_of(caller: &Caller, order: &OrderRef) -> NewEvent {
    NewEvent {
        patient_id: Some(order.patient_id.clone()),
        ..caller.event(EventType::PATIENT_RECORD, Action::Create, Outcome::Success)
    }
}

/// Sign and queue a critical alert for each critical result of the message that no
/// alert covers.
pub async fn raise(
    state: &HubState,
    caller: &Caller,
    site: &str,
    control_id: &str,
) -> Result<(), ApiError> {
    let pending = storage::lab::critical_without_alert(&state.storage.db, site, control_id).await?;
    for (order, observation) in pending {
        let report_id = format!("alert-{}", uuid::Uuid::new_v4());
        let says = Says::Critical { was: None };
        let signed = signed_version(state, site, &order, &observation, &report_id, None, &says)?;
        storage::lab::create_alert(
            &state.storage.db,
            order.exam_id,
            observation.id,
            site,
            &report_id,
            &signed,
            &audit_of(caller, &order),
        )
        .await?;
        tracing::warn!(site, exam = order.exam_id, test = %observation.code, "critical lab value: alert raised");
    }
    Ok(())
}

/// For each result of the message that replaced an alerted one: keep, replace or
/// withdraw the alert (`formats::critical::follow_up`).
pub async fn follow_up(
    state: &HubState,
    caller: &Caller,
    site: &str,
    control_id: &str,
) -> Result<(), ApiError> {
    let due = storage::lab::follow_ups_due(&state.storage.db, site, control_id).await?;
    for item in due {
        let (new, alert) = (&item.observation, &item.alert);
        let was = &alert.observation;
        let now = if alert.withdrawn {
            AlertNow::Withdrawn
        } else {
            AlertNow::Critical {
                value: &was.value_text,
                unit: was.units.as_deref().unwrap_or(""),
            }
        };
        let result = NewResult {
            critical: new.critical,
            value: &new.value_text,
            unit: new.units.as_deref().unwrap_or(""),
        };
        let says = match decide(now, result) {
            FollowUp::Keep => {
                storage::lab::keep_alert(&state.storage.db, new.id, alert.id).await?;
                continue;
            }
            FollowUp::Replace => Says::Critical { was: Some(was) },
            FollowUp::Withdraw => Says::Withdrawn { was },
        };
        supersede(state, caller, site, &item.order, new, alert, &says).await?;
    }
    Ok(())
}

async fn supersede(
    state: &HubState,
    caller: &Caller,
    site: &str,
    order: &OrderRef,
    new: &Observation,
    alert: &LiveAlert,
    says: &Says<'_>,
) -> Result<(), ApiError> {
    let version = alert.version + 1;
    let signed = signed_version(state, site, order, new, &alert.report_id, Some(alert), says)?;
    let withdrawn = matches!(says, Says::Withdrawn { .. });
    let stored = storage::lab::supersede_alert(
        &state.storage.db,
        alert,
        order.exam_id,
        new.id,
        site,
        withdrawn,
        &signed,
        &audit_of(caller, order),
    )
    .await?;
    if stored.is_some() {
        tracing::warn!(
            site,
            exam = order.exam_id,
            alert = %alert.report_id,
            version,
            withdrawn,
            "critical lab value corrected: alert superseded"
        );
    }
    Ok(())
}

/// Query of the admin list.
#[derive(Deserialize)]
pub struct AlertQuery {
    from: Option<i64>,
    to: Option<i64>,
    /// Only those not acknowledged yet.
    #[serde(default)]
    open: bool,
}

/// `GET /api/admin/critical-alerts`: every alert version with its chain of custody, and
/// per site how many alerts were raised, withdrawn, escalated and how long
/// acknowledgement took.
pub async fn critical_alerts(
    state: web::Data<HubState>,
    q: web::Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    let to = q.to.unwrap_or(i64::MAX);
    let alerts = storage::lab::alerts(&state.storage.db, q.from.unwrap_or(0), to, q.open).await?;
    let mut per_site: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for a in &alerts {
        let entry = per_site.entry(a.site.clone()).or_default();
        if let Some(ack) = a.acknowledged_at {
            entry.push((ack - a.created_at) / 1000);
        }
    }
    let sites: Vec<serde_json::Value> = per_site
        .into_iter()
        .map(|(site, mut secs)| {
            let raised = alerts
                .iter()
                .filter(|a| a.site == site && a.version == 1)
                .count();
            let withdrawn = alerts
                .iter()
                .filter(|a| a.site == site && a.withdrawn)
                .count();
            let escalated = alerts
                .iter()
                .filter(|a| a.site == site && a.escalated_at.is_some())
                .count();
            serde_json::json!({
                "site": site, "alerts": raised, "withdrawn": withdrawn, "acknowledged": secs.len(), "escalated": escalated,
                "result_to_ack_p50_s": crate::turnaround::percentile(&mut secs, 50.0),
                "result_to_ack_p90_s": crate::turnaround::percentile(&mut secs, 90.0),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "alerts": alerts, "sites": sites })))
}

/// Escalate alerts nobody acknowledged within `ack_secs`; run periodically by every hub
/// process (each alert escalates once).
pub async fn escalate(state: &HubState, ack_secs: i64) -> Result<usize, storage::StorageError> {
    let audit = NewEvent::new(
        EventType::PATIENT_RECORD,
        Action::Update,
        Outcome::MajorFailure,
        "system",
        "system",
    );
    let raised_before = storage::now_ms() - ack_secs.max(1) * 1000;
    let escalated =
        storage::lab::escalate_unacknowledged(&state.storage.db, raised_before, &audit).await?;
    if !escalated.is_empty() {
        tracing::error!(alerts = ?escalated, "critical values not acknowledged in time: escalated to the county");
        state.changes.notify_waiters();
    }
    Ok(escalated.len())
}
