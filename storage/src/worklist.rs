//! The reading worklist: deadlines, the ordered list, and claims.
//!
//! A claim is a lease on an exam row (`claimed_by`, `claimed_until`), taken by one
//! conditional UPDATE: the database decides the single winner, whichever hub process
//! the claimers reached, on SQLite and PostgreSQL alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit::{audit_append, NewEvent};
use crate::db::{on_db, Db};
use crate::exams::{record_event, ExamKind, Priority};
use crate::scope::ReadScope;
use crate::{now_ms, Result, StorageError};

/// Minutes from ready to deadline, per priority, with optional overrides per kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlineTargets {
    /// STAT target, minutes.
    pub stat_minutes: i64,
    /// Urgent target, minutes.
    pub urgent_minutes: i64,
    /// Routine target, minutes.
    pub routine_minutes: i64,
    /// Per kind (`imaging`, `ecg`, `lab`) and priority overrides, e.g.
    /// `[deadlines.by_kind.ecg] stat_minutes = 10`.
    pub by_kind: BTreeMap<String, KindTargets>,
}

/// Overrides for one exam kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindTargets {
    /// STAT target, minutes.
    pub stat_minutes: Option<i64>,
    /// Urgent target, minutes.
    pub urgent_minutes: Option<i64>,
    /// Routine target, minutes.
    pub routine_minutes: Option<i64>,
}

impl Default for DeadlineTargets {
    fn default() -> Self {
        DeadlineTargets {
            stat_minutes: 30,
            urgent_minutes: 120,
            routine_minutes: 24 * 60,
            by_kind: BTreeMap::new(),
        }
    }
}

/// A change an administrator asks for: only the targets it names change, the others keep
/// the value in force (a misspelt name is refused, never taken as "use the default").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineChange {
    /// New STAT target, minutes.
    pub stat_minutes: Option<i64>,
    /// New urgent target, minutes.
    pub urgent_minutes: Option<i64>,
    /// New routine target, minutes.
    pub routine_minutes: Option<i64>,
    /// Per kind: new overrides (replacing that kind's), or `null` to remove them.
    #[serde(default)]
    pub by_kind: BTreeMap<String, Option<KindTargets>>,
}

impl DeadlineChange {
    /// The targets after this change is applied to `current`.
    pub fn apply(&self, current: &DeadlineTargets) -> DeadlineTargets {
        let mut next = current.clone();
        if let Some(m) = self.stat_minutes {
            next.stat_minutes = m;
        }
        if let Some(m) = self.urgent_minutes {
            next.urgent_minutes = m;
        }
        if let Some(m) = self.routine_minutes {
            next.routine_minutes = m;
        }
        for (kind, o) in &self.by_kind {
            match o {
                Some(o) => next.by_kind.insert(kind.clone(), o.clone()),
                None => next.by_kind.remove(kind),
            };
        }
        next
    }
}

impl DeadlineTargets {
    /// Milliseconds from ready to deadline for an exam of this kind and priority.
    pub fn target_ms(&self, kind: ExamKind, priority: Priority) -> i64 {
        let o = self.by_kind.get(kind.as_str());
        let minutes = match priority {
            Priority::Stat => o.and_then(|o| o.stat_minutes).unwrap_or(self.stat_minutes),
            Priority::Urgent => o
                .and_then(|o| o.urgent_minutes)
                .unwrap_or(self.urgent_minutes),
            Priority::Routine => o
                .and_then(|o| o.routine_minutes)
                .unwrap_or(self.routine_minutes),
        };
        minutes.max(1) * 60_000
    }
    /// Check the targets an administrator sets: every target 1 minute to 30 days, kinds
    /// known.
    pub fn validate(&self) -> Result<()> {
        const MAX_MINUTES: i64 = 30 * 24 * 60;
        let check = |what: &str, m: Option<i64>| match m {
            Some(m) if !(1..=MAX_MINUTES).contains(&m) => Err(StorageError::Invalid(format!(
                "{what} must be 1 to {MAX_MINUTES} minutes, not {m}"
            ))),
            _ => Ok(()),
        };
        check("stat_minutes", Some(self.stat_minutes))?;
        check("urgent_minutes", Some(self.urgent_minutes))?;
        check("routine_minutes", Some(self.routine_minutes))?;
        for (kind, o) in &self.by_kind {
            if ExamKind::parse(kind).is_none() {
                return Err(StorageError::Invalid(format!("unknown exam kind {kind:?}")));
            }
            check(&format!("{kind}.stat_minutes"), o.stat_minutes)?;
            check(&format!("{kind}.urgent_minutes"), o.urgent_minutes)?;
            check(&format!("{kind}.routine_minutes"), o.routine_minutes)?;
        }
        Ok(())
    }
}

