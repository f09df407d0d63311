//! The durable operations a file lane's table shares (migrations `0003_lab.sql` and
//! `0004_ecg.sql`): the item due next, the hub's verdict recorded (delivered, retry,
//! rejected into the quarantine), and the figures `gateway status` shows. Writes run
//! inside the outbox's single group-committing writer; reads use the read pool.

use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::Row;

use super::FileLane;
use crate::outbox::{OutboxError, QuarantineEntry, QuarantineSource};

/// SQL assembled from a lane's [`super::Table`]: its names are compile-time constants,
/// never input, and every value is bound.
fn safe(sql: &str) -> sqlx::AssertSqlSafe<&str> {
    sqlx::AssertSqlSafe(sql)
}

/// What the hub said about one item, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The hub stored it (200).
    Delivered {
        /// Row id.
        id: i64,
        /// `stored` or `duplicate`, when the hub said.
        hub_status: Option<String>,
        /// The hub's exam id, when it said (kept where the table has a place for it).
        exam_id: Option<i64>,
    },
    /// Not now: try again at `next_attempt_at`.
    Retry {
        /// Row id.
        id: i64,
        /// When (ms).
        next_attempt_at: i64,
        /// What went wrong.
        error: String,
    },
    /// The hub refused it for good (400/409): quarantined with the hub's reason.
    Rejected {
        /// Row id.
        id: i64,
        /// What the hub said.
        reason: String,
        /// The quarantine file holding the bytes.
        quarantine_path: Option<String>,
    },
}

/// Record a [`Delivery`] inside the committer's transaction. Only a pending row
/// changes: a verdict arriving for an item already settled is dropped.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    lane: FileLane,
    delivery: &Delivery,
    now: i64,
) -> Result<(), sqlx::Error> {
    let t = lane.table();
    match delivery {
        Delivery::Delivered {
            id,
            hub_status,
            exam_id,
        } => {
            // The hub has the bytes now; only their digest is needed from here on.
            let exam = if t.records_exam { "exam_id = ?," } else { "" };
            let sql = format!(
                "UPDATE {} SET state = 'delivered', delivered_at = ?, hub_status = ?, {exam}
                        body = x'', last_error = NULL
                 WHERE id = ? AND state = 'pending'",
                t.name
            );
            let mut query = sqlx::query(safe(&sql)).bind(now).bind(hub_status);
            if t.records_exam {
                query = query.bind(exam_id);
            }
            query.bind(id).execute(&mut *conn).await?;
        }
        Delivery::Retry {
            id,
            next_attempt_at,
            error,
        } => {
            let sql = format!(
                "UPDATE {} SET attempts = attempts + 1, next_attempt_at = ?,
                        last_error = ?, last_error_at = ?
                 WHERE id = ? AND state = 'pending'",
                t.name
            );
            sqlx::query(safe(&sql))
                .bind(next_attempt_at)
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        Delivery::Rejected {
            id,
            reason,
            quarantine_path,
        } => reject(conn, lane, *id, reason, quarantine_path.as_deref(), now).await?,
    }
    Ok(())
}

async fn reject(
    conn: &mut SqliteConnection,
    lane: FileLane,
    id: i64,
    reason: &str,
    quarantine_path: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let t = lane.table();
    let sql = format!(
        "SELECT {} FROM {} WHERE id = ? AND state = 'pending'",
        t.quarantine_columns, t.name
    );
    let Some(row) = sqlx::query(safe(&sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(());
    };
    // The quarantine file keeps the bytes; without one they stay here.
    let sql = format!(
        "UPDATE {} SET state = 'rejected', last_error = ?, last_error_at = ?,
                body = CASE WHEN ? IS NULL THEN body ELSE x'' END
         WHERE id = ?",
        t.name
    );
    sqlx::query(safe(&sql))
        .bind(reason)
        .bind(now)
        .bind(quarantine_path)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let entry = QuarantineEntry {
        control_id: row.try_get(0)?,
        sha256: row.try_get(1)?,
        calling_ae: row.try_get(2)?,
        file_name: row.try_get(3)?,
        path: quarantine_path.map(str::to_string),
        source: QuarantineSource::Hub,
        reason: reason.to_string(),
        kind: t.kind,
        ..QuarantineEntry::default()
    };
    crate::outbox::insert_quarantine(conn, &entry, now).await
}

/// The item the forwarder sends next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueFile {
    /// Row id.
    pub id: i64,
    /// What names it (MSH-10, the file's original name).
    pub name: String,
    /// The bytes to send.
    pub body: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Urgent (a STAT ECG; a lab message with a STAT order or critical flag).
    pub urgent: bool,
    /// Its format, where the lane has several (for the quarantine file's extension).
    pub format: Option<String>,
}

/// The item due at `now` that goes next: in a lane kept in order, the oldest pending
/// item if it is due (nothing behind a waiting one is offered); otherwise the due item
/// that is urgent first, then oldest (independent items: one waiting for its retry
/// does not hold the others back).
pub async fn due(
    pool: &SqlitePool,
    lane: FileLane,
    now: i64,
) -> Result<Option<DueFile>, OutboxError> {
    let t = lane.table();
    let columns = format!(
        "id, {} AS name, body, attempts, next_attempt_at, {} AS urgent, {} AS format",
        t.name_column, t.urgent_column, t.format_column
    );
    let row = if t.in_order {
        let sql = format!(
            "SELECT {columns} FROM {} WHERE state = 'pending' ORDER BY id LIMIT 1",
            t.name
        );
        sqlx::query(safe(&sql)).fetch_optional(pool).await?
    } else {
        let sql = format!(
            "SELECT {columns} FROM {} WHERE state = 'pending' AND next_attempt_at <= ?
             ORDER BY {} DESC, id LIMIT 1",
            t.name, t.urgent_column
        );
        sqlx::query(safe(&sql))
            .bind(now)
            .fetch_optional(pool)
            .await?
    };
    let Some(row) = row else { return Ok(None) };
    if row.try_get::<i64, _>("next_attempt_at")? > now {
        return Ok(None);
    }
    Ok(Some(DueFile {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        body: row.try_get("body")?,
        attempts: row
            .try_get::<i64, _>("attempts")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        urgent: row.try_get::<i64, _>("urgent")? != 0,
        format: row.try_get("format")?,
    }))
}

/// Whether these bytes were already quarantined on receipt (a sender repeating a
/// refused item is answered the same, but it is not recorded again).
pub async fn already_quarantined(
    pool: &SqlitePool,
    lane: FileLane,
    sha256: &str,
) -> Result<bool, OutboxError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM quarantine WHERE sha256 = ? AND kind = ? AND source = 'receive' LIMIT 1",
    )
    .bind(sha256)
    .bind(lane.table().kind.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

/// Whether the database has the lane's table (a read-only `gateway status` may look
/// at a database the running gateway has not migrated yet).
pub async fn table_exists(pool: &SqlitePool, lane: FileLane) -> Result<bool, OutboxError> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(lane.table().name)
            .fetch_one(pool)
            .await?;
    Ok(n > 0)
}

