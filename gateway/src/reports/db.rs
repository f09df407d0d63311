//! The report tables (migration `0002_reports.sql`): the writes, which go through the
//! outbox's single group-committing writer (so a report is acknowledged to the hub only
//! after its row is committed with `synchronous=FULL`), and the reads, which use the
//! outbox's read pool.

use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::Row;

use crate::outbox::OutboxError;

/// Our answer to the hub for one delivery item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Verified and durably stored.
    Stored,
    /// Failed verification (or unusable): kept aside, never shown as valid.
    Rejected,
}

impl AckStatus {
    /// As the delivery contract spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Stored => "stored",
            AckStatus::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> AckStatus {
        if s == "stored" {
            AckStatus::Stored
        } else {
            AckStatus::Rejected
        }
    }
}

/// The exam fields kept for listing (from the payload; untrusted when unverified).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExamFields {
    /// `imaging`, `ecg`, `lab`.
    pub kind: Option<String>,
    /// Site that sent the exam.
    pub site: Option<String>,
    /// Patient ID.
    pub patient_id: Option<String>,
    /// Patient name.
    pub patient_name: Option<String>,
    /// Study Instance UID.
    pub study_uid: Option<String>,
    /// Accession number.
    pub accession_number: Option<String>,
    /// Modality.
    pub modality: Option<String>,
}

/// A report version as received, judged, ready to be recorded.
#[derive(Debug, Clone)]
pub struct ReceivedVersion {
    /// Report id.
    pub report_id: String,
    /// Version.
    pub version: i64,
    /// preliminary / final / amended.
    pub status: String,
    /// Critical finding.
    pub critical: bool,
    /// Exam fields.
    pub exam: ExamFields,
    /// Amendment reason.
    pub reason: Option<String>,
    /// Signer's printed name.
    pub signer_name: Option<String>,
    /// When it was signed (hub clock, ms).
    pub signed_at: Option<i64>,
    /// The canonical payload text exactly as received.
    pub payload: String,
    /// The signature as received.
    pub signature: String,
    /// The key id as received.
    pub key_id: String,
    /// Whether it verified.
    pub verified: bool,
    /// Why not.
    pub verify_error: Option<String>,
}

/// One delivery item to record.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The hub's cursor of the item.
    pub cursor: i64,
    /// Report id the envelope names.
    pub report_id: Option<String>,
    /// Version the envelope names.
    pub version: Option<i64>,
    /// The report version, when the item carried one.
    pub received: Option<ReceivedVersion>,
    /// Why an item without a usable report is refused.
    pub reject_reason: Option<String>,
    /// Delay before the background sender takes over the ack (and PDF fetch) from the
    /// puller, which tries them at once; only matters after a crash or a failure.
    pub grace_ms: i64,
    /// A new verified version is to be sent to the HIS (HL7 forwarding configured).
    pub hl7: bool,
}

/// What recording a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// Our answer to the hub.
    pub status: AckStatus,
    /// Why rejected.
    pub reason: Option<String>,
    /// The version row this item is (new or already held).
    pub version_row: Option<i64>,
    /// A version row was created by this delivery.
    pub new_version: bool,
    /// This cursor had been recorded before (re-delivery after a restart).
    pub already_recorded: bool,
    /// The hub has not yet been told.
    pub ack_pending: bool,
}

/// What recording a clinician's acknowledgement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcknowledgeOutcome {
    /// Recorded now.
    Recorded {
        /// Who.
        by: String,
        /// When (ms).
        at: i64,
    },
    /// Someone already acknowledged this version; the first acknowledgement stands.
    Already {
        /// Who.
        by: String,
        /// When (ms).
        at: i64,
    },
    /// No such report version.
    NotFound,
    /// Only versions that failed verification exist: nothing to acknowledge.
    NotVerified,
    /// The version is not critical.
    NotCritical,
    /// A newer verified version replaced this one (e.g. the laboratory corrected the
    /// value): the clinician must read that one.
    Superseded {
        /// The newer version.
        current: i64,
    },
}