const DEADLINES_KEY: &str = "deadlines";

/// The deadline targets in force: those an administrator set, else `configured` (the
/// hub's configuration). Read at each use, so every hub on the database applies a change
/// at once.
pub async fn deadline_targets(db: &Db, configured: &DeadlineTargets) -> Result<DeadlineTargets> {
    let value: Option<String> = on_db!(db, |pool| {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(DEADLINES_KEY)
            .fetch_optional(pool)
            .await
    })?;
    match value {
        None => Ok(configured.clone()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StorageError::Corrupt(format!("stored deadlines: {e}"))),
    }
}

/// Set the deadline targets (validated), audited in the same transaction. Exams already
/// waiting keep their deadline; the new targets apply to exams that become ready after.
pub async fn set_deadline_targets(
    db: &Db,
    targets: &DeadlineTargets,
    audit: &NewEvent,
) -> Result<()> {
    targets.validate()?;
    let value = serde_json::to_string(targets).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO settings (key, value, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET value = $2, updated_by = $3, updated_at = $4",
        )
        .bind(DEADLINES_KEY)
        .bind(&value)
        .bind(&audit.actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    })
}

/// Worklist filters; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these kinds (a reader's specialties).
    pub kinds: Option<Vec<ExamKind>>,
    /// Only this site.
    pub site: Option<String>,
    /// Only this modality.
    pub modality: Option<String>,
    /// Only these statuses; default: ready and preliminary (what is left to read).
    pub statuses: Option<Vec<String>>,
    /// Only this priority.
    pub priority: Option<Priority>,
    /// Patient ID, or a name prefix.
    pub patient: Option<String>,
    /// Received at or after (ms).
    pub from_ms: Option<i64>,
    /// Received before (ms).
    pub to_ms: Option<i64>,
    /// Most rows.
    pub limit: i64,
}

/// One worklist row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Exam id.
    pub id: i64,
    /// Kind.
    pub kind: ExamKind,
    /// Sending site.
    pub site: String,
    /// Modality.
    pub modality: Option<String>,
    /// Patient ID.
    pub patient_id: Option<String>,
    /// Patient name.
    pub patient_name: Option<String>,
    /// Study Instance UID (none for lab orders).
    pub study_uid: Option<String>,
    /// Accession number.
    pub accession_number: Option<String>,
    /// Study description.
    pub study_description: Option<String>,
    /// Priority.
    pub priority: String,
    /// Status.
    pub status: String,
    /// Instances.
    pub instance_count: i64,
    /// First instance received, ms.
    pub received_at: i64,
    /// Ready for reading, ms.
    pub ready_at: Option<i64>,
    /// Deadline, ms.
    pub deadline_at: Option<i64>,
    /// Seconds left until the deadline (negative: overdue).
    pub seconds_left: Option<i64>,
    /// Past its deadline and not final.
    pub overdue: bool,
    /// Login name of the claim holder, while the lease runs.
    pub claimed_by: Option<String>,
    /// Lease end, ms.
    pub claimed_until: Option<i64>,
}

