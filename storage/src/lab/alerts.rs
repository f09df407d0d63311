//! Critical-value (危急值) alerts: each a chain of signed versions under one delivery id
//! (`alert-...`), raised for a critical result, replaced when the laboratory corrects it
//! to another critical value, withdrawn when corrected to a non-critical one
//! (`formats::critical` decides which), escalated when nobody acknowledges it in time.
//!
//! Invariants: an observation is covered by at most one alert version (`alert_id`); at
//! most one version of a chain is not superseded; a version, once stored, is never
//! changed (only `superseded_at` and `escalated_at` are set on it, once).

use serde::Serialize;
use sqlx::Row;

use super::{observation, Observation, OBSERVATION_COLUMNS};
use crate::audit::{audit_append, NewEvent};
use crate::db::{on_db, Db};
use crate::exams::record_event;
use crate::scope::ReadScope;
use crate::{now_ms, Result};

/// Store a signed critical alert (version 1 of its chain) and queue it for the township.
/// `report_id` names it in the delivery channel (`alert-...`).
pub async fn create_alert(
    db: &Db,
    exam_id: i64,
    observation_id: i64,
    site: &str,
    report_id: &str,
    signed: &formats::report::SignedReport,
    audit: &NewEvent,
) -> Result<i64> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO critical_alerts (exam_id, observation_id, site, payload, signature, key_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(exam_id)
        .bind(observation_id)
        .bind(site)
        .bind(&signed.payload)
        .bind(&signed.signature)
        .bind(&signed.key_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO deliveries (site, report_id, version, critical, created_at, alert_id) VALUES ($1, $2, 1, 1, $3, $4)",
        )
        .bind(site)
        .bind(report_id)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE lab_observations SET alert_id = $1 WHERE id = $2")
            .bind(id)
            .bind(observation_id)
            .execute(&mut *tx)
            .await?;
        record_event!(
            &mut *tx,
            exam_id,
            "critical alert",
            audit.actor.as_str(),
            format!("alert {report_id}"),
            now
        )
        .await?;
        let event = NewEvent {
            exam_id: Some(exam_id),
            detail: Some(
                serde_json::json!({ "critical_alert": report_id, "observation": observation_id }),
            ),
            ..audit.clone()
        };
        audit_append!(&mut *tx, &event, now).await?;
        tx.commit().await?;
        Ok(id)
    })
}

/// The current version of an alert chain, as a later result meets it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveAlert {
    /// Row of this version.
    pub id: i64,
    /// Delivery id (`alert-...`), the same for every version.
    pub report_id: String,
    /// Version number.
    pub version: i64,
    /// This version withdrew the alert.
    pub withdrawn: bool,
    /// Its signed payload text (a new version names its digest).
    pub payload: String,
    /// The result this version is about.
    pub observation: Observation,
}

/// A result (of one message) that replaced a result an alert covers, with no follow-up
/// decided yet.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUpDue {
    /// Its order.
    pub order: OrderRef,
    /// The new result.
    pub observation: Observation,
    /// The alert covering the result it replaced.
    pub alert: LiveAlert,
}

/// Results of a message (site + MSH-10) that replaced an alerted result and are not yet
/// covered by the alert's chain. Also after a resend, so a crash between storing the
/// correction and following up loses nothing.
pub async fn follow_ups_due(db: &Db, site: &str, control_id: &str) -> Result<Vec<FollowUpDue>> {
    // The replaced result's columns as `p_<name>`, beside the new result's.
    let replaced_aliases: Vec<String> = OBSERVATION_COLUMNS
        .split(',')
        .map(|c| {
            let name = c.trim().trim_start_matches("x.");
            format!("p.{name} AS p_{name}")
        })
        .collect();
    let sql = format!(
        "SELECT {OBSERVATION_COLUMNS}, {}, o.exam_id, o.patient_id, o.patient_name, o.placer_number, \
         o.filler_number, a.id AS alert_row, a.version AS alert_version, a.withdrawn AS alert_withdrawn, \
         a.payload AS alert_payload, d.report_id AS alert_report \
         FROM lab_observations x JOIN lab_orders o ON o.id = x.order_id JOIN hl7_messages m ON m.id = x.message_id \
         JOIN lab_observations p ON p.id = x.replaces JOIN critical_alerts a ON a.id = p.alert_id \
         JOIN deliveries d ON d.alert_id = a.id \
         WHERE m.site = $1 AND m.control_id = $2 AND x.alert_id IS NULL AND a.superseded_at IS NULL \
         ORDER BY x.id",
        replaced_aliases.join(", ")
    );
    on_db!(db, |pool| {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .bind(control_id)
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|r| {
                let withdrawn: i64 = r.try_get("alert_withdrawn")?;
                Ok(FollowUpDue {
                    order: order_ref(r)?,
                    observation: observation(r)?,
                    alert: LiveAlert {
                        id: r.try_get("alert_row")?,
                        report_id: r.try_get("alert_report")?,
                        version: r.try_get("alert_version")?,
                        withdrawn: withdrawn != 0,
                        payload: r.try_get("alert_payload")?,
                        observation: super::observation_prefixed(r, "p_")?,
                    },
                })
            })
            .collect()
    })
}