/// Writes to the report tables, executed by the outbox's committer.
#[derive(Debug, Clone)]
pub enum ReportWrite {
    /// Record a delivery item (and its version).
    Delivery(Box<NewDelivery>),
    /// Everything up to this cursor is recorded.
    Cursor(i64),
    /// A poll ended: `None` when the hub answered, else the error.
    Contact(Option<String>),
    /// A version's PDF is on disk.
    PdfStored {
        /// Version row.
        row: i64,
        /// Path relative to the data directory.
        path: String,
    },
    /// Fetching a PDF failed.
    PdfFailed {
        /// Version row.
        row: i64,
        /// Next attempt (ms).
        next_at: i64,
        /// What went wrong.
        error: String,
    },
    /// The hub accepted our ack of a delivery.
    AckSent {
        /// Delivery cursor.
        cursor: i64,
    },
    /// Sending an ack failed.
    AckFailed {
        /// Delivery cursor.
        cursor: i64,
        /// Next attempt (ms).
        next_at: i64,
        /// What went wrong.
        error: String,
    },
    /// A clinician acknowledged a critical finding.
    Acknowledge {
        /// Report id.
        report_id: String,
        /// Version.
        version: i64,
        /// The clinician's name.
        name: String,
    },
    /// The hub accepted the relayed acknowledgement.
    RelayDone {
        /// Version row.
        row: i64,
    },
    /// Relaying an acknowledgement failed.
    RelayFailed {
        /// Version row.
        row: i64,
        /// Next attempt (ms).
        next_at: i64,
        /// What went wrong.
        error: String,
    },
    /// Remember verification keys fetched from the hub: (key id, base64 key).
    Keys(Vec<(String, String)>),
    /// Where the local page listens, or why it does not.
    Page(String),
    /// The HIS accepted the HL7 message (ACK AA/CA).
    Hl7Sent {
        /// Version row.
        row: i64,
    },
    /// Sending to the HIS failed; try again at `next_at`.
    Hl7Failed {
        /// Version row.
        row: i64,
        /// Next attempt (ms).
        next_at: i64,
        /// What went wrong.
        error: String,
    },
    /// The HIS rejected the message for good (ACK AR/CR): not sent again.
    Hl7Refused {
        /// Version row.
        row: i64,
        /// What the HIS said.
        error: String,
    },
}

/// The result of a [`ReportWrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Written.
    Done,
    /// For [`ReportWrite::Delivery`].
    Delivery(DeliveryOutcome),
    /// For [`ReportWrite::Acknowledge`].
    Acknowledge(AcknowledgeOutcome),
}

/// Why a verified version that collides with another is refused: the hub never signs
/// two texts for one version (versions are immutable), so the second cannot be trusted.
pub const CONFLICT_REASON: &str =
    "conflicts with the signed text already held for this report version";