const ITEM_SELECT: &str = concat!(
    "SELECT e.id, e.kind, e.site, e.modality, e.patient_id, e.patient_name, e.study_uid, ",
    crate::exams::accession_column!(),
    ", st.study_description, e.priority, e.status, COALESCE(st.num_instances, 0) AS num_instances, e.received_at, e.ready_at, \
    e.deadline_at, e.claimed_until, CASE WHEN e.claimed_until > $1 THEN u.username END AS holder \
    FROM exams e LEFT JOIN studies st ON st.study_uid = e.study_uid LEFT JOIN users u ON u.id = e.claimed_by"
);

fn item<R: Row>(r: &R, now: i64) -> Result<Item>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let kind: String = r.try_get("kind")?;
    let status: String = r.try_get("status")?;
    let deadline_at: Option<i64> = r.try_get("deadline_at")?;
    let holder: Option<String> = r.try_get("holder")?;
    let claimed_until: Option<i64> = r.try_get("claimed_until")?;
    Ok(Item {
        id: r.try_get("id")?,
        kind: ExamKind::parse(&kind)
            .ok_or_else(|| StorageError::Corrupt(format!("exam kind {kind:?}")))?,
        site: r.try_get("site")?,
        modality: r.try_get("modality")?,
        patient_id: r.try_get("patient_id")?,
        patient_name: r.try_get("patient_name")?,
        study_uid: r.try_get("study_uid")?,
        accession_number: r.try_get("accession_number")?,
        study_description: r.try_get("study_description")?,
        priority: r.try_get("priority")?,
        instance_count: r.try_get("num_instances")?,
        received_at: r.try_get("received_at")?,
        ready_at: r.try_get("ready_at")?,
        seconds_left: deadline_at.map(|d| (d - now).div_euclid(1000)),
        overdue: deadline_at.is_some_and(|d| d < now) && status != "final",
        deadline_at,
        status,
        claimed_until: holder.as_ref().and(claimed_until),
        claimed_by: holder,
    })
}

/// The worklist within `scope`: most urgent first, then by deadline.
pub async fn list(db: &Db, scope: &ReadScope, filter: &Filter) -> Result<Vec<Item>> {
    let now = now_ms();
    let mut params: Vec<String> = Vec::new();
    // $1 is the time (bound first, apart from the text parameters).
    let mut clauses = scope.exam_sql(&mut params, 2);
    let push = |clause: &str, value: String, params: &mut Vec<String>| {
        params.push(value);
        clause.replace('?', &format!("${}", params.len() + 1))
    };
    let statuses = filter
        .statuses
        .clone()
        .unwrap_or_else(|| vec!["ready".into(), "preliminary".into()]);
    let list: Vec<String> = statuses
        .into_iter()
        .map(|s| push("?", s, &mut params))
        .collect();
    clauses.push(format!("e.status IN ({})", list.join(", ")));
    if let Some(kinds) = &filter.kinds {
        let list: Vec<String> = kinds
            .iter()
            .map(|k| push("?", k.as_str().to_string(), &mut params))
            .collect();
        clauses.push(if list.is_empty() {
            "1 = 0".to_string()
        } else {
            format!("e.kind IN ({})", list.join(", "))
        });
    }
    if let Some(site) = &filter.site {
        clauses.push(push("e.site = ?", site.clone(), &mut params));
    }
    if let Some(modality) = &filter.modality {
        clauses.push(push("e.modality = ?", modality.clone(), &mut params));
    }
    if let Some(priority) = filter.priority {
        clauses.push(push(
            "e.priority = ?",
            priority.as_str().to_string(),
            &mut params,
        ));
    }
    if let Some(patient) = &filter.patient {
        let id = push("e.patient_id = ?", patient.clone(), &mut params);
        let name = push(
            "UPPER(e.patient_name) LIKE ?",
            format!("{}%", patient.to_uppercase()),
            &mut params,
        );
        clauses.push(format!("({id} OR {name})"));
    }
    let mut ints: Vec<i64> = vec![now];
    let int_clause = |clause: &str, v: i64, ints: &mut Vec<i64>| {
        ints.push(v);
        clause.to_string()
    };
    // Integer bounds come after the text parameters; numbered at the end.
    let mut int_clauses = Vec::new();
    if let Some(from) = filter.from_ms {
        int_clauses.push(int_clause("e.received_at >= ", from, &mut ints));
    }
    if let Some(to) = filter.to_ms {
        int_clauses.push(int_clause("e.received_at < ", to, &mut ints));
    }
    for (i, c) in int_clauses.into_iter().enumerate() {
        clauses.push(format!("{c}${}", params.len() + 2 + i));
    }
    let limit_n = params.len() + ints.len() + 1;
    let sql = format!(
        "{ITEM_SELECT} WHERE {} ORDER BY CASE e.priority WHEN 'stat' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END, \
         e.deadline_at, e.id LIMIT ${limit_n}",
        clauses.join(" AND ")
    );
    on_db!(db, |pool| {
        // Audited: fixed SQL with numbered placeholders; every value is bound in order:
        // $1 the time, then the text values, then the integer bounds, then the limit.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for p in &params {
            query = query.bind(p);
        }
        for i in &ints[1..] {
            query = query.bind(*i);
        }
        let rows = query
            .bind(filter.limit.clamp(1, 1000))
            .fetch_all(pool)
            .await?;
        rows.iter().map(|r| item(r, now)).collect()
    })
}

