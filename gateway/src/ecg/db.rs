//! The ECG file table (migration `0004_ecg.sql`): writes, executed by the outbox's single
//! group-committing writer (so a file leaves the import folder only after its row and
//! bytes are committed with `synchronous=FULL`), and the reads the forwarder and
//! `gateway status` use.

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Row;

use crate::outbox::{OutboxError, QuarantineEntry, QuarantineKind, QuarantineSource};

/// A parsed file to record.
#[derive(Debug, Clone)]
pub struct NewEcgFile {
    /// Hex SHA-256 of `body`.
    pub sha256: String,
    /// The file exactly as found in the import folder.
    pub body: Vec<u8>,
    /// Its name in the folder (without `stat/`).
    pub file_name: String,
    /// `SCP-ECG`, `aECG` or `DICOM ECG`.
    pub format: String,
    /// Leads, derived limb leads included.
    pub leads: i64,
    /// Length of the recording in milliseconds.
    pub duration_ms: i64,
    /// Patient ID as the file gives it.
    pub patient_id: Option<String>,
    /// Patient name as the file gives it.
    pub patient_name: Option<String>,
    /// STAT.
    pub stat: bool,
}

/// Writes to the ECG file table.
#[derive(Debug, Clone)]
pub enum EcgWrite {
    /// Record an imported file (idempotent on the SHA-256, see [`EcgOutcome`]).
    Receive(Box<NewEcgFile>),
    /// The hub stored it (200).
    Delivered {
        /// Row id.
        id: i64,
        /// `stored` or `duplicate`, when the hub said.
        hub_status: Option<String>,
        /// The hub's exam id, when it said.
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
    /// The hub cannot use it (400/409): quarantined with the hub's reason.
    Rejected {
        /// Row id.
        id: i64,
        /// What the hub said.
        reason: String,
        /// The quarantine file holding the bytes.
        quarantine_path: Option<String>,
    },
    /// The folder being watched (`import_dir`), or why none is (`note`).
    Folder {
        /// The watched folder.
        import_dir: Option<String>,
        /// Why no folder is watched.
        note: Option<String>,
    },
}

/// What an [`EcgWrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcgOutcome {
    /// Written.
    Done,
    /// A new file, pending as this row.
    Stored(i64),
    /// The same bytes are already held (pending or delivered): nothing new recorded,
    /// except that a pending routine file imported again as STAT becomes STAT.
    Duplicate {
        /// The row holding them.
        id: i64,
        /// Its state (`pending` or `delivered`).
        state: String,
        /// Whether it was made STAT by this import.
        made_stat: bool,
    },
    /// The same bytes were rejected by the hub before: pending again (the cause may have
    /// been fixed at the hub, and someone imported the file again).
    Requeued(i64),
}

impl EcgOutcome {
    /// Whether the forwarder has something new to send.
    pub fn gives_work(&self) -> bool {
        matches!(
            self,
            EcgOutcome::Stored(_)
                | EcgOutcome::Requeued(_)
                | EcgOutcome::Duplicate {
                    made_stat: true,
                    ..
                }
        )
    }
}