/// Execute one write inside the committer's transaction.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    write: &ReportWrite,
    now: i64,
) -> Result<ReportOutcome, sqlx::Error> {
    match write {
        ReportWrite::Delivery(d) => Ok(ReportOutcome::Delivery(
            record_delivery(conn, d, now).await?,
        )),
        ReportWrite::Cursor(cursor) => {
            // Never backwards: a late write of an older batch must not re-open it.
            sqlx::query("UPDATE report_state SET cursor = MAX(cursor, ?) WHERE id = 1")
                .bind(cursor)
                .execute(&mut *conn)
                .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::Contact(None) => {
            sqlx::query(
                "UPDATE report_state SET last_contact_at = ?, last_error = NULL, last_error_at = NULL
                 WHERE id = 1",
            )
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::Contact(Some(error)) => {
            sqlx::query("UPDATE report_state SET last_error = ?, last_error_at = ? WHERE id = 1")
                .bind(error)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::PdfStored { row, path } => {
            sqlx::query(
                "UPDATE report_versions SET pdf_path = ?, pdf_error = NULL WHERE id = ? AND verified = 1",
            )
            .bind(path)
            .bind(row)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::PdfFailed {
            row,
            next_at,
            error,
        } => {
            sqlx::query(
                "UPDATE report_versions SET pdf_attempts = pdf_attempts + 1, pdf_next_at = ?,
                        pdf_error = ?
                 WHERE id = ? AND pdf_path IS NULL",
            )
            .bind(next_at)
            .bind(error)
            .bind(row)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::AckSent { cursor } => {
            sqlx::query(
                "UPDATE report_deliveries SET ack_sent_at = ?, ack_error = NULL
                 WHERE cursor = ? AND ack_sent_at IS NULL",
            )
            .bind(now)
            .bind(cursor)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::AckFailed {
            cursor,
            next_at,
            error,
        } => {
            sqlx::query(
                "UPDATE report_deliveries SET ack_attempts = ack_attempts + 1, ack_next_at = ?,
                        ack_error = ?
                 WHERE cursor = ? AND ack_sent_at IS NULL",
            )
            .bind(next_at)
            .bind(error)
            .bind(cursor)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::Acknowledge {
            report_id,
            version,
            name,
        } => Ok(ReportOutcome::Acknowledge(
            acknowledge(conn, report_id, *version, name, now).await?,
        )),
        ReportWrite::RelayDone { row } => {
            sqlx::query(
                "UPDATE report_versions SET relayed_at = ?, relay_error = NULL
                 WHERE id = ? AND relayed_at IS NULL",
            )
            .bind(now)
            .bind(row)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::RelayFailed {
            row,
            next_at,
            error,
        } => {
            sqlx::query(
                "UPDATE report_versions SET relay_attempts = relay_attempts + 1, relay_next_at = ?,
                        relay_error = ?
                 WHERE id = ? AND relayed_at IS NULL",
            )
            .bind(next_at)
            .bind(error)
            .bind(row)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::Keys(keys) => {
            for (key_id, public_key) in keys {
                sqlx::query(
                    "INSERT INTO report_keys (key_id, public_key, first_seen_at) VALUES (?, ?, ?)
                     ON CONFLICT (key_id) DO NOTHING",
                )
                .bind(key_id)
                .bind(public_key)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            Ok(ReportOutcome::Done)
        }
        ReportWrite::Hl7Sent { row } => {
            sqlx::query(
                "UPDATE report_versions SET hl7_state = 'sent', hl7_sent_at = ?, hl7_error = NULL
                 WHERE id = ? AND hl7_state = 'pending'",
            )
            .bind(now)
            .bind(row)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::Hl7Failed {
            row,
            next_at,
            error,
        } => {
            sqlx::query(
                "UPDATE report_versions SET hl7_attempts = hl7_attempts + 1, hl7_next_at = ?,
                        hl7_error = ?
                 WHERE id = ? AND hl7_state = 'pending'",
            )
            .bind(next_at)
            .bind(error)
            .bind(row)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::Hl7Refused { row, error } => {
            sqlx::query(
                "UPDATE report_versions SET hl7_state = 'refused', hl7_error = ?
                 WHERE id = ? AND hl7_state = 'pending'",
            )
            .bind(error)
            .bind(row)
            .execute(&mut *conn)
            .await?;
            Ok(ReportOutcome::Done)
        }
        ReportWrite::Page(page) => {
            sqlx::query("UPDATE report_state SET page = ? WHERE id = 1")
                .bind(page)
                .execute(&mut *conn)
                .await?;
            Ok(ReportOutcome::Done)
        }
    }
}

async fn record_delivery(
    conn: &mut SqliteConnection,
    d: &NewDelivery,
    now: i64,
) -> Result<DeliveryOutcome, sqlx::Error> {
    // The same cursor again: the hub re-sent what we hold (we restarted before the
    // cursor was saved). Nothing new; the ack is still owed if it was never sent.
    if let Some(row) = sqlx::query(
        "SELECT status, reason, version_row, ack_sent_at FROM report_deliveries WHERE cursor = ?",
    )
    .bind(d.cursor)
    .fetch_optional(&mut *conn)
    .await?
    {
        return Ok(DeliveryOutcome {
            status: AckStatus::parse(&row.try_get::<String, _>(0)?),
            reason: row.try_get(1)?,
            version_row: row.try_get(2)?,
            new_version: false,
            already_recorded: true,
            ack_pending: row.try_get::<Option<i64>, _>(3)?.is_none(),
        });
    }
    let (status, reason, version_row, new_version) = match &d.received {
        None => (
            AckStatus::Rejected,
            Some(
                d.reject_reason
                    .clone()
                    .unwrap_or_else(|| "item carries no report".into()),
            ),
            None,
            false,
        ),
        Some(v) => {
            let sha = formats::report::payload_sha256(&v.payload);
            let identical = sqlx::query(
                "SELECT id, verify_error FROM report_versions
                 WHERE report_id = ? AND version = ? AND payload_sha256 = ? AND signature = ?
                   AND verified = ?
                 ORDER BY id LIMIT 1",
            )
            .bind(&v.report_id)
            .bind(v.version)
            .bind(&sha)
            .bind(&v.signature)
            .bind(i64::from(v.verified))
            .fetch_optional(&mut *conn)
            .await?;
            match identical {
                Some(row) => {
                    let id: i64 = row.try_get(0)?;
                    let error: Option<String> = row.try_get(1)?;
                    let status = if v.verified {
                        AckStatus::Stored
                    } else {
                        AckStatus::Rejected
                    };
                    (status, error, Some(id), false)
                }
                None => {
                    let mut verified = v.verified;
                    let mut error = v.verify_error.clone();
                    if verified {
                        let held: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM report_versions
                             WHERE report_id = ? AND version = ? AND verified = 1",
                        )
                        .bind(&v.report_id)
                        .bind(v.version)
                        .fetch_one(&mut *conn)
                        .await?;
                        if held > 0 {
                            verified = false;
                            error = Some(CONFLICT_REASON.into());
                        }
                    }
                    let id =
                        insert_version(conn, v, &sha, (verified, error.as_deref()), now, d).await?;
                    let status = if verified {
                        AckStatus::Stored
                    } else {
                        AckStatus::Rejected
                    };
                    (status, error, Some(id), true)
                }
            }
        }
    };
    sqlx::query(
        "INSERT INTO report_deliveries (cursor, version_row, report_id, version, status, reason,
                                        received_at, ack_next_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(d.cursor)
    .bind(version_row)
    .bind(&d.report_id)
    .bind(d.version)
    .bind(status.as_str())
    .bind(&reason)
    .bind(now)
    .bind(now + d.grace_ms)
    .execute(&mut *conn)
    .await?;
    Ok(DeliveryOutcome {
        status,
        reason,
        version_row,
        new_version,
        already_recorded: false,
        ack_pending: true,
    })
}

async fn insert_version(
    conn: &mut SqliteConnection,
    v: &ReceivedVersion,
    sha: &str,
    (verified, error): (bool, Option<&str>),
    now: i64,
    d: &NewDelivery,
) -> Result<i64, sqlx::Error> {
    let hl7_state = (verified && d.hl7).then_some("pending");
    Ok(sqlx::query(
        "INSERT INTO report_versions (report_id, version, status, critical, exam_kind, exam_site,
                                      patient_id, patient_name, study_uid, accession_number,
                                      modality, reason, signer_name, signed_at, payload,
                                      payload_sha256, signature, key_id, verified, verify_error,
                                      received_at, pdf_next_at, hl7_state, hl7_next_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&v.report_id)
    .bind(v.version)
    .bind(&v.status)
    .bind(i64::from(v.critical))
    .bind(&v.exam.kind)
    .bind(&v.exam.site)
    .bind(&v.exam.patient_id)
    .bind(&v.exam.patient_name)
    .bind(&v.exam.study_uid)
    .bind(&v.exam.accession_number)
    .bind(&v.exam.modality)
    .bind(&v.reason)
    .bind(&v.signer_name)
    .bind(v.signed_at)
    .bind(&v.payload)
    .bind(sha)
    .bind(&v.signature)
    .bind(&v.key_id)
    .bind(i64::from(verified))
    .bind(error)
    .bind(now)
    .bind(now + d.grace_ms)
    .bind(hl7_state)
    // The sender sends HL7 at once (the puller does not).
    .bind(now)
    .execute(&mut *conn)
    .await?
    .last_insert_rowid())
}

async fn acknowledge(
    conn: &mut SqliteConnection,
    report_id: &str,
    version: i64,
    name: &str,
    now: i64,
) -> Result<AcknowledgeOutcome, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, critical, acknowledged_by, acknowledged_at FROM report_versions
         WHERE report_id = ? AND version = ? AND verified = 1",
    )
    .bind(report_id)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        let any: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM report_versions WHERE report_id = ? AND version = ?",
        )
        .bind(report_id)
        .bind(version)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(if any > 0 {
            AcknowledgeOutcome::NotVerified
        } else {
            AcknowledgeOutcome::NotFound
        });
    };
    let id: i64 = row.try_get(0)?;
    let newer: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(version) FROM report_versions WHERE report_id = ? AND version > ? AND verified = 1",
    )
    .bind(report_id)
    .bind(version)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(current) = newer {
        return Ok(AcknowledgeOutcome::Superseded { current });
    }
    if row.try_get::<i64, _>(1)? == 0 {
        return Ok(AcknowledgeOutcome::NotCritical);
    }
    if let (Some(by), Some(at)) = (
        row.try_get::<Option<String>, _>(2)?,
        row.try_get::<Option<i64>, _>(3)?,
    ) {
        return Ok(AcknowledgeOutcome::Already { by, at });
    }
    sqlx::query(
        "UPDATE report_versions SET acknowledged_by = ?, acknowledged_at = ?, relay_next_at = ?,
                relay_attempts = 0
         WHERE id = ?",
    )
    .bind(name)
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(AcknowledgeOutcome::Recorded {
        by: name.to_string(),
        at: now,
    })
}

// ---------------------------------------------------------------------------------
// Reads.

/// The feed's saved position and health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedState {
    /// Everything up to here is recorded.
    pub cursor: i64,
    /// The current delivery error, if the last poll failed.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<i64>,
    /// The last time the hub answered a poll.
    pub last_contact_at: Option<i64>,
    /// The local page's address or why it is not listening.
    pub page: Option<String>,
}

/// Read the feed state.
pub async fn feed_state(pool: &SqlitePool) -> Result<FeedState, OutboxError> {
    let row = sqlx::query(
        "SELECT cursor, last_error, last_error_at, last_contact_at, page FROM report_state WHERE id = 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(FeedState::default());
    };
    Ok(FeedState {
        cursor: row.try_get(0)?,
        last_error: row.try_get(1)?,
        last_error_at: row.try_get(2)?,
        last_contact_at: row.try_get(3)?,
        page: row.try_get(4)?,
    })
}

/// The remembered verification keys: (key id, base64 key).
pub async fn remembered_keys(pool: &SqlitePool) -> Result<Vec<(String, String)>, OutboxError> {
    let rows = sqlx::query("SELECT key_id, public_key FROM report_keys ORDER BY first_seen_at")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// An ack the hub has not yet received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueAck {
    /// Delivery cursor.
    pub cursor: i64,
    /// Our answer.
    pub status: AckStatus,
    /// Why rejected.
    pub reason: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// Acks due at `now`.
pub async fn due_acks(pool: &SqlitePool, now: i64, limit: i64) -> Result<Vec<DueAck>, OutboxError> {
    let rows = sqlx::query(
        "SELECT cursor, status, reason, ack_attempts FROM report_deliveries
         WHERE ack_sent_at IS NULL AND ack_next_at <= ? ORDER BY cursor LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DueAck {
                cursor: r.try_get(0)?,
                status: AckStatus::parse(&r.try_get::<String, _>(1)?),
                reason: r.try_get(2)?,
                attempts: attempts(r, 3)?,
            })
        })
        .collect()
}

/// A clinician's acknowledgement the hub has not yet received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRelay {
    /// Version row.
    pub row: i64,
    /// Report id.
    pub report_id: String,
    /// Version.
    pub version: i64,
    /// The clinician.
    pub acknowledged_by: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// Acknowledgement relays due at `now`.
pub async fn due_relays(
    pool: &SqlitePool,
    now: i64,
    limit: i64,
) -> Result<Vec<DueRelay>, OutboxError> {
    let rows = sqlx::query(
        "SELECT id, report_id, version, acknowledged_by, relay_attempts FROM report_versions
         WHERE acknowledged_at IS NOT NULL AND relayed_at IS NULL AND relay_next_at <= ?
         ORDER BY acknowledged_at LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DueRelay {
                row: r.try_get(0)?,
                report_id: r.try_get(1)?,
                version: r.try_get(2)?,
                acknowledged_by: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                attempts: attempts(r, 4)?,
            })
        })
        .collect()
}

/// A verified version whose PDF is not on disk yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuePdf {
    /// Version row.
    pub row: i64,
    /// Report id.
    pub report_id: String,
    /// Version.
    pub version: i64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// PDF fetches due at `now`.
pub async fn due_pdfs(pool: &SqlitePool, now: i64, limit: i64) -> Result<Vec<DuePdf>, OutboxError> {
    let rows = sqlx::query(
        "SELECT id, report_id, version, pdf_attempts FROM report_versions
         WHERE verified = 1 AND pdf_path IS NULL AND pdf_next_at <= ?
         ORDER BY critical DESC, id LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DuePdf {
                row: r.try_get(0)?,
                report_id: r.try_get(1)?,
                version: r.try_get(2)?,
                attempts: attempts(r, 3)?,
            })
        })
        .collect()
}

/// When the next ack, relay or PDF fetch (and with `hl7`, HL7 message) is due, if any
/// is outstanding.
pub async fn next_due_at(pool: &SqlitePool, hl7: bool) -> Result<Option<i64>, OutboxError> {
    let row = sqlx::query(
        "SELECT MIN(t) FROM (
             SELECT MIN(ack_next_at) AS t FROM report_deliveries WHERE ack_sent_at IS NULL
             UNION ALL
             SELECT MIN(relay_next_at) FROM report_versions
                 WHERE acknowledged_at IS NOT NULL AND relayed_at IS NULL
             UNION ALL
             SELECT MIN(pdf_next_at) FROM report_versions WHERE verified = 1 AND pdf_path IS NULL
             UNION ALL
             -- Pending HL7 rows wait while HL7 is switched off.
             SELECT MIN(hl7_next_at) FROM report_versions WHERE hl7_state = 'pending' AND ?)",
    )
    .bind(hl7)
    .fetch_one(pool)
    .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?)
}

