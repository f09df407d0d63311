//! Exams: one per study (imaging), the unit readers will work on. This issue creates
//! them and moves them from `receiving` to `ready`; the worklist builds on it.

use sqlx::Row;

use crate::audit::{audit_append, NewEvent};
use crate::db::{now_ms, on_db, Db};
use crate::scope::ReadScope;
use crate::Result;

stored_enum! {
    /// Exam priority: decides the order of the worklist and the deadline.
    Priority {
        /// Emergency (e.g. chest pain ECG, stroke CT): read first, shortest deadline.
        Stat = "stat",
        /// Urgent.
        Urgent = "urgent",
        /// Everything else.
        Routine = "routine",
    }
}

impl Priority {
    /// Parse the API form, in any case.
    pub fn parse_any(s: &str) -> Option<Self> {
        Priority::parse(&s.to_ascii_lowercase())
    }

    /// The higher of two priorities (a priority only ever rises).
    pub fn max(self, other: Priority) -> Priority {
        // Declaration order is most urgent first.
        std::cmp::min(self, other)
    }
}

stored_enum! {
    /// What kind of reading an exam needs; decides which readers see it.
    ExamKind {
        /// Images, read by radiology.
        Imaging = "imaging",
        /// Electrocardiograms, read by cardiology.
        Ecg = "ecg",
        /// Laboratory results, verified by the laboratory.
        Lab = "lab",
    }
}

impl ExamKind {
    /// The kind of exam an instance starts: waveforms recorded as ECG go to cardiology,
    /// everything else is imaging.
    pub fn of_instance(modality: Option<&str>, sop_class_uid: &str) -> Self {
        // PS3.4 waveform storage: 12-lead, general and ambulatory ECG.
        const ECG_CLASSES: [&str; 3] = [
            "1.2.840.10008.5.1.4.1.1.9.1.1",
            "1.2.840.10008.5.1.4.1.1.9.1.2",
            "1.2.840.10008.5.1.4.1.1.9.1.3",
        ];
        if modality == Some("ECG") || ECG_CLASSES.contains(&sop_class_uid) {
            ExamKind::Ecg
        } else {
            ExamKind::Imaging
        }
    }
}

/// An exam row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Exam {
    /// Exam id.
    pub id: i64,
    /// Study it covers (none for lab orders).
    pub study_uid: Option<String>,
    /// Site that sent it.
    pub site: String,
    /// What kind of reading it needs.
    pub kind: ExamKind,
    /// Modality of its first series.
    pub modality: Option<String>,
    /// Patient ID as sent.
    pub patient_id: Option<String>,
    /// Patient name as sent.
    pub patient_name: Option<String>,
    /// `stat` or `routine`.
    pub priority: String,
    /// Lifecycle status (`receiving`, `ready`, ...).
    pub status: String,
    /// First instance received (ms since epoch).
    pub received_at: i64,
    /// Became ready for reading (ms since epoch).
    pub ready_at: Option<i64>,
    /// Instances stored for its study.
    pub instance_count: i64,
}

/// Insert one lifecycle event inside the caller's transaction.
macro_rules! record_event {
    ($ex:expr, $exam_id:expr, $status:expr, $actor:expr, $detail:expr, $at:expr) => {
        sqlx::query("INSERT INTO exam_events (exam_id, status, actor, detail, at) VALUES ($1, $2, $3, $4, $5)")
            .bind($exam_id)
            .bind($status)
            .bind($actor)
            .bind($detail)
            .bind($at)
            .execute($ex)
    };
}
pub(crate) use record_event;

/// The exam's accession number as one SQL column (`e`: exams, `st`: its study): the
/// study's, or for a lab exam its order number (filler, else placer), so the critical
/// alert, the signed report and its PDF all name the same number.
macro_rules! accession_column {
    () => {
        "COALESCE(st.accession_number, (SELECT COALESCE(lo.filler_number, lo.placer_number) \
         FROM lab_orders lo WHERE lo.exam_id = e.id)) AS accession_number"
    };
}
pub(crate) use accession_column;

