//! Laboratory results: HL7 messages as received, orders (one lab exam each),
//! observations with their correction history, and critical alerts.
//!
//! One message is stored in one transaction: the raw message (once per site + MSH-10),
//! its orders and observations, the exams they create or update, and the audit events.

pub mod alerts;

use serde::Serialize;
use sqlx::Row;

pub use alerts::{
    alert_as_report, alerts, create_alert, critical_without_alert, escalate_unacknowledged,
    follow_ups_due, keep_alert, supersede_alert, Alert, FollowUpDue, LiveAlert, OrderRef,
};

use crate::audit::{audit_append, NewEvent};
use crate::db::{on_db, Db};
use crate::exams::{record_event, ExamKind, Priority};
use crate::scope::ReadScope;
use crate::worklist::DeadlineTargets;
use crate::{now_ms, Result};

/// A received message.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// Sending site (from the gateway key).
    pub site: &'a str,
    /// MSH-10.
    pub control_id: &'a str,
    /// SHA-256 (hex) of the raw bytes.
    pub sha256: &'a str,
    /// e.g. `ORU^R01`.
    pub message_type: &'a str,
    /// The message exactly as received.
    pub raw: &'a [u8],
}

/// One observation (OBX) to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewObservation {
    /// OBX-1.
    pub set_id: Option<String>,
    /// Test code (OBX-3.1).
    pub code: String,
    /// Test name.
    pub code_text: Option<String>,
    /// Coding system of the code.
    pub code_system: Option<String>,
    /// LOINC code, when the message gives one.
    pub loinc: Option<String>,
    /// OBX-4.
    pub sub_id: Option<String>,
    /// OBX-2 (NM, SN, ST, TX, CE, CWE...).
    pub value_type: String,
    /// The value as text.
    pub value_text: String,
    /// The value as a number, when it is one.
    pub value_num: Option<f64>,
    /// OBX-6.
    pub units: Option<String>,
    /// OBX-7.
    pub reference_range: Option<String>,
    /// OBX-8.
    pub flags: Vec<String>,
    /// OBX-11 (P, F, C...).
    pub status: Option<String>,
    /// OBX-14, ms.
    pub observed_at: Option<i64>,
    /// Decided by the caller from the critical limits and the flags.
    pub critical: bool,
}

/// One order (OBR) to store, with its observations.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    /// Identity across messages: filler (else placer) number + test code.
    pub order_key: String,
    /// PID-3.
    pub patient_id: String,
    /// PID-5.
    pub patient_name: Option<String>,
    /// PID-7.
    pub birth_date: Option<String>,
    /// PID-8.
    pub sex: Option<String>,
    /// Placer order number.
    pub placer_number: Option<String>,
    /// Filler order number.
    pub filler_number: Option<String>,
    /// Test (OBR-4) code.
    pub test_code: String,
    /// Test name.
    pub test_text: Option<String>,
    /// Test coding system.
    pub test_system: Option<String>,
    /// Test LOINC code.
    pub test_loinc: Option<String>,
    /// Specimen collected, ms.
    pub specimen_at: Option<i64>,
    /// Observation time, ms.
    pub observed_at: Option<i64>,
    /// Priority from the order.
    pub priority: Priority,
    /// OBR-25.
    pub result_status: Option<String>,
    /// The results.
    pub observations: Vec<NewObservation>,
}

/// What storing a message did with one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredOrder {
    /// The lab exam.
    pub exam_id: i64,
    /// The order row.
    pub order_id: i64,
    /// New order (false: results added to a known one).
    pub created: bool,
    /// Observations stored now that are critical.
    pub critical_observations: Vec<i64>,
}

/// What storing a message did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Ingest {
    /// Stored.
    Stored {
        /// Per order.
        orders: Vec<StoredOrder>,
    },
    /// The identical message was stored before: nothing done.
    Duplicate,
    /// Another message already used this site + MSH-10.
    ControlIdReused,
}