/// A verified version still to be sent to the HIS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueHl7 {
    /// Version row.
    pub row: i64,
    /// The verified payload text.
    pub payload: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// HL7 messages due at `now`, oldest first. Only the oldest pending version of each
/// report is offered, so an amendment never reaches the HIS before its original.
pub async fn due_hl7(pool: &SqlitePool, now: i64, limit: i64) -> Result<Vec<DueHl7>, OutboxError> {
    let rows = sqlx::query(
        "SELECT id, payload, hl7_attempts FROM report_versions v
         WHERE hl7_state = 'pending' AND verified = 1 AND hl7_next_at <= ?
           AND NOT EXISTS (SELECT 1 FROM report_versions o WHERE o.report_id = v.report_id
                           AND o.hl7_state = 'pending' AND o.id < v.id)
         ORDER BY id LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DueHl7 {
                row: r.try_get(0)?,
                payload: r.try_get(1)?,
                attempts: attempts(r, 2)?,
            })
        })
        .collect()
}

fn attempts(row: &SqliteRow, index: usize) -> Result<u32, sqlx::Error> {
    Ok(row.try_get::<i64, _>(index)?.clamp(0, u32::MAX as i64) as u32)
}

/// A stored report version, as the page and the API show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    /// Row id.
    pub id: i64,
    /// Report id.
    pub report_id: String,
    /// Version.
    pub version: i64,
    /// preliminary / final / amended.
    pub status: String,
    /// Critical finding.
    pub critical: bool,
    /// Exam fields.
    pub exam: ExamFields,
    /// Amendment reason.
    pub reason: Option<String>,
    /// Signer's printed name.
    pub signer_name: Option<String>,
    /// Signing time (ms).
    pub signed_at: Option<i64>,
    /// The payload text as received (only with [`report_versions`]).
    pub payload: Option<String>,
    /// Key id.
    pub key_id: String,
    /// Whether it verified.
    pub verified: bool,
    /// Why not.
    pub verify_error: Option<String>,
    /// When it arrived (ms).
    pub received_at: i64,
    /// The PDF is on disk.
    pub pdf_available: bool,
    /// Why the PDF is not there yet.
    pub pdf_error: Option<String>,
    /// The clinician who acknowledged the critical finding.
    pub acknowledged_by: Option<String>,
    /// When (ms).
    pub acknowledged_at: Option<i64>,
    /// When the hub received the acknowledgement (ms).
    pub relayed_at: Option<i64>,
}