/// The new result is covered by the alert version that covered the one it replaced
/// (the same critical value finalised, or still not critical after a withdrawal).
pub async fn keep_alert(db: &Db, observation_id: i64, alert_id: i64) -> Result<()> {
    let _turn = db.write_turn().await;
    on_db!(db, |pool| {
        sqlx::query("UPDATE lab_observations SET alert_id = $1 WHERE id = $2 AND alert_id IS NULL")
            .bind(alert_id)
            .bind(observation_id)
            .execute(pool)
            .await?;
        Ok(())
    })
}

/// A new version of an alert chain, replacing (`withdrawn` false) or withdrawing
/// (`withdrawn` true) the current one: stored, queued for the township, the previous
/// version marked superseded, the new result covered by it. `None` when `previous` was
/// superseded meanwhile (another hub process followed up first): nothing stored.
#[allow(clippy::too_many_arguments)]
pub async fn supersede_alert(
    db: &Db,
    previous: &LiveAlert,
    exam_id: i64,
    observation_id: i64,
    site: &str,
    withdrawn: bool,
    signed: &formats::report::SignedReport,
    audit: &NewEvent,
) -> Result<Option<i64>> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    let version = previous.version + 1;
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let taken = sqlx::query(
            "UPDATE critical_alerts SET superseded_at = $1 WHERE id = $2 AND superseded_at IS NULL",
        )
        .bind(now)
        .bind(previous.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 0 {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO critical_alerts (exam_id, observation_id, site, payload, signature, key_id, created_at, \
             version, withdrawn) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(exam_id)
        .bind(observation_id)
        .bind(site)
        .bind(&signed.payload)
        .bind(&signed.signature)
        .bind(&signed.key_id)
        .bind(now)
        .bind(version)
        .bind(i64::from(withdrawn))
        .fetch_one(&mut *tx)
        .await?;
        // A withdrawal is not a critical finding: nothing for a clinician to acknowledge.
        sqlx::query(
            "INSERT INTO deliveries (site, report_id, version, critical, created_at, alert_id) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(site)
        .bind(&previous.report_id)
        .bind(version)
        .bind(i64::from(!withdrawn))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE lab_observations SET alert_id = $1 WHERE id = $2")
            .bind(id)
            .bind(observation_id)
            .execute(&mut *tx)
            .await?;
        let what = if withdrawn {
            "critical alert withdrawn"
        } else {
            "critical alert replaced"
        };
        record_event!(
            &mut *tx,
            exam_id,
            what,
            audit.actor.as_str(),
            format!(
                "alert {} v{version} supersedes v{}",
                previous.report_id, previous.version
            ),
            now
        )
        .await?;
        let event = NewEvent {
            exam_id: Some(exam_id),
            detail: Some(serde_json::json!({
                "critical_alert": previous.report_id, "version": version, "supersedes": previous.version,
                "withdrawn": withdrawn, "observation": observation_id,
            })),
            ..audit.clone()
        };
        audit_append!(&mut *tx, &event, now).await?;
        tx.commit().await?;
        Ok(Some(id))
    })
}