/// Execute one write inside the committer's transaction.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    write: &EcgWrite,
    now: i64,
) -> Result<EcgOutcome, sqlx::Error> {
    match write {
        EcgWrite::Receive(file) => receive(conn, file, now).await,
        EcgWrite::Delivered {
            id,
            hub_status,
            exam_id,
        } => {
            // The hub keeps the original now; only its digest is needed from here on.
            sqlx::query(
                "UPDATE ecg_files SET state = 'delivered', delivered_at = ?, hub_status = ?,
                        exam_id = ?, body = x'', last_error = NULL
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(now)
            .bind(hub_status)
            .bind(exam_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            Ok(EcgOutcome::Done)
        }
        EcgWrite::Retry {
            id,
            next_attempt_at,
            error,
        } => {
            sqlx::query(
                "UPDATE ecg_files SET attempts = attempts + 1, next_attempt_at = ?,
                        last_error = ?, last_error_at = ?
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(next_attempt_at)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            Ok(EcgOutcome::Done)
        }
        EcgWrite::Rejected {
            id,
            reason,
            quarantine_path,
        } => {
            let row = sqlx::query(
                "SELECT sha256, file_name FROM ecg_files WHERE id = ? AND state = 'pending'",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else {
                return Ok(EcgOutcome::Done);
            };
            // The quarantine file keeps the bytes; without one they stay here.
            sqlx::query(
                "UPDATE ecg_files SET state = 'rejected', last_error = ?, last_error_at = ?,
                        body = CASE WHEN ? IS NULL THEN body ELSE x'' END
                 WHERE id = ?",
            )
            .bind(reason)
            .bind(now)
            .bind(quarantine_path)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            let entry = QuarantineEntry {
                path: quarantine_path.clone(),
                source: QuarantineSource::Hub,
                reason: reason.clone(),
                kind: QuarantineKind::Ecg,
                sha256: row.try_get("sha256")?,
                file_name: row.try_get("file_name")?,
                ..QuarantineEntry::default()
            };
            crate::outbox::insert_quarantine(conn, &entry, now).await?;
            Ok(EcgOutcome::Done)
        }
        EcgWrite::Folder { import_dir, note } => {
            sqlx::query("UPDATE ecg_state SET import_dir = ?, note = ? WHERE id = 1")
                .bind(import_dir)
                .bind(note)
                .execute(&mut *conn)
                .await?;
            Ok(EcgOutcome::Done)
        }
    }
}

async fn receive(
    conn: &mut SqliteConnection,
    f: &NewEcgFile,
    now: i64,
) -> Result<EcgOutcome, sqlx::Error> {
    let existing = sqlx::query("SELECT id, state, stat FROM ecg_files WHERE sha256 = ?")
        .bind(&f.sha256)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = existing {
        let id: i64 = row.try_get("id")?;
        let state: String = row.try_get("state")?;
        let was_stat = row.try_get::<i64, _>("stat")? != 0;
        if state == "rejected" {
            sqlx::query(
                "UPDATE ecg_files SET state = 'pending', body = ?, attempts = 0,
                        next_attempt_at = ?, last_error = NULL, last_error_at = NULL,
                        stat = MAX(stat, ?)
                 WHERE id = ?",
            )
            .bind(&f.body)
            .bind(now)
            .bind(i64::from(f.stat))
            .bind(id)
            .execute(&mut *conn)
            .await?;
            return Ok(EcgOutcome::Requeued(id));
        }
        // A routine recording someone re-imports as STAT while it still waits: the
        // urgency is real, the bytes are the same.
        let made_stat = state == "pending" && f.stat && !was_stat;
        if made_stat {
            sqlx::query("UPDATE ecg_files SET stat = 1 WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        return Ok(EcgOutcome::Duplicate {
            id,
            state,
            made_stat,
        });
    }
    let id = sqlx::query(
        "INSERT INTO ecg_files (sha256, body, size, file_name, format, leads, duration_ms,
                                patient_id, patient_name, stat, state, next_attempt_at,
                                received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
    )
    .bind(&f.sha256)
    .bind(&f.body)
    .bind(f.body.len() as i64)
    .bind(&f.file_name)
    .bind(&f.format)
    .bind(f.leads)
    .bind(f.duration_ms)
    .bind(&f.patient_id)
    .bind(&f.patient_name)
    .bind(i64::from(f.stat))
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .last_insert_rowid();
    Ok(EcgOutcome::Stored(id))
}

/// The file the forwarder sends next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEcg {
    /// Row id.
    pub id: i64,
    /// Original name.
    pub file_name: String,
    /// Format (for the quarantine file's extension).
    pub format: String,
    /// The bytes to send.
    pub body: Vec<u8>,
    /// STAT.
    pub stat: bool,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// The pending file due at `now` that goes first: STAT before routine, then oldest.
/// ECG files are independent recordings, so one waiting for its retry does not hold
/// the others back.
pub async fn due(pool: &SqlitePool, now: i64) -> Result<Option<DueEcg>, OutboxError> {
    let row = sqlx::query(
        "SELECT id, file_name, format, body, stat, attempts FROM ecg_files
         WHERE state = 'pending' AND next_attempt_at <= ?
         ORDER BY stat DESC, id LIMIT 1",
    )
    .bind(now)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(DueEcg {
        id: row.try_get("id")?,
        file_name: row.try_get("file_name")?,
        format: row.try_get("format")?,
        body: row.try_get("body")?,
        stat: row.try_get::<i64, _>("stat")? != 0,
        attempts: row
            .try_get::<i64, _>("attempts")?
            .clamp(0, i64::from(u32::MAX)) as u32,
    }))
}

/// Whether these bytes were already quarantined on import (a file dropped again is
/// removed from the folder without a second entry).
pub async fn already_quarantined(pool: &SqlitePool, sha256: &str) -> Result<bool, OutboxError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM quarantine WHERE sha256 = ? AND kind = 'ecg' AND source = 'receive' LIMIT 1",
    )
    .bind(sha256)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

/// Whether the database has the ECG tables (a read-only `gateway status` may look at a
/// database the running gateway has not migrated yet).
pub async fn tables_exist(pool: &SqlitePool) -> Result<bool, OutboxError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'ecg_files'",
    )
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}