/// Store a message with its orders and observations.
pub async fn ingest(
    db: &Db,
    msg: &Message<'_>,
    orders: &[NewOrder],
    targets: &DeadlineTargets,
    audit: &NewEvent,
) -> Result<Ingest> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let message_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO hl7_messages (site, control_id, sha256, message_type, raw, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (site, control_id) DO NOTHING RETURNING id",
        )
        .bind(msg.site)
        .bind(msg.control_id)
        .bind(msg.sha256)
        .bind(msg.message_type)
        .bind(msg.raw)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(message_id) = message_id else {
            let stored: String = sqlx::query_scalar(
                "SELECT sha256 FROM hl7_messages WHERE site = $1 AND control_id = $2",
            )
            .bind(msg.site)
            .bind(msg.control_id)
            .fetch_one(&mut *tx)
            .await?;
            return Ok(if stored == msg.sha256 {
                Ingest::Duplicate
            } else {
                Ingest::ControlIdReused
            });
        };
        let mut stored_orders = Vec::new();
        for order in orders {
            let any_critical = order.observations.iter().any(|o| o.critical);
            let priority = if any_critical {
                Priority::Stat
            } else {
                order.priority
            };
            let existing: Option<(i64, i64, String, String)> = sqlx::query_as(
                "SELECT o.id, o.exam_id, e.priority, e.status FROM lab_orders o JOIN exams e ON e.id = o.exam_id \
                 WHERE o.site = $1 AND o.order_key = $2",
            )
            .bind(msg.site)
            .bind(&order.order_key)
            .fetch_optional(&mut *tx)
            .await?;
            let (order_id, exam_id, created) = match existing {
                Some((order_id, exam_id, was, status)) => {
                    let was = Priority::parse(&was).unwrap_or(Priority::Routine);
                    let raised = priority.max(was);
                    sqlx::query(
                        "UPDATE lab_orders SET result_status = $1, observed_at = COALESCE($2, observed_at), \
                         updated_at = $3 WHERE id = $4",
                    )
                    .bind(&order.result_status)
                    .bind(order.observed_at)
                    .bind(now)
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE exams SET priority = $1, updated_at = $2, \
                         deadline_at = CASE WHEN $1 <> $3 THEN COALESCE(ready_at, $2) + $4 ELSE deadline_at END \
                         WHERE id = $5",
                    )
                    .bind(raised.as_str())
                    .bind(now)
                    .bind(was.as_str())
                    .bind(targets.target_ms(ExamKind::Lab, raised))
                    .bind(exam_id)
                    .execute(&mut *tx)
                    .await?;
                    let detail = if status == "final" {
                        "new results after the report was signed: review and amend"
                    } else {
                        "new results"
                    };
                    record_event!(
                        &mut *tx,
                        exam_id,
                        status.as_str(),
                        audit.actor.as_str(),
                        detail,
                        now
                    )
                    .await?;
                    (order_id, exam_id, false)
                }
                None => {
                    let exam_id: i64 = sqlx::query_scalar(
                        "INSERT INTO exams (study_uid, site, kind, modality, patient_id, patient_name, priority, status, \
                         received_at, ready_at, updated_at, deadline_at) \
                         VALUES (NULL, $1, 'lab', 'LAB', $2, $3, $4, 'ready', $5, $5, $5, $6) RETURNING id",
                    )
                    .bind(msg.site)
                    .bind(&order.patient_id)
                    .bind(&order.patient_name)
                    .bind(priority.as_str())
                    .bind(now)
                    .bind(now + targets.target_ms(ExamKind::Lab, priority))
                    .fetch_one(&mut *tx)
                    .await?;
                    let order_id: i64 = sqlx::query_scalar(
                        "INSERT INTO lab_orders (exam_id, site, order_key, patient_id, patient_name, birth_date, sex, \
                         placer_number, filler_number, test_code, test_text, test_system, test_loinc, specimen_at, \
                         observed_at, priority, result_status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, \
                         $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18) RETURNING id",
                    )
                    .bind(exam_id)
                    .bind(msg.site)
                    .bind(&order.order_key)
                    .bind(&order.patient_id)
                    .bind(&order.patient_name)
                    .bind(&order.birth_date)
                    .bind(&order.sex)
                    .bind(&order.placer_number)
                    .bind(&order.filler_number)
                    .bind(&order.test_code)
                    .bind(&order.test_text)
                    .bind(&order.test_system)
                    .bind(&order.test_loinc)
                    .bind(order.specimen_at)
                    .bind(order.observed_at)
                    .bind(order.priority.as_str())
                    .bind(&order.result_status)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    let detail = format!("lab order {} received", order.order_key);
                    record_event!(
                        &mut *tx,
                        exam_id,
                        "ready",
                        audit.actor.as_str(),
                        &detail,
                        now
                    )
                    .await?;
                    (order_id, exam_id, true)
                }
            };
            let mut critical_observations = Vec::new();
            for o in &order.observations {
                // A newer result for the same test replaces the shown one; the old stays
                // as history (a correction, status C, or a final after a preliminary), and
                // the new one names it, so an alert about the old one can follow.
                let replaced: Vec<i64> = sqlx::query_scalar(
                    "UPDATE lab_observations SET current = 0 WHERE order_id = $1 AND code = $2 \
                     AND COALESCE(sub_id, '') = COALESCE($3, '') AND current = 1 RETURNING id",
                )
                .bind(order_id)
                .bind(&o.code)
                .bind(&o.sub_id)
                .fetch_all(&mut *tx)
                .await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO lab_observations (order_id, message_id, set_id, code, code_text, code_system, loinc, \
                     sub_id, value_type, value_text, value_num, units, reference_range, flags, status, observed_at, \
                     critical, current, received_at, replaces) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                     $12, $13, $14, $15, $16, $17, 1, $18, $19) RETURNING id",
                )
                .bind(order_id)
                .bind(message_id)
                .bind(&o.set_id)
                .bind(&o.code)
                .bind(&o.code_text)
                .bind(&o.code_system)
                .bind(&o.loinc)
                .bind(&o.sub_id)
                .bind(&o.value_type)
                .bind(&o.value_text)
                .bind(o.value_num)
                .bind(&o.units)
                .bind(&o.reference_range)
                .bind(o.flags.join("~"))
                .bind(&o.status)
                .bind(o.observed_at)
                .bind(i64::from(o.critical))
                .bind(now)
                .bind(replaced.into_iter().max())
                .fetch_one(&mut *tx)
                .await?;
                if o.critical {
                    critical_observations.push(id);
                }
            }
            let event = NewEvent {
                patient_id: Some(order.patient_id.clone()),
                exam_id: Some(exam_id),
                detail: Some(serde_json::json!({
                    "lab_order": order.order_key, "message": msg.control_id,
                    "observations": order.observations.len(), "critical": critical_observations.len(),
                })),
                ..audit.clone()
            };
            audit_append!(&mut *tx, &event, now).await?;
            stored_orders.push(StoredOrder {
                exam_id,
                order_id,
                created,
                critical_observations,
            });
        }
        tx.commit().await?;
        Ok(Ingest::Stored {
            orders: stored_orders,
        })
    })
}