/// One version of a critical alert and its chain of custody.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Alert version row id.
    pub id: i64,
    /// Delivery id (`alert-...`), shared by the versions of one alert.
    pub report_id: String,
    /// Version in its chain (1: raised).
    pub version: i64,
    /// This version withdrew the alert (the value was corrected to non-critical).
    pub withdrawn: bool,
    /// A later version replaced or withdrew this one, ms.
    pub superseded_at: Option<i64>,
    /// Exam.
    pub exam_id: i64,
    /// Site.
    pub site: String,
    /// Patient.
    pub patient_id: Option<String>,
    /// Test.
    pub test: String,
    /// Value with units.
    pub value: String,
    /// Raised, ms.
    pub created_at: i64,
    /// Handed to the gateway, ms.
    pub delivered_at: Option<i64>,
    /// Stored by the gateway, ms.
    pub received_at: Option<i64>,
    /// Acknowledged by a township clinician, ms.
    pub acknowledged_at: Option<i64>,
    /// Who.
    pub acknowledged_by: Option<String>,
    /// Escalated to the county, ms.
    pub escalated_at: Option<i64>,
}

/// Critical alert versions raised in `[from, to)`, newest first; `open_only`: those still
/// waiting for an acknowledgement (current, critical, not acknowledged).
pub async fn alerts(db: &Db, from_ms: i64, to_ms: i64, open_only: bool) -> Result<Vec<Alert>> {
    on_db!(db, |pool| {
        let rows = sqlx::query(
            "SELECT a.id, d.report_id, a.version, a.withdrawn, a.superseded_at, a.exam_id, a.site, e.patient_id, \
             COALESCE(x.code_text, x.code) AS test, x.value_text || COALESCE(' ' || x.units, '') AS value, \
             a.created_at, d.delivered_at, d.acknowledged_at, d.critical_ack_at, d.critical_ack_by, a.escalated_at \
             FROM critical_alerts a JOIN exams e ON e.id = a.exam_id JOIN lab_observations x ON x.id = a.observation_id \
             JOIN deliveries d ON d.alert_id = a.id \
             WHERE a.created_at >= $1 AND a.created_at < $2 AND ($3 = 0 OR (d.critical_ack_at IS NULL \
             AND a.superseded_at IS NULL AND a.withdrawn = 0)) \
             ORDER BY a.created_at DESC, a.id DESC",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(i64::from(open_only))
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                let withdrawn: i64 = r.try_get("withdrawn")?;
                Ok(Alert {
                    id: r.try_get("id")?,
                    report_id: r.try_get("report_id")?,
                    version: r.try_get("version")?,
                    withdrawn: withdrawn != 0,
                    superseded_at: r.try_get("superseded_at")?,
                    exam_id: r.try_get("exam_id")?,
                    site: r.try_get("site")?,
                    patient_id: r.try_get("patient_id")?,
                    test: r.try_get("test")?,
                    value: r.try_get("value")?,
                    created_at: r.try_get("created_at")?,
                    delivered_at: r.try_get("delivered_at")?,
                    received_at: r.try_get("acknowledged_at")?,
                    acknowledged_at: r.try_get("critical_ack_at")?,
                    acknowledged_by: r.try_get("critical_ack_by")?,
                    escalated_at: r.try_get("escalated_at")?,
                })
            })
            .collect()
    })
}

/// Escalate alerts raised before `raised_before` (ms) that nobody acknowledged. Atomic:
/// with several hub processes each alert escalates once. Returns (alert id, exam id).
pub async fn escalate_unacknowledged(
    db: &Db,
    raised_before: i64,
    audit: &NewEvent,
) -> Result<Vec<(i64, i64)>> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            // A superseded version is answered by its successor; a withdrawal asks nothing.
            "UPDATE critical_alerts SET escalated_at = $1 WHERE escalated_at IS NULL AND created_at < $2 \
             AND superseded_at IS NULL AND withdrawn = 0 AND id IN (SELECT alert_id FROM deliveries WHERE alert_id IS NOT NULL AND critical_ack_at IS NULL) \
             RETURNING id, exam_id",
        )
        .bind(now)
        .bind(raised_before)
        .fetch_all(&mut *tx)
        .await?;
        for (alert, exam) in &rows {
            let detail =
                format!("critical alert {alert} not acknowledged in time: escalated to the county");
            record_event!(
                &mut *tx,
                *exam,
                "critical escalated",
                audit.actor.as_str(),
                &detail,
                now
            )
            .await?;
            sqlx::query("UPDATE exams SET updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(*exam)
                .execute(&mut *tx)
                .await?;
        }
        if !rows.is_empty() {
            let event = NewEvent {
                detail: Some(
                    serde_json::json!({ "escalated_alerts": rows.iter().map(|r| r.0).collect::<Vec<_>>() }),
                ),
                ..audit.clone()
            };
            audit_append!(&mut *tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(rows)
    })
}