/// A lane's figures for `gateway status` and the township page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Items recorded (distinct), whatever their state.
    pub total: i64,
    /// Waiting for the hub.
    pub waiting: i64,
    /// Of which urgent.
    pub waiting_urgent: i64,
    /// Stored by the hub.
    pub delivered: i64,
    /// Rejected by the hub.
    pub rejected_by_hub: i64,
    /// Refused on receipt (quarantined without a row of the lane's table).
    pub refused: i64,
    /// The item waiting longest (in a lane kept in order, the head of the queue).
    pub oldest_waiting: Option<OldestFile>,
    /// The most recent delivery error of a waiting item.
    pub last_error: Option<FileError>,
}

/// The item waiting longest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldestFile {
    /// What names it.
    pub name: String,
    /// Patient ID, when known.
    pub patient_id: Option<String>,
    /// Urgent.
    pub urgent: bool,
    /// When it was received (ms).
    pub received_at: i64,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// The most recent delivery error of a waiting item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// When (ms; 0 when unknown).
    pub at: i64,
    /// What names the item.
    pub name: String,
    /// What went wrong.
    pub error: String,
}

/// Read a lane's [`Figures`].
pub async fn figures(pool: &SqlitePool, lane: FileLane) -> Result<Figures, OutboxError> {
    let t = lane.table();
    let sql = format!(
        "SELECT COUNT(*), COALESCE(SUM(state = 'pending'), 0),
                COALESCE(SUM(state = 'pending' AND {} = 1), 0),
                COALESCE(SUM(state = 'delivered'), 0), COALESCE(SUM(state = 'rejected'), 0)
         FROM {}",
        t.urgent_column, t.name
    );
    let counts = sqlx::query(safe(&sql)).fetch_one(pool).await?;
    // The head of an ordered queue is what holds the others up; elsewhere the item
    // received first.
    let order = if t.in_order { "id" } else { "received_at, id" };
    let sql = format!(
        "SELECT {}, patient_id, {}, received_at, attempts FROM {}
         WHERE state = 'pending' ORDER BY {order} LIMIT 1",
        t.name_column, t.urgent_column, t.name
    );
    let oldest_waiting = sqlx::query(safe(&sql))
        .fetch_optional(pool)
        .await?
        .map(|r: SqliteRow| -> Result<OldestFile, sqlx::Error> {
            Ok(OldestFile {
                name: r.try_get(0)?,
                patient_id: r.try_get(1)?,
                urgent: r.try_get::<i64, _>(2)? != 0,
                received_at: r.try_get(3)?,
                attempts: r.try_get(4)?,
            })
        })
        .transpose()?;
    let sql = format!(
        "SELECT last_error_at, {}, last_error FROM {}
         WHERE state = 'pending' AND last_error IS NOT NULL
         ORDER BY last_error_at DESC LIMIT 1",
        t.name_column, t.name
    );
    let last_error = sqlx::query(safe(&sql))
        .fetch_optional(pool)
        .await?
        .map(|r: SqliteRow| -> Result<FileError, sqlx::Error> {
            Ok(FileError {
                at: r.try_get::<Option<i64>, _>(0)?.unwrap_or(0),
                name: r.try_get(1)?,
                error: r.try_get(2)?,
            })
        })
        .transpose()?;
    let refused: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM quarantine WHERE kind = ? AND source = 'receive'")
            .bind(t.kind.as_str())
            .fetch_one(pool)
            .await?;
    Ok(Figures {
        total: counts.try_get(0)?,
        waiting: counts.try_get(1)?,
        waiting_urgent: counts.try_get(2)?,
        delivered: counts.try_get(3)?,
        rejected_by_hub: counts.try_get(4)?,
        refused,
        oldest_waiting,
        last_error,
    })
}