/// One exam as a worklist row, regardless of status (`None` outside the scope).
pub async fn get(db: &Db, scope: &ReadScope, exam_id: i64) -> Result<Option<Item>> {
    let now = now_ms();
    let mut params = Vec::new();
    let mut clauses = scope.exam_sql(&mut params, 3);
    clauses.push("e.id = $2".into());
    let sql = format!("{ITEM_SELECT} WHERE {}", clauses.join(" AND "));
    on_db!(db, |pool| {
        // Audited: fixed SQL with numbered placeholders; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(exam_id);
        for p in &params {
            query = query.bind(p);
        }
        let row = query.fetch_optional(pool).await?;
        row.map(|r| item(&r, now)).transpose()
    })
}

/// Result of a claim attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Claim {
    /// The caller holds the exam until then.
    Held {
        /// Lease end, ms.
        until: i64,
    },
    /// Someone else holds it.
    Taken {
        /// Their login name.
        by: String,
        /// Their lease end, ms.
        until: i64,
    },
    /// The exam is not waiting to be read (its status).
    NotClaimable {
        /// Current status.
        status: String,
    },
}

/// Latest time anything on the worklist changed (for live updates across processes).
pub async fn last_change(db: &Db) -> Result<i64> {
    on_db!(db, |pool| {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(updated_at) FROM exams")
            .fetch_one(pool)
            .await?;
        Ok(v.unwrap_or(0))
    })
}