/// A stored observation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// Row id.
    pub id: i64,
    /// Order.
    pub order_id: i64,
    /// Test code.
    pub code: String,
    /// Test name.
    pub code_text: Option<String>,
    /// Coding system.
    pub code_system: Option<String>,
    /// LOINC.
    pub loinc: Option<String>,
    /// OBX-4.
    pub sub_id: Option<String>,
    /// Value type.
    pub value_type: String,
    /// Value as text.
    pub value_text: String,
    /// Numeric value.
    pub value_num: Option<f64>,
    /// Units.
    pub units: Option<String>,
    /// Reference range.
    pub reference_range: Option<String>,
    /// Abnormal flags.
    pub flags: Vec<String>,
    /// Result status.
    pub status: Option<String>,
    /// Observation time, ms.
    pub observed_at: Option<i64>,
    /// Critical.
    pub critical: bool,
    /// Shown (false: replaced by a later result, kept as history).
    pub current: bool,
    /// Received at, ms.
    pub received_at: i64,
    /// The result this one replaced (a correction or a final after a preliminary).
    pub replaces: Option<i64>,
    /// The critical-alert version that covers this result.
    pub alert_id: Option<i64>,
}

impl Observation {
    /// The laboratory corrected a value it had sent (OBX-11 `C`).
    pub fn is_correction(&self) -> bool {
        self.replaces.is_some() && formats::critical::is_correction(self.status.as_deref())
    }
}