/// The columns `version_row` reads, as a macro so queries stay literal strings.
macro_rules! version_columns {
    () => {
        "id, report_id, version, status, critical, exam_kind, exam_site,
     patient_id, patient_name, study_uid, accession_number, modality, reason, signer_name,
     signed_at, key_id, verified, verify_error, received_at, pdf_path IS NOT NULL, pdf_error,
     acknowledged_by, acknowledged_at, relayed_at"
    };
}

fn version_row(r: &SqliteRow, with_payload: bool) -> Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        id: r.try_get(0)?,
        report_id: r.try_get(1)?,
        version: r.try_get(2)?,
        status: r.try_get(3)?,
        critical: r.try_get::<i64, _>(4)? != 0,
        exam: ExamFields {
            kind: r.try_get(5)?,
            site: r.try_get(6)?,
            patient_id: r.try_get(7)?,
            patient_name: r.try_get(8)?,
            study_uid: r.try_get(9)?,
            accession_number: r.try_get(10)?,
            modality: r.try_get(11)?,
        },
        reason: r.try_get(12)?,
        signer_name: r.try_get(13)?,
        signed_at: r.try_get(14)?,
        key_id: r.try_get(15)?,
        verified: r.try_get::<i64, _>(16)? != 0,
        verify_error: r.try_get(17)?,
        received_at: r.try_get(18)?,
        pdf_available: r.try_get::<i64, _>(19)? != 0,
        pdf_error: r.try_get(20)?,
        acknowledged_by: r.try_get(21)?,
        acknowledged_at: r.try_get(22)?,
        relayed_at: r.try_get(23)?,
        payload: if with_payload {
            Some(r.try_get(24)?)
        } else {
            None
        },
    })
}

