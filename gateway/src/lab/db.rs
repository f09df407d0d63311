//! The laboratory message table (migration `0003_lab.sql`): writes, executed by the
//! outbox's single group-committing writer (so a message is acknowledged AA only after
//! its row and bytes are committed with `synchronous=FULL`), and the reads the forwarder
//! and `gateway status` use.

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Row;

use crate::outbox::{OutboxError, QuarantineEntry, QuarantineKind, QuarantineSource};

/// An accepted message to record.
#[derive(Debug, Clone)]
pub struct NewLabMessage {
    /// MSH-10.
    pub control_id: String,
    /// Hex SHA-256 of `body`.
    pub sha256: String,
    /// The bytes exactly as received.
    pub body: Vec<u8>,
    /// MSH-9, e.g. `ORU^R01`.
    pub message_type: String,
    /// MSH-3.
    pub sending_application: Option<String>,
    /// MSH-4.
    pub sending_facility: Option<String>,
    /// PID-3.
    pub patient_id: Option<String>,
    /// Orders in the message.
    pub orders: i64,
    /// Observations in the message.
    pub observations: i64,
    /// A STAT order or a critical flag.
    pub urgent: bool,
    /// The sender's address.
    pub peer: String,
}

/// Writes to the laboratory message table.
#[derive(Debug, Clone)]
pub enum LabWrite {
    /// Record a received message (idempotent on MSH-10, see [`LabOutcome`]).
    Receive(Box<NewLabMessage>),
    /// The hub stored it (200).
    Delivered {
        /// Row id.
        id: i64,
        /// `stored` or `duplicate`, when the hub said.
        hub_status: Option<String>,
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
    /// Where the MLLP listener listens, or why it does not.
    Listener(String),
}

/// What a [`LabWrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabOutcome {
    /// Written.
    Done,
    /// A new message, pending as this row.
    Stored(i64),
    /// The same MSH-10 with identical bytes is already held (pending or delivered):
    /// nothing new recorded.
    Duplicate(i64),
    /// The same bytes had been rejected by the hub: pending again (the operator may have
    /// fixed what the hub objected to, and the laboratory sent the message again).
    Requeued(i64),
    /// The MSH-10 is known with other bytes: nothing recorded.
    Conflict {
        /// The row holding the first message.
        id: i64,
        /// When that one was received (ms).
        received_at: i64,
    },
}

impl LabOutcome {
    /// Whether the forwarder has something new to send.
    pub fn gives_work(&self) -> bool {
        matches!(self, LabOutcome::Stored(_) | LabOutcome::Requeued(_))
    }
}