fn observation<R: Row>(r: &R) -> Result<Observation>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    f64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    observation_prefixed(r, "")
}

/// An observation from columns named `<prefix><column>`.
fn observation_prefixed<R: Row>(r: &R, prefix: &str) -> Result<Observation>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    f64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let flags: String = r.try_get(format!("{prefix}flags").as_str())?;
    let critical: i64 = r.try_get(format!("{prefix}critical").as_str())?;
    let current: i64 = r.try_get(format!("{prefix}current").as_str())?;
    Ok(Observation {
        id: r.try_get(format!("{prefix}id").as_str())?,
        order_id: r.try_get(format!("{prefix}order_id").as_str())?,
        code: r.try_get(format!("{prefix}code").as_str())?,
        code_text: r.try_get(format!("{prefix}code_text").as_str())?,
        code_system: r.try_get(format!("{prefix}code_system").as_str())?,
        loinc: r.try_get(format!("{prefix}loinc").as_str())?,
        sub_id: r.try_get(format!("{prefix}sub_id").as_str())?,
        value_type: r.try_get(format!("{prefix}value_type").as_str())?,
        value_text: r.try_get(format!("{prefix}value_text").as_str())?,
        value_num: r.try_get(format!("{prefix}value_num").as_str())?,
        units: r.try_get(format!("{prefix}units").as_str())?,
        reference_range: r.try_get(format!("{prefix}reference_range").as_str())?,
        flags: flags
            .split('~')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect(),
        status: r.try_get(format!("{prefix}status").as_str())?,
        observed_at: r.try_get(format!("{prefix}observed_at").as_str())?,
        critical: critical != 0,
        current: current != 0,
        received_at: r.try_get(format!("{prefix}received_at").as_str())?,
        replaces: r.try_get(format!("{prefix}replaces").as_str())?,
        alert_id: r.try_get(format!("{prefix}alert_id").as_str())?,
    })
}

const OBSERVATION_COLUMNS: &str = "x.id, x.order_id, x.code, x.code_text, x.code_system, x.loinc, x.sub_id, \
    x.value_type, x.value_text, x.value_num, x.units, x.reference_range, x.flags, x.status, x.observed_at, \
    x.critical, x.current, x.received_at, x.replaces, x.alert_id";

/// An order with its results, as the lab worklist shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    /// Order row id.
    pub id: i64,
    /// Its exam.
    pub exam_id: i64,
    /// Site.
    pub site: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient name.
    pub patient_name: Option<String>,
    /// Birth date.
    pub birth_date: Option<String>,
    /// Sex.
    pub sex: Option<String>,
    /// Placer number.
    pub placer_number: Option<String>,
    /// Filler number.
    pub filler_number: Option<String>,
    /// Test code.
    pub test_code: String,
    /// Test name.
    pub test_text: Option<String>,
    /// Test LOINC.
    pub test_loinc: Option<String>,
    /// Specimen time, ms.
    pub specimen_at: Option<i64>,
    /// Observation time, ms.
    pub observed_at: Option<i64>,
    /// Result status.
    pub result_status: Option<String>,
    /// Shown results.
    pub results: Vec<Observation>,
    /// Replaced results (history), oldest first.
    pub history: Vec<Observation>,
}