/// Take (or renew, when already held by `user_id`) the lease on an exam.
///
/// `statuses` are the statuses the caller may claim in (a junior: `ready`; a senior:
/// `ready` and `preliminary`). `force` reassigns whatever the holder (admins).
pub async fn claim(
    db: &Db,
    exam_id: i64,
    user_id: i64,
    lease_ms: i64,
    statuses: &[&str],
    force: bool,
    audit: &NewEvent,
) -> Result<Claim> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    let until = now + lease_ms;
    let in_list = statuses
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "")))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE exams SET claimed_by = $1, claimed_until = $2, updated_at = $3 \
         WHERE id = $4 AND status IN ({in_list}) \
         AND ($5 = 1 OR claimed_by IS NULL OR claimed_until <= $3 OR claimed_by = $1)"
    );
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        // Audited: the status list is fixed text from the caller's code, quotes removed.
        let won = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(until)
            .bind(now)
            .bind(exam_id)
            .bind(i64::from(force))
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if won {
            let actor = audit.actor.as_str();
            record_event!(
                &mut *tx,
                exam_id,
                "claimed",
                actor,
                format!("lease until {until}"),
                now
            )
            .await?;
            let event = NewEvent {
                exam_id: Some(exam_id),
                detail: Some(serde_json::json!({ "claim": until, "force": force })),
                ..audit.clone()
            };
            audit_append!(&mut *tx, &event, now).await?;
            tx.commit().await?;
            return Ok(Claim::Held { until });
        }
        let row = sqlx::query(
            "SELECT e.status, e.claimed_until, u.username FROM exams e LEFT JOIN users u ON u.id = e.claimed_by \
             WHERE e.id = $1",
        )
        .bind(exam_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StorageError::NotFound(format!("exam {exam_id}")))?;
        let status: String = row.try_get("status")?;
        let until: Option<i64> = row.try_get("claimed_until")?;
        let by: Option<String> = row.try_get("username")?;
        Ok(match (by, until) {
            (Some(by), Some(until)) if until > now && statuses.contains(&status.as_str()) => {
                Claim::Taken { by, until }
            }
            _ => Claim::NotClaimable { status },
        })
    })
}

/// Give an exam back (only its holder can). Returns whether the caller held it.
pub async fn release(db: &Db, exam_id: i64, user_id: i64, audit: &NewEvent) -> Result<bool> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE exams SET claimed_by = NULL, claimed_until = NULL, updated_at = $1 \
             WHERE id = $2 AND claimed_by = $3 AND claimed_until > $1",
        )
        .bind(now)
        .bind(exam_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            record_event!(
                &mut *tx,
                exam_id,
                "released",
                audit.actor.as_str(),
                None::<String>,
                now
            )
            .await?;
            let event = NewEvent {
                exam_id: Some(exam_id),
                detail: Some(serde_json::json!({ "release": true })),
                ..audit.clone()
            };
            audit_append!(&mut *tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_change_touches_only_what_it_names() {
        let current = DeadlineTargets {
            stat_minutes: 15,
            by_kind: BTreeMap::from([(
                "ecg".to_string(),
                KindTargets {
                    stat_minutes: Some(10),
                    ..KindTargets::default()
                },
            )]),
            ..DeadlineTargets::default()
        };
        let change: DeadlineChange = serde_json::from_str(
            r#"{"urgent_minutes": 90, "by_kind": {"imaging": {"routine_minutes": 600}}}"#,
        )
        .expect("a partial change parses");
        let next = change.apply(&current);
        assert_eq!(next.stat_minutes, 15);
        assert_eq!(next.urgent_minutes, 90);
        assert_eq!(
            next.routine_minutes,
            DeadlineTargets::default().routine_minutes
        );
        assert_eq!(next.by_kind["ecg"].stat_minutes, Some(10));
        assert_eq!(next.by_kind["imaging"].routine_minutes, Some(600));
        let removal: DeadlineChange =
            serde_json::from_str(r#"{"by_kind": {"ecg": null}}"#).expect("a removal parses");
        assert!(!removal.apply(&next).by_kind.contains_key("ecg"));
    }

    #[test]
    fn misspelt_deadline_fields_are_refused() {
        for body in [
            r#"{"stat_minute": 5}"#,
            r#"{"by_kind": {"ecg": {"stat": 5}}}"#,
            r#"{"stat_minutes": "5"}"#,
        ] {
            assert!(
                serde_json::from_str::<DeadlineChange>(body).is_err(),
                "{body}"
            );
        }
        // The configuration file's `[deadlines]` uses the stored type: a typo there is an
        // error at start-up too, not a silent default.
        assert!(serde_json::from_str::<DeadlineTargets>(r#"{"stat_minute": 5}"#).is_err());
    }
}