/// Result of a gateway's "study complete" notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The exam is (now) ready for reading.
    Ready(Exam),
    /// The hub has fewer instances than the gateway sent: not ready yet.
    Incomplete {
        /// Instances the hub has.
        stored: i64,
        /// Instances the gateway says it delivered.
        expected: i64,
    },
    /// No such study for this site.
    NotFound,
}

/// The exam query prefix; a macro so queries stay literal strings.
macro_rules! exam_select {
    () => {
        "SELECT e.id, e.study_uid, e.site, e.kind, e.modality, e.patient_id, e.patient_name, e.priority, e.status, \
         e.received_at, e.ready_at, COALESCE(st.num_instances, 0) AS num_instances FROM exams e LEFT JOIN studies st ON st.study_uid = e.study_uid"
    };
}

fn exam<R: Row>(r: &R) -> Result<Exam>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Exam {
        id: r.try_get("id")?,
        study_uid: r.try_get("study_uid")?,
        site: r.try_get("site")?,
        kind: {
            let kind: String = r.try_get("kind")?;
            ExamKind::parse(&kind).ok_or_else(|| {
                crate::StorageError::Corrupt(format!("unknown exam kind {kind:?}"))
            })?
        },
        modality: r.try_get("modality")?,
        patient_id: r.try_get("patient_id")?,
        patient_name: r.try_get("patient_name")?,
        priority: r.try_get("priority")?,
        status: r.try_get("status")?,
        received_at: r.try_get("received_at")?,
        ready_at: r.try_get("ready_at")?,
        instance_count: r.try_get("num_instances")?,
    })
}

/// The exam of a study, if any.
pub async fn by_study(db: &Db, study_uid: &str) -> Result<Option<Exam>> {
    let sql = concat!(exam_select!(), " WHERE e.study_uid = $1");
    on_db!(db, |pool| {
        let row = sqlx::query(sql)
            .bind(study_uid)
            .fetch_optional(pool)
            .await?;
        row.map(|r| exam(&r)).transpose()
    })
}

/// Exams within `scope`, newest first (for status pages until the worklist exists),
/// optionally only the one of a study.
pub async fn list(
    db: &Db,
    scope: &ReadScope,
    study_uid: Option<&str>,
    limit: i64,
) -> Result<Vec<Exam>> {
    let mut params: Vec<String> = Vec::new();
    let mut clauses = scope.exam_sql(&mut params, 1);
    if let Some(uid) = study_uid {
        params.push(uid.to_string());
        clauses.push(format!("e.study_uid = ${}", params.len()));
    }
    let where_sql = if clauses.is_empty() {
        "1 = 1".to_string()
    } else {
        clauses.join(" AND ")
    };
    let sql = format!(
        "{} WHERE {where_sql} ORDER BY e.received_at DESC, e.id DESC LIMIT ${}",
        exam_select!(),
        params.len() + 1
    );
    on_db!(db, |pool| {
        // Audited: fixed SQL with numbered placeholders; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in &params {
            query = query.bind(p);
        }
        let rows = query.bind(limit).fetch_all(pool).await?;
        rows.iter().map(exam).collect()
    })
}

