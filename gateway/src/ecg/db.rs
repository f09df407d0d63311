//! The ECG file table (migration `0004_ecg.sql`): the writes of its own, executed by
//! the outbox's single group-committing writer (so a file leaves the import folder only
//! after its row and bytes are committed with `synchronous=FULL`). What the hub said
//! about a file, the queue and the figures are the file lane's
//! ([`crate::filelane::db`]).

use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

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