/// Execute one write inside the committer's transaction.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    write: &LabWrite,
    now: i64,
) -> Result<LabOutcome, sqlx::Error> {
    match write {
        LabWrite::Receive(m) => receive(conn, m, now).await,
        LabWrite::Delivered { id, hub_status } => {
            // The hub has the bytes now; only their digest is needed from here on.
            sqlx::query(
                "UPDATE lab_messages SET state = 'delivered', delivered_at = ?, hub_status = ?,
                        body = x'', last_error = NULL
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(now)
            .bind(hub_status)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            Ok(LabOutcome::Done)
        }
        LabWrite::Retry {
            id,
            next_attempt_at,
            error,
        } => {
            sqlx::query(
                "UPDATE lab_messages SET attempts = attempts + 1, next_attempt_at = ?,
                        last_error = ?, last_error_at = ?
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(next_attempt_at)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            Ok(LabOutcome::Done)
        }
        LabWrite::Rejected {
            id,
            reason,
            quarantine_path,
        } => {
            let row = sqlx::query(
                "SELECT control_id, sha256, peer FROM lab_messages WHERE id = ? AND state = 'pending'",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else {
                return Ok(LabOutcome::Done);
            };
            // The quarantine file keeps the bytes; an unkept file keeps them here.
            sqlx::query(
                "UPDATE lab_messages SET state = 'rejected', last_error = ?, last_error_at = ?,
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
                calling_ae: row.try_get("peer")?,
                path: quarantine_path.clone(),
                source: QuarantineSource::Hub,
                reason: reason.clone(),
                kind: QuarantineKind::Hl7,
                control_id: row.try_get("control_id")?,
                sha256: row.try_get("sha256")?,
                ..QuarantineEntry::default()
            };
            crate::outbox::insert_quarantine(conn, &entry, now).await?;
            Ok(LabOutcome::Done)
        }
        LabWrite::Listener(text) => {
            sqlx::query("UPDATE lab_state SET listener = ? WHERE id = 1")
                .bind(text)
                .execute(&mut *conn)
                .await?;
            Ok(LabOutcome::Done)
        }
    }
}

async fn receive(
    conn: &mut SqliteConnection,
    m: &NewLabMessage,
    now: i64,
) -> Result<LabOutcome, sqlx::Error> {
    let existing =
        sqlx::query("SELECT id, sha256, state, received_at FROM lab_messages WHERE control_id = ?")
            .bind(&m.control_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(row) = existing {
        let id: i64 = row.try_get("id")?;
        let sha256: String = row.try_get("sha256")?;
        if sha256 != m.sha256 {
            return Ok(LabOutcome::Conflict {
                id,
                received_at: row.try_get("received_at")?,
            });
        }
        let state: String = row.try_get("state")?;
        if state != "rejected" {
            return Ok(LabOutcome::Duplicate(id));
        }
        sqlx::query(
            "UPDATE lab_messages SET state = 'pending', body = ?, attempts = 0,
                    next_attempt_at = ?, last_error = NULL, last_error_at = NULL, peer = ?
             WHERE id = ?",
        )
        .bind(&m.body)
        .bind(now)
        .bind(&m.peer)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        return Ok(LabOutcome::Requeued(id));
    }
    let id = sqlx::query(
        "INSERT INTO lab_messages (control_id, sha256, body, size, message_type,
                                   sending_application, sending_facility, patient_id, orders,
                                   observations, urgent, peer, state, next_attempt_at,
                                   received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
    )
    .bind(&m.control_id)
    .bind(&m.sha256)
    .bind(&m.body)
    .bind(m.body.len() as i64)
    .bind(&m.message_type)
    .bind(&m.sending_application)
    .bind(&m.sending_facility)
    .bind(&m.patient_id)
    .bind(m.orders)
    .bind(m.observations)
    .bind(i64::from(m.urgent))
    .bind(&m.peer)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .last_insert_rowid();
    Ok(LabOutcome::Stored(id))
}

/// The message at the head of the queue, as the forwarder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueLab {
    /// Row id.
    pub id: i64,
    /// MSH-10.
    pub control_id: String,
    /// The bytes to send.
    pub body: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

/// The oldest pending message, if it is due at `now`. Messages go strictly in the order
/// received, so nothing behind a waiting message is offered.
pub async fn due(pool: &SqlitePool, now: i64) -> Result<Option<DueLab>, OutboxError> {
    let row = sqlx::query(
        "SELECT id, control_id, body, attempts, next_attempt_at, sha256 FROM lab_messages
         WHERE state = 'pending' ORDER BY id LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if row.try_get::<i64, _>("next_attempt_at")? > now {
        return Ok(None);
    }
    Ok(Some(DueLab {
        id: row.try_get("id")?,
        control_id: row.try_get("control_id")?,
        body: row.try_get("body")?,
        attempts: row
            .try_get::<i64, _>("attempts")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        sha256: row.try_get("sha256")?,
    }))
}

/// Whether a message with these bytes was already quarantined on receipt (a sender
/// repeating a refused message is answered the same, but not recorded again).
pub async fn already_quarantined(pool: &SqlitePool, sha256: &str) -> Result<bool, OutboxError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM quarantine WHERE sha256 = ? AND kind = 'hl7' AND source = 'receive' LIMIT 1",
    )
    .bind(sha256)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

/// Whether the database has the laboratory tables (a read-only `gateway status` may look
/// at a database the running gateway has not migrated yet).
pub async fn tables_exist(pool: &SqlitePool) -> Result<bool, OutboxError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'lab_messages'",
    )
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}