/// The order a critical result belongs to, as an alert names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRef {
    /// The lab exam.
    pub exam_id: i64,
    /// Patient ID.
    pub patient_id: String,
    /// Patient name.
    pub patient_name: Option<String>,
    /// Placer number.
    pub placer_number: Option<String>,
    /// Filler number.
    pub filler_number: Option<String>,
}

/// Critical results of a message (site + MSH-10) still shown and covered by no alert.
pub async fn critical_without_alert(
    db: &Db,
    site: &str,
    control_id: &str,
) -> Result<Vec<(OrderRef, Observation)>> {
    let sql = format!(
        "SELECT {OBSERVATION_COLUMNS}, o.exam_id, o.patient_id, o.patient_name, o.placer_number, o.filler_number \
         FROM lab_observations x JOIN lab_orders o ON o.id = x.order_id JOIN hl7_messages m ON m.id = x.message_id \
         WHERE m.site = $1 AND m.control_id = $2 AND x.critical = 1 AND x.current = 1 AND x.alert_id IS NULL \
         ORDER BY x.id"
    );
    on_db!(db, |pool| {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(site)
            .bind(control_id)
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|r| Ok((order_ref(r)?, observation(r)?)))
            .collect()
    })
}

fn order_ref<R: Row>(r: &R) -> Result<OrderRef>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OrderRef {
        exam_id: r.try_get("exam_id")?,
        patient_id: r.try_get("patient_id")?,
        patient_name: r.try_get("patient_name")?,
        placer_number: r.try_get("placer_number")?,
        filler_number: r.try_get("filler_number")?,
    })
}

/// A critical alert (`alert-...` in the delivery channel) seen as the report it travels
/// as: its summary (from the newest version) and every version, oldest first, if it
/// exists within `scope`.
pub async fn alert_as_report(
    db: &Db,
    scope: &ReadScope,
    report_id: &str,
) -> Result<Option<(crate::reports::Summary, Vec<crate::reports::Version>)>> {
    let mut params = Vec::new();
    let mut clauses = scope.exam_sql(&mut params, 2);
    clauses.push("d.report_id = $1".into());
    let sql = format!(
        "SELECT a.exam_id, e.kind, e.site, e.patient_id, e.patient_name, e.modality, a.payload, a.signature, \
         a.key_id, a.created_at, a.version, a.withdrawn FROM critical_alerts a JOIN deliveries d ON d.alert_id = a.id \
         JOIN exams e ON e.id = a.exam_id WHERE {} ORDER BY a.version",
        clauses.join(" AND ")
    );
    on_db!(db, |pool| {
        // Audited: fixed SQL with numbered placeholders; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(report_id);
        for p in &params {
            q = q.bind(p);
        }
        let rows = q.fetch_all(pool).await?;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        // Version 1 is the alert as raised; later ones amend it (replace or withdraw).
        let status_of = |version: i64| {
            if version == 1 {
                formats::report::ReportStatus::Preliminary
            } else {
                formats::report::ReportStatus::Amended
            }
            .as_str()
            .to_string()
        };
        let versions = rows
            .iter()
            .map(|r| {
                let version: i64 = r.try_get("version")?;
                let withdrawn: i64 = r.try_get("withdrawn")?;
                Ok(crate::reports::Version {
                    report_id: report_id.to_string(),
                    version,
                    status: status_of(version),
                    critical: withdrawn == 0,
                    signer: "system".into(),
                    signed_at: r.try_get("created_at")?,
                    signed: formats::report::SignedReport {
                        payload: r.try_get("payload")?,
                        signature: r.try_get("signature")?,
                        key_id: r.try_get("key_id")?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let newest = versions.last().cloned();
        let Some(newest) = newest else {
            return Ok(None);
        };
        let summary = crate::reports::Summary {
            report_id: report_id.to_string(),
            exam_id: last.try_get("exam_id")?,
            kind: last.try_get("kind")?,
            site: last.try_get("site")?,
            patient_id: last.try_get("patient_id")?,
            patient_name: last.try_get("patient_name")?,
            study_uid: None,
            modality: last.try_get("modality")?,
            version: newest.version,
            status: newest.status.clone(),
            critical: newest.critical,
            signer: "system".into(),
            signed_at: newest.signed_at,
        };
        Ok(Some((summary, versions)))
    })
}