/// Reports the township page and `/api/reports` list: the most recent ones.
pub const LISTED_REPORTS: i64 = 500;

/// The versions (without payload texts) of the `reports` most recently received reports,
/// and of every report with a critical finding still awaiting acknowledgement however old:
/// the page refreshes every few seconds and must not read a year of reports each time,
/// nor ever drop an alert.
pub async fn recent_versions(
    pool: &SqlitePool,
    reports: i64,
) -> Result<Vec<VersionRow>, OutboxError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        version_columns!(),
        " FROM report_versions WHERE report_id IN (\
           SELECT report_id FROM report_versions GROUP BY report_id ORDER BY MAX(id) DESC LIMIT $1) \
         OR report_id IN (SELECT report_id FROM report_versions \
           WHERE verified = 1 AND critical = 1 AND acknowledged_at IS NULL) \
         ORDER BY id"
    ))
    .bind(reports)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| version_row(r, false))
        .collect::<Result<_, _>>()?)
}

/// Every stored version of one report (with payload texts), newest version first.
pub async fn report_versions(
    pool: &SqlitePool,
    report_id: &str,
) -> Result<Vec<VersionRow>, OutboxError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        version_columns!(),
        ", payload FROM report_versions WHERE report_id = ? ORDER BY version DESC, id DESC"
    ))
    .bind(report_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| version_row(r, true))
        .collect::<Result<_, _>>()?)
}

