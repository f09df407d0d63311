//! The outbox by lane, for the township page (`GET /api/outbox` and the page's outbox
//! section): imaging (DICOM instances, grouped by study), laboratory (HL7 messages) and
//! ECG files, each with what waits, what was sent and what was refused and why.
//!
//! The counts, the oldest waiting item, the last delivery error and the quarantine come
//! from [`crate::status`], the same figures `gateway status` prints; only what the
//! command line does not show (the recently sent items and whether the county has
//! reported on them) is read here.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use crate::outbox::{now_ms, OutboxError};
use crate::status::{self, QuarantineRow, StatusReport};

/// How many recently sent items each lane lists (the page must stay one screen).
pub const RECENT_SENT: i64 = 20;
/// How many refused items each lane lists (the status quarantine list, newest first).
pub const REJECTED_LISTED: usize = 20;

/// The outbox, lane by lane.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutboxSummary {
    /// When this was read (RFC 3339, UTC).
    pub generated_at: String,
    /// DICOM instances (images, DICOM ECG waveforms), listed by study.
    pub imaging: Lane,
    /// HL7 laboratory messages.
    pub lab: Lane,
    /// ECG files from the import folder.
    pub ecg: Lane,
    /// Studies whose completion the hub has not been told of yet.
    pub studies_awaiting_completion: i64,
    /// The last time the hub answered the report feed (RFC 3339), if ever.
    pub last_contact: Option<String>,
    /// The current report feed error, if the last poll failed.
    pub report_feed_error: Option<String>,
}

/// One lane of the outbox. Counts are in the lane's unit: instances, messages, files.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Lane {
    /// `instance`, `message` or `file`.
    pub unit: &'static str,
    /// Waiting for the hub.
    pub waiting: i64,
    /// Of which STAT (imaging, ECG) or urgent (laboratory: STAT or critical flag).
    pub waiting_urgent: i64,
    /// Stored by the hub.
    pub sent: i64,
    /// In quarantine: refused on receipt or rejected by the hub.
    pub rejected: i64,
    /// The item waiting longest.
    pub oldest_waiting: Option<Waiting>,
    /// The most recent delivery error of a waiting item (it is being retried).
    pub last_error: Option<DeliveryError>,
    /// The most recently sent items, newest first (at most [`RECENT_SENT`]).
    pub recent_sent: Vec<SentItem>,
    /// The newest refused items with the reason (at most [`REJECTED_LISTED`]).
    pub rejected_items: Vec<RejectedItem>,
}

/// The item waiting longest in a lane.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Waiting {
    /// SOP Instance UID, MSH-10 or file name.
    pub id: String,
    /// The study of a DICOM instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<String>,
    /// Patient ID, when known.
    pub patient_id: Option<String>,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// Seconds it has been waiting.
    pub age_secs: i64,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// The most recent delivery error of a waiting item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeliveryError {
    /// When (RFC 3339).
    pub at: String,
    /// SOP Instance UID, MSH-10 or file name.
    pub id: String,
    /// What went wrong.
    pub error: String,
}

/// A sent item: a study (imaging), a message (laboratory) or a file (ECG).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SentItem {
    /// Study Instance UID, MSH-10 or file name.
    pub id: String,
    /// Patient ID, when known.
    pub patient_id: Option<String>,
    /// Patient name as sent (DICOM `alphabetic=ideographic` form for imaging).
    pub patient_name: Option<String>,
    /// What it is: modality and accession number, message type, ECG format.
    pub description: Option<String>,
    /// Instances of the study stored by the hub (1 for messages and files).
    pub sent: i64,
    /// Instances of the study still waiting (0 for messages and files).
    pub waiting: i64,
    /// Instances of the study refused (0 for messages and files).
    pub rejected: i64,
    /// When the hub stored the last of it (RFC 3339).
    pub sent_at: Option<String>,
    /// The same in ms (for the page's local time).
    #[serde(skip)]
    pub sent_at_ms: Option<i64>,
    /// The county's report on it, once one came back ("read").
    pub report: Option<ReadBy>,
}

