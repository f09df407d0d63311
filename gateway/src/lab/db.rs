//! The laboratory message table (migration `0003_lab.sql`): the writes of its own,
//! executed by the outbox's single group-committing writer (so a message is
//! acknowledged AA only after its row and bytes are committed with `synchronous=FULL`).
//! What the hub said about a message, the queue and the figures are the file lane's
//! ([`crate::filelane::db`]).

use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

/// An accepted message to record.
#[derive(Debug, Clone)]
pub struct NewLabMessage {
    /// MSH-10.
    pub control_id: String,
    /// What the message says, not how it was framed
    /// ([`formats::hl7::Message::content_digest`]): a re-send by another client is the
    /// same message.
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
    let existing = sqlx::query(
        "SELECT id, sha256, body, state, received_at FROM lab_messages WHERE control_id = ?",
    )
    .bind(&m.control_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = existing {
        let id: i64 = row.try_get("id")?;
        let sha256: String = row.try_get("sha256")?;
        // Rows stored by earlier releases hold the digest of the raw bytes: their
        // content's digest is computed from the kept body.
        let same = sha256 == m.sha256 || {
            let body: Vec<u8> = row.try_get("body")?;
            formats::hl7::parse(&body).is_ok_and(|old| old.content_digest() == m.sha256)
        };
        if !same {
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