/// Where a version's PDF may be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdfLookup {
    /// Verified, on disk at this path (relative to the data directory).
    Ready(String),
    /// Verified, not fetched yet (with the last error, if any).
    NotYet(Option<String>),
    /// Only versions that failed verification: never printed as valid.
    NotVerified,
    /// No such version.
    NotFound,
}

/// Find a version's PDF.
pub async fn pdf_of(
    pool: &SqlitePool,
    report_id: &str,
    version: i64,
) -> Result<PdfLookup, OutboxError> {
    let rows = sqlx::query(
        "SELECT verified, pdf_path, pdf_error FROM report_versions
         WHERE report_id = ? AND version = ? ORDER BY verified DESC, id",
    )
    .bind(report_id)
    .bind(version)
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(PdfLookup::NotFound);
    };
    if first.try_get::<i64, _>(0)? == 0 {
        return Ok(PdfLookup::NotVerified);
    }
    Ok(match first.try_get::<Option<String>, _>(1)? {
        Some(path) => PdfLookup::Ready(path),
        None => PdfLookup::NotYet(first.try_get(2)?),
    })
}

/// Whether the report tables exist (a database last opened by an older gateway has none).
pub async fn tables_exist(pool: &SqlitePool) -> Result<bool, OutboxError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'report_state'",
    )
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}