/// The newest verified report version about a sent item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadBy {
    /// Report id.
    pub report_id: String,
    /// Version.
    pub version: i64,
    /// `preliminary`, `final` or `amended`.
    pub status: String,
    /// Critical finding.
    pub critical: bool,
    /// The report on the township page.
    pub view_url: String,
}

/// A refused item and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RejectedItem {
    /// When (RFC 3339).
    pub at: String,
    /// `receive` (refused by this gateway) or `hub` (rejected by the county).
    pub source: String,
    /// SOP Instance UID, MSH-10 or file name, when known.
    pub id: Option<String>,
    /// The study of a DICOM instance, when known.
    pub study_uid: Option<String>,
    /// Patient ID, when known.
    pub patient_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// Read the outbox summary through the running gateway's pool (its migrations have run).
pub async fn summary(pool: &SqlitePool, data_dir: &Path) -> Result<OutboxSummary, OutboxError> {
    let status = status::collect_from(pool, data_dir).await?;
    let mut summary = from_status(&status);
    summary.imaging.recent_sent = recent_studies(pool).await?;
    for item in &mut summary.imaging.rejected_items {
        if let Some(study) = &item.study_uid {
            item.patient_id = study_patient(pool, study).await?;
        }
    }
    if let Some(oldest) = &mut summary.imaging.oldest_waiting {
        if let Some(study) = &oldest.study_uid {
            oldest.patient_id = study_patient(pool, study).await?;
        }
    }
    summary.lab.recent_sent = recent_lab(pool).await?;
    summary.ecg.recent_sent = recent_ecg(pool).await?;
    Ok(summary)
}

/// The lanes as far as [`StatusReport`] knows them (no recent items yet).
pub fn from_status(s: &StatusReport) -> OutboxSummary {
    let imaging = Lane {
        unit: "instance",
        waiting: s.pending.count,
        waiting_urgent: s.pending_stat.count,
        sent: s.delivered,
        rejected: s.quarantined,
        oldest_waiting: s.oldest_pending.as_ref().map(|o| Waiting {
            id: o.sop_instance_uid.clone(),
            study_uid: Some(o.study_uid.clone()),
            patient_id: None,
            received_at: o.received_at.clone(),
            age_secs: o.age_secs,
            attempts: o.attempts,
        }),
        last_error: s.last_error.as_ref().map(|e| DeliveryError {
            at: e.at.clone(),
            id: e.sop_instance_uid.clone(),
            error: e.error.clone(),
        }),
        recent_sent: Vec::new(),
        rejected_items: rejected(&s.quarantine, |q| q.sop_instance_uid.clone()),
    };
    let lab = s
        .lab
        .as_ref()
        .map(|l| Lane {
            unit: "message",
            waiting: l.waiting,
            waiting_urgent: l.waiting_urgent,
            sent: l.delivered,
            rejected: l.refused + l.rejected_by_hub,
            oldest_waiting: l.oldest_waiting.as_ref().map(|o| Waiting {
                id: o.control_id.clone(),
                study_uid: None,
                patient_id: o.patient_id.clone(),
                received_at: o.received_at.clone(),
                age_secs: o.age_secs,
                attempts: o.attempts,
            }),
            last_error: l.last_error.as_ref().map(|e| DeliveryError {
                at: e.at.clone(),
                id: e.control_id.clone(),
                error: e.error.clone(),
            }),
            recent_sent: Vec::new(),
            rejected_items: rejected(&l.quarantine, |q| q.control_id.clone()),
        })
        .unwrap_or_else(|| Lane {
            unit: "message",
            ..Lane::default()
        });
    let ecg = s
        .ecg
        .as_ref()
        .map(|e| Lane {
            unit: "file",
            waiting: e.waiting,
            waiting_urgent: e.waiting_stat,
            sent: e.delivered,
            rejected: e.refused + e.rejected_by_hub,
            oldest_waiting: e.oldest_waiting.as_ref().map(|o| Waiting {
                id: o.file_name.clone(),
                study_uid: None,
                patient_id: o.patient_id.clone(),
                received_at: o.received_at.clone(),
                age_secs: o.age_secs,
                attempts: o.attempts,
            }),
            last_error: e.last_error.as_ref().map(|x| DeliveryError {
                at: x.at.clone(),
                id: x.file_name.clone(),
                error: x.error.clone(),
            }),
            recent_sent: Vec::new(),
            rejected_items: rejected(&e.quarantine, |q| q.file_name.clone()),
        })
        .unwrap_or_else(|| Lane {
            unit: "file",
            ..Lane::default()
        });
    let reports = s.reports.as_ref();
    OutboxSummary {
        generated_at: rfc3339(now_ms()),
        imaging,
        lab,
        ecg,
        studies_awaiting_completion: s.studies_awaiting_completion,
        last_contact: reports.and_then(|r| r.last_contact.clone()),
        report_feed_error: reports
            .and_then(|r| r.last_delivery_error.as_ref())
            .map(|e| e.error.clone()),
    }
}