/// The order of a lab exam within `scope`, with current results and history.
pub async fn order_of_exam(db: &Db, scope: &ReadScope, exam_id: i64) -> Result<Option<Order>> {
    let mut params = Vec::new();
    let mut clauses = scope.exam_sql(&mut params, 2);
    clauses.push("o.exam_id = $1".into());
    let sql = format!(
        "SELECT o.id, o.exam_id, o.site, o.patient_id, o.patient_name, o.birth_date, o.sex, o.placer_number, \
         o.filler_number, o.test_code, o.test_text, o.test_loinc, o.specimen_at, o.observed_at, o.result_status \
         FROM lab_orders o JOIN exams e ON e.id = o.exam_id WHERE {}",
        clauses.join(" AND ")
    );
    let obs_sql = format!(
        "SELECT {OBSERVATION_COLUMNS} FROM lab_observations x WHERE x.order_id = $1 ORDER BY x.id"
    );
    on_db!(db, |pool| {
        // Audited: fixed SQL with numbered placeholders; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(exam_id);
        for p in &params {
            q = q.bind(p);
        }
        let Some(r) = q.fetch_optional(pool).await? else {
            return Ok(None);
        };
        let id: i64 = r.try_get("id")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(obs_sql))
            .bind(id)
            .fetch_all(pool)
            .await?;
        let all = rows.iter().map(observation).collect::<Result<Vec<_>>>()?;
        let (results, history) = all.into_iter().partition(|o| o.current);
        Ok(Some(Order {
            id,
            exam_id: r.try_get("exam_id")?,
            site: r.try_get("site")?,
            patient_id: r.try_get("patient_id")?,
            patient_name: r.try_get("patient_name")?,
            birth_date: r.try_get("birth_date")?,
            sex: r.try_get("sex")?,
            placer_number: r.try_get("placer_number")?,
            filler_number: r.try_get("filler_number")?,
            test_code: r.try_get("test_code")?,
            test_text: r.try_get("test_text")?,
            test_loinc: r.try_get("test_loinc")?,
            specimen_at: r.try_get("specimen_at")?,
            observed_at: r.try_get("observed_at")?,
            result_status: r.try_get("result_status")?,
            results,
            history,
        }))
    })
}

/// The patient's earlier shown results of the same tests (same site, other orders),
/// newest first, at most `per_test` per test code.
pub async fn previous_results(db: &Db, order: &Order, per_test: usize) -> Result<Vec<Observation>> {
    let sql = format!(
        "SELECT {OBSERVATION_COLUMNS} FROM lab_observations x JOIN lab_orders o ON o.id = x.order_id \
         WHERE o.site = $1 AND o.patient_id = $2 AND o.id <> $3 AND x.current = 1 \
         ORDER BY COALESCE(x.observed_at, x.received_at) DESC, x.id DESC LIMIT 500"
    );
    let rows: Vec<Observation> = on_db!(db, |pool| {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&order.site)
            .bind(&order.patient_id)
            .bind(order.id)
            .fetch_all(pool)
            .await?;
        rows.iter().map(observation).collect::<Result<Vec<_>>>()?
    });
    let codes: Vec<&str> = order.results.iter().map(|o| o.code.as_str()).collect();
    let mut taken: std::collections::HashMap<String, usize> = Default::default();
    Ok(rows
        .into_iter()
        .filter(|o| codes.contains(&o.code.as_str()))
        .filter(|o| {
            let n = taken.entry(o.code.clone()).or_default();
            *n += 1;
            *n <= per_test
        })
        .collect())
}