/// A site's gateway says the study is complete (association closed, quiet period over).
///
/// The exam becomes `ready` with the given priority when the hub holds at least the
/// instances the gateway delivered. Idempotent: a repeated notice changes nothing.
pub async fn complete_study(
    db: &Db,
    site: &str,
    study_uid: &str,
    priority: Priority,
    expected_instances: i64,
    targets: &crate::worklist::DeadlineTargets,
    audit: &NewEvent,
) -> Result<Completion> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    let select = concat!(exam_select!(), " WHERE e.study_uid = $1");
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let Some(row) = sqlx::query(select)
            .bind(study_uid)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Completion::NotFound);
        };
        let current = exam(&row)?;
        if current.site != site {
            // Another site's study: answer as if it did not exist.
            return Ok(Completion::NotFound);
        }
        if current.instance_count < expected_instances {
            return Ok(Completion::Incomplete {
                stored: current.instance_count,
                expected: expected_instances,
            });
        }
        // Priority only ever rises: a STAT notice on a routine exam escalates it.
        let was = Priority::parse(&current.priority).unwrap_or(Priority::Routine);
        let priority = priority.max(was);
        let deadline = now + targets.target_ms(current.kind, priority);
        let became_ready = sqlx::query(
            "UPDATE exams SET status = 'ready', priority = $1, ready_at = $2, updated_at = $2, deadline_at = $4 \
             WHERE id = $3 AND status = 'receiving'",
        )
        .bind(priority.as_str())
        .bind(now)
        .bind(current.id)
        .bind(deadline)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if became_ready {
            let detail = format!(
                "study complete, {expected_instances} instances, {}",
                priority.as_str()
            );
            record_event!(
                &mut *tx,
                current.id,
                "ready",
                audit.actor.as_str(),
                &detail,
                now
            )
            .await?;
            let event = NewEvent {
                patient_id: current.patient_id.clone(),
                study_uid: current.study_uid.clone(),
                exam_id: Some(current.id),
                detail: Some(serde_json::json!({ "status": "ready", "detail": detail })),
                ..audit.clone()
            };
            audit_append!(&mut *tx, &event, now).await?;
        } else if priority != was {
            // Escalated after it became ready: the deadline moves forward from ready time.
            sqlx::query(
                "UPDATE exams SET priority = $1, updated_at = $2, \
                 deadline_at = COALESCE(ready_at, $2) + $4 WHERE id = $3",
            )
            .bind(priority.as_str())
            .bind(now)
            .bind(current.id)
            .bind(targets.target_ms(current.kind, priority))
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(select)
            .bind(study_uid)
            .fetch_one(&mut *tx)
            .await?;
        let updated = exam(&row)?;
        tx.commit().await?;
        Ok(Completion::Ready(updated))
    })
}

/// Lifecycle events of an exam, oldest first: (status, actor, detail, at).
pub async fn events(db: &Db, exam_id: i64) -> Result<Vec<(String, String, Option<String>, i64)>> {
    on_db!(db, |pool| {
        let rows = sqlx::query_as(
            "SELECT status, actor, detail, at FROM exam_events WHERE exam_id = $1 ORDER BY at, id",
        )
        .bind(exam_id)
        .fetch_all(pool)
        .await?;
        Ok(rows)
    })
}

/// Raise an exam to STAT after the fact (e.g. an automatic ECG finding suggests an
/// emergency): the deadline is recomputed from the ready time. Returns whether it rose.
pub async fn make_stat(
    db: &Db,
    exam_id: i64,
    targets: &crate::worklist::DeadlineTargets,
    why: &str,
    audit: &NewEvent,
) -> Result<bool> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let kind: Option<String> =
            sqlx::query_scalar("SELECT kind FROM exams WHERE id = $1 AND priority <> 'stat'")
                .bind(exam_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(kind) = kind.as_deref().and_then(ExamKind::parse) else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE exams SET priority = 'stat', updated_at = $1, deadline_at = COALESCE(ready_at, $1) + $2 WHERE id = $3",
        )
        .bind(now)
        .bind(targets.target_ms(kind, Priority::Stat))
        .bind(exam_id)
        .execute(&mut *tx)
        .await?;
        record_event!(&mut *tx, exam_id, "stat", audit.actor.as_str(), why, now).await?;
        let event = NewEvent {
            exam_id: Some(exam_id),
            detail: Some(serde_json::json!({ "priority": "stat", "why": why })),
            ..audit.clone()
        };
        audit_append!(&mut *tx, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    })
}