fn rejected(
    rows: &[QuarantineRow],
    id: impl Fn(&QuarantineRow) -> Option<String>,
) -> Vec<RejectedItem> {
    rows.iter()
        .take(REJECTED_LISTED)
        .map(|q| RejectedItem {
            at: q.at.clone(),
            source: q.source.clone(),
            id: id(q),
            study_uid: q.study_uid.clone(),
            patient_id: None,
            reason: q.reason.clone(),
        })
        .collect()
}

async fn study_patient(pool: &SqlitePool, study_uid: &str) -> Result<Option<String>, OutboxError> {
    Ok(
        sqlx::query_scalar("SELECT patient_id FROM studies WHERE study_uid = ?")
            .bind(study_uid)
            .fetch_optional(pool)
            .await?
            .flatten(),
    )
}

/// The newest verified report on a study, if one came back.
async fn report_on_study(
    pool: &SqlitePool,
    study_uid: &str,
) -> Result<Option<ReadBy>, OutboxError> {
    let row = sqlx::query(
        "SELECT report_id, version, status, critical FROM report_versions
         WHERE study_uid = ? AND verified = 1 ORDER BY received_at DESC, id DESC LIMIT 1",
    )
    .bind(study_uid)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| read_by(&r)).transpose()?)
}

fn read_by(r: &sqlx::sqlite::SqliteRow) -> Result<ReadBy, sqlx::Error> {
    let report_id: String = r.try_get(0)?;
    Ok(ReadBy {
        view_url: format!(
            "/reports/{}",
            crate::reports::html::path_segment(&report_id)
        ),
        report_id,
        version: r.try_get(1)?,
        status: r.try_get(2)?,
        critical: r.try_get::<i64, _>(3)? != 0,
    })
}

/// Studies with at least one instance stored by the hub, most recently received first.
async fn recent_studies(pool: &SqlitePool) -> Result<Vec<SentItem>, OutboxError> {
    // Studies rather than items are scanned: a gateway holds far fewer of them, and each
    // study's counts come from the `items_by_study` index.
    let rows = sqlx::query(
        "SELECT s.study_uid, s.patient_id, s.patient_name, s.modality, s.accession_number,
                (SELECT COUNT(*) FROM items i WHERE i.study_uid = s.study_uid AND i.state = 'delivered'),
                (SELECT COUNT(*) FROM items i WHERE i.study_uid = s.study_uid AND i.state = 'pending'),
                (SELECT COUNT(*) FROM items i WHERE i.study_uid = s.study_uid AND i.state = 'rejected'),
                (SELECT MAX(delivered_at) FROM items i WHERE i.study_uid = s.study_uid AND i.state = 'delivered')
         FROM studies s
         WHERE EXISTS (SELECT 1 FROM items i WHERE i.study_uid = s.study_uid AND i.state = 'delivered')
         ORDER BY s.last_received_at DESC, s.rowid DESC LIMIT ?",
    )
    .bind(RECENT_SENT)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let study_uid: String = r.try_get(0)?;
        let modality: Option<String> = r.try_get(3)?;
        let accession: Option<String> = r.try_get(4)?;
        let description = match (modality, accession) {
            (None, None) => None,
            (m, a) => Some(
                [m, a.map(|a| format!("#{a}"))]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        };
        let sent_at_ms: Option<i64> = r.try_get(8)?;
        out.push(SentItem {
            report: report_on_study(pool, &study_uid).await?,
            id: study_uid,
            patient_id: r.try_get(1)?,
            patient_name: r.try_get(2)?,
            description,
            sent: r.try_get(5)?,
            waiting: r.try_get(6)?,
            rejected: r.try_get(7)?,
            sent_at: sent_at_ms.map(rfc3339),
            sent_at_ms,
        });
    }
    Ok(out)
}

/// Laboratory messages stored by the hub, newest first. Lab reports are per order at
/// the hub, which this gateway does not record per message: no "read" here.
async fn recent_lab(pool: &SqlitePool) -> Result<Vec<SentItem>, OutboxError> {
    // Messages are delivered strictly in order, so the highest ids are the newest sent.
    let rows = sqlx::query(
        "SELECT control_id, patient_id, message_type, delivered_at FROM lab_messages
         WHERE state = 'delivered' ORDER BY id DESC LIMIT ?",
    )
    .bind(RECENT_SENT)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let sent_at_ms: Option<i64> = r.try_get(3)?;
            Ok(SentItem {
                id: r.try_get(0)?,
                patient_id: r.try_get(1)?,
                patient_name: None,
                description: r.try_get(2)?,
                sent: 1,
                waiting: 0,
                rejected: 0,
                sent_at: sent_at_ms.map(rfc3339),
                sent_at_ms,
                report: None,
            })
        })
        .collect()
}

/// ECG files stored by the hub, newest first, with the report on the exam the hub made
/// of each (matched by the hub's exam id, which the signed report carries).
async fn recent_ecg(pool: &SqlitePool) -> Result<Vec<SentItem>, OutboxError> {
    let rows = sqlx::query(
        "SELECT file_name, patient_id, patient_name, format, delivered_at, exam_id FROM ecg_files
         WHERE state = 'delivered' ORDER BY delivered_at DESC, id DESC LIMIT ?",
    )
    .bind(RECENT_SENT)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let sent_at_ms: Option<i64> = r.try_get(4)?;
        let exam_id: Option<i64> = r.try_get(5)?;
        let report = match exam_id {
            // Only reports received after the file was sent can be about it: that bounds
            // the rows whose payload is parsed.
            Some(exam_id) => sqlx::query(
                "SELECT report_id, version, status, critical FROM report_versions
                 WHERE verified = 1 AND exam_kind = 'ecg' AND received_at >= ?
                   AND json_extract(payload, '$.exam.exam_id') = ?
                 ORDER BY received_at DESC, id DESC LIMIT 1",
            )
            .bind(sent_at_ms.unwrap_or(0))
            .bind(exam_id)
            .fetch_optional(pool)
            .await?
            .map(|r| read_by(&r))
            .transpose()?,
            None => None,
        };
        out.push(SentItem {
            id: r.try_get(0)?,
            patient_id: r.try_get(1)?,
            patient_name: r.try_get(2)?,
            description: r.try_get(3)?,
            sent: 1,
            waiting: 0,
            rejected: 0,
            sent_at: sent_at_ms.map(rfc3339),
            sent_at_ms,
            report,
        });
    }
    Ok(out)
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests;
