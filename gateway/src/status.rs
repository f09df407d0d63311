//! `gateway status`: what the technician needs to see, read from the outbox database
//! read-only (safe while the gateway runs).

use std::fmt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use crate::filelane::db::{figures, table_exists};
use crate::filelane::FileLane;
use crate::outbox::{self, now_ms, OutboxError};

/// How many quarantine entries are listed (newest first).
const QUARANTINE_LISTED: i64 = 50;

/// Count and bytes of a set of items.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Queue {
    /// Items.
    pub count: i64,
    /// Sum of their file sizes.
    pub bytes: i64,
}

/// The item waiting longest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Oldest {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Its study.
    pub study_uid: String,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// Seconds since then.
    pub age_secs: i64,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// The most recent delivery error of a pending item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastError {
    /// When (RFC 3339).
    pub at: String,
    /// Which instance.
    pub sop_instance_uid: String,
    /// What went wrong.
    pub error: String,
}

/// One quarantine entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuarantineRow {
    /// When (RFC 3339).
    pub at: String,
    /// "receive" or "hub".
    pub source: String,
    /// SOP Instance UID, if known.
    pub sop_instance_uid: Option<String>,
    /// Study Instance UID of a DICOM instance, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_uid: Option<String>,
    /// Sender's AE title, if known.
    pub calling_ae: Option<String>,
    /// Kept file relative to the data directory.
    pub path: Option<String>,
    /// Why.
    pub reason: String,
    /// MSH-10 of an HL7 message, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_id: Option<String>,
    /// The original name of an ECG file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

/// Everything `gateway status` reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusReport {
    /// The site label from the configuration, when status was given one (a label for
    /// the operator; the hub identifies the site by its key, which is never shown).
    pub site: Option<String>,
    /// Data directory inspected.
    pub data_dir: String,
    /// Pending items (waiting for the hub).
    pub pending: Queue,
    /// Of which STAT.
    pub pending_stat: Queue,
    /// The item waiting longest.
    pub oldest_pending: Option<Oldest>,
    /// The most recent error among pending items.
    pub last_error: Option<LastError>,
    /// Instances the hub acknowledged.
    pub delivered: i64,
    /// Instances the hub rejected.
    pub rejected: i64,
    /// Studies received but not yet reported complete.
    pub studies_awaiting_completion: i64,
    /// The most recent completion-notice error, if any study is still failing.
    pub last_completion_error: Option<String>,
    /// All quarantine entries of DICOM instances.
    pub quarantined: i64,
    /// The newest of them.
    pub quarantine: Vec<QuarantineRow>,
    /// Reports from the county (`None` when the database predates them).
    pub reports: Option<ReportsStatus>,
    /// Laboratory results over HL7 (`None` when the database predates them).
    pub lab: Option<LabStatus>,
    /// ECG files (`None` when the database predates them).
    pub ecg: Option<EcgStatus>,
}

/// The ECG files section of `gateway status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EcgStatus {
    /// The watched import folder, when one is.
    pub import_dir: Option<String>,
    /// Why no folder is watched.
    pub note: Option<String>,
    /// Files in the folder not taken yet (`None` when it cannot be listed from here).
    pub in_folder: Option<i64>,
    /// Files imported (distinct contents).
    pub imported: i64,
    /// Waiting for the hub.
    pub waiting: i64,
    /// Of which STAT.
    pub waiting_stat: i64,
    /// The file waiting longest.
    pub oldest_waiting: Option<OldestEcg>,
    /// The most recent error of a waiting file.
    pub last_error: Option<EcgErrorRow>,
    /// Stored by the hub.
    pub delivered: i64,
    /// Refused on import (not an ECG we can read, too large).
    pub refused: i64,
    /// Rejected by the hub.
    pub rejected_by_hub: i64,
    /// The newest ECG quarantine entries, with their reasons.
    pub quarantine: Vec<QuarantineRow>,
}

/// The ECG file waiting longest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OldestEcg {
    /// Its name.
    pub file_name: String,
    /// Patient ID, when the file has one.
    pub patient_id: Option<String>,
    /// STAT.
    pub stat: bool,
    /// When it was imported (RFC 3339).
    pub received_at: String,
    /// Seconds since then.
    pub age_secs: i64,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// The most recent delivery error of a waiting ECG file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EcgErrorRow {
    /// When (RFC 3339).
    pub at: String,
    /// The file's name.
    pub file_name: String,
    /// What went wrong.
    pub error: String,
}

/// The laboratory results (HL7) section of `gateway status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LabStatus {
    /// The MLLP listener's address, or why it is not listening.
    pub listener: Option<String>,
    /// Messages accepted (acknowledged AA), each counted once.
    pub received: i64,
    /// Waiting for the hub.
    pub waiting: i64,
    /// Of which urgent (a STAT order or a critical flag).
    pub waiting_urgent: i64,
    /// The message waiting longest (the head of the queue: messages go in order).
    pub oldest_waiting: Option<OldestLab>,
    /// The most recent error of a waiting message.
    pub last_error: Option<LabError>,
    /// Stored by the hub.
    pub delivered: i64,
    /// Refused on receipt (malformed, unsupported, reused MSH-10, too long).
    pub refused: i64,
    /// Rejected by the hub.
    pub rejected_by_hub: i64,
    /// The newest HL7 quarantine entries, with their reasons.
    pub quarantine: Vec<QuarantineRow>,
}

/// The laboratory message waiting longest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OldestLab {
    /// MSH-10.
    pub control_id: String,
    /// PID-3, when the message has one.
    pub patient_id: Option<String>,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// Seconds since then.
    pub age_secs: i64,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// The most recent delivery error of a waiting laboratory message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LabError {
    /// When (RFC 3339).
    pub at: String,
    /// MSH-10.
    pub control_id: String,
    /// What went wrong.
    pub error: String,
}

/// The last report that was refused.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    /// When (RFC 3339).
    pub at: String,
    /// Report id the hub named.
    pub report_id: Option<String>,
    /// Version the hub named.
    pub version: Option<i64>,
    /// Why.
    pub reason: String,
}

/// The reports section of `gateway status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReportsStatus {
    /// Verified report versions held.
    pub received: i64,
    /// Distinct reports among them.
    pub reports: i64,
    /// The delivery cursor: everything up to it is recorded.
    pub cursor: i64,
    /// Delivery items refused (failed verification or unusable), kept aside.
    pub rejected: i64,
    /// The newest refusal.
    pub last_rejection: Option<Rejection>,
    /// Reports whose current version is critical and not yet acknowledged.
    pub critical_waiting: i64,
    /// Acknowledgements not yet received by the hub.
    pub acknowledgements_unrelayed: i64,
    /// Why the last relay attempt failed, while some are unrelayed.
    pub last_relay_error: Option<String>,
    /// Acks the hub has not yet received.
    pub acks_pending: i64,
    /// Verified versions whose PDF is not on disk yet.
    pub pdfs_missing: i64,
    /// Why the last PDF fetch failed, while some are missing.
    pub last_pdf_error: Option<String>,
    /// The current delivery error (the last poll failed), if any.
    pub last_delivery_error: Option<LastDeliveryError>,
    /// The last time the hub answered a poll (RFC 3339).
    pub last_contact: Option<String>,
    /// The local page's address, or why it is not listening.
    pub page: Option<String>,
    /// Forwarding to the HIS (HL7), when any version was meant for it.
    pub his: Option<HisStatus>,
}

/// Forwarding of reports to the township HIS as HL7 messages.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HisStatus {
    /// Accepted by the HIS.
    pub sent: i64,
    /// Waiting (retried with backoff).
    pub pending: i64,
    /// Refused by the HIS for good.
    pub refused: i64,
    /// The last error of a waiting or refused message.
    pub last_error: Option<String>,
}

/// The current delivery error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastDeliveryError {
    /// When (RFC 3339).
    pub at: String,
    /// What went wrong.
    pub error: String,
}

/// Read the status of the gateway whose data directory is `data_dir`.
pub async fn collect(data_dir: &Path) -> Result<StatusReport, OutboxError> {
    let pool = outbox::open_read_only(data_dir).await?;
    let report = collect_from(&pool, data_dir).await;
    pool.close().await;
    report
}

/// [`collect`] over an open pool (the township page reads through the gateway's own).
pub(crate) async fn collect_from(
    pool: &SqlitePool,
    data_dir: &Path,
) -> Result<StatusReport, OutboxError> {
    let now = now_ms();
    let row = sqlx::query(
        "SELECT COUNT(*), COALESCE(SUM(size), 0),
                COALESCE(SUM(priority = 1), 0), COALESCE(SUM(CASE WHEN priority = 1 THEN size ELSE 0 END), 0)
         FROM items WHERE state = 'pending'",
    )
    .fetch_one(pool)
    .await?;
    let pending = Queue {
        count: row.try_get(0)?,
        bytes: row.try_get(1)?,
    };
    let pending_stat = Queue {
        count: row.try_get(2)?,
        bytes: row.try_get(3)?,
    };
    let oldest_pending = sqlx::query(
        "SELECT sop_instance_uid, received_at, attempts, study_uid FROM items
         WHERE state = 'pending' ORDER BY received_at, id LIMIT 1",
    )
    .fetch_optional(pool)
    .await?
    .map(|r| -> Result<Oldest, sqlx::Error> {
        let received: i64 = r.try_get(1)?;
        Ok(Oldest {
            sop_instance_uid: r.try_get(0)?,
            study_uid: r.try_get(3)?,
            received_at: rfc3339(received),
            age_secs: age_secs(now, received),
            attempts: r.try_get(2)?,
        })
    })
    .transpose()?;
    let last_error = sqlx::query(
        "SELECT last_error_at, sop_instance_uid, last_error FROM items
         WHERE state = 'pending' AND last_error IS NOT NULL
         ORDER BY last_error_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?
    .map(|r| -> Result<LastError, sqlx::Error> {
        Ok(LastError {
            at: rfc3339(r.try_get::<Option<i64>, _>(0)?.unwrap_or(0)),
            sop_instance_uid: r.try_get(1)?,
            error: r.try_get(2)?,
        })
    })
    .transpose()?;
    let counts = sqlx::query(
        "SELECT COALESCE(SUM(state = 'delivered'), 0), COALESCE(SUM(state = 'rejected'), 0) FROM items",
    )
    .fetch_one(pool)
    .await?;
    let studies = sqlx::query(
        "SELECT COUNT(*),
                (SELECT last_notify_error FROM studies WHERE notified_at IS NULL
                   AND last_notify_error IS NOT NULL ORDER BY next_notify_at DESC LIMIT 1)
         FROM studies s WHERE s.notified_at IS NULL
           AND EXISTS (SELECT 1 FROM items i WHERE i.study_uid = s.study_uid AND i.state != 'rejected')",
    )
    .fetch_one(pool)
    .await?;
    let has_lab = table_exists(pool, FileLane::Lab).await?;
    // Before the laboratory migration every quarantine row was DICOM (and there was no
    // `kind` column to ask).
    let dicom = if has_lab { Kinds::Dicom } else { Kinds::All };
    let quarantined: i64 = sqlx::query(match dicom {
        Kinds::All => "SELECT COUNT(*) FROM quarantine",
        _ => "SELECT COUNT(*) FROM quarantine WHERE kind = 'dicom'",
    })
    .fetch_one(pool)
    .await?
    .try_get(0)?;
    let quarantine = quarantine_rows(pool, dicom).await?;
    let ecg = if table_exists(pool, FileLane::Ecg).await? {
        Some(ecg_status(pool, now).await?)
    } else {
        None
    };
    Ok(StatusReport {
        site: None,
        data_dir: data_dir.display().to_string(),
        pending,
        pending_stat,
        oldest_pending,
        last_error,
        delivered: counts.try_get(0)?,
        rejected: counts.try_get(1)?,
        studies_awaiting_completion: studies.try_get(0)?,
        last_completion_error: studies.try_get(1)?,
        quarantined,
        quarantine,
        reports: reports_status(pool).await?,
        lab: if has_lab {
            Some(lab_status(pool, now).await?)
        } else {
            None
        },
        ecg,
    })
}

/// Which quarantine rows to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kinds {
    /// All (a database from before HL7: no `kind` column).
    All,
    /// DICOM instances.
    Dicom,
    /// HL7 messages.
    Hl7,
    /// ECG files.
    Ecg,
}

async fn quarantine_rows(
    pool: &SqlitePool,
    kinds: Kinds,
) -> Result<Vec<QuarantineRow>, OutboxError> {
    Ok(sqlx::query(match kinds {
        Kinds::All => {
            "SELECT created_at, source, sop_instance_uid, calling_ae, path, reason, NULL, NULL,
                    study_uid
             FROM quarantine ORDER BY created_at DESC, id DESC LIMIT ?"
        }
        // `file_name` is only asked where it must exist (the ECG migration added it).
        Kinds::Dicom => {
            "SELECT created_at, source, sop_instance_uid, calling_ae, path, reason, control_id, NULL,
                    study_uid
             FROM quarantine WHERE kind = 'dicom' ORDER BY created_at DESC, id DESC LIMIT ?"
        }
        Kinds::Hl7 => {
            "SELECT created_at, source, sop_instance_uid, calling_ae, path, reason, control_id, NULL,
                    study_uid
             FROM quarantine WHERE kind = 'hl7' ORDER BY created_at DESC, id DESC LIMIT ?"
        }
        Kinds::Ecg => {
            "SELECT created_at, source, sop_instance_uid, calling_ae, path, reason, control_id,
                    file_name, study_uid
             FROM quarantine WHERE kind = 'ecg' ORDER BY created_at DESC, id DESC LIMIT ?"
        }
    })
    .bind(QUARANTINE_LISTED)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| -> Result<QuarantineRow, sqlx::Error> {
        Ok(QuarantineRow {
            at: rfc3339(r.try_get(0)?),
            source: r.try_get(1)?,
            sop_instance_uid: r.try_get(2)?,
            calling_ae: r.try_get(3)?,
            path: r.try_get(4)?,
            reason: r.try_get(5)?,
            control_id: r.try_get(6)?,
            file_name: r.try_get(7)?,
            study_uid: r.try_get(8)?,
        })
    })
    .collect::<Result<Vec<_>, _>>()?)
}

async fn lab_status(pool: &SqlitePool, now: i64) -> Result<LabStatus, OutboxError> {
    let listener: Option<String> =
        sqlx::query_scalar("SELECT listener FROM lab_state WHERE id = 1")
            .fetch_optional(pool)
            .await?
            .flatten();
    let f = figures(pool, FileLane::Lab).await?;
    Ok(LabStatus {
        listener,
        received: f.total,
        waiting: f.waiting,
        waiting_urgent: f.waiting_urgent,
        oldest_waiting: f.oldest_waiting.map(|o| OldestLab {
            control_id: o.name,
            patient_id: o.patient_id,
            received_at: rfc3339(o.received_at),
            age_secs: age_secs(now, o.received_at),
            attempts: o.attempts,
        }),
        last_error: f.last_error.map(|e| LabError {
            at: rfc3339(e.at),
            control_id: e.name,
            error: e.error,
        }),
        delivered: f.delivered,
        refused: f.refused,
        rejected_by_hub: f.rejected_by_hub,
        quarantine: quarantine_rows(pool, Kinds::Hl7).await?,
    })
}

async fn ecg_status(pool: &SqlitePool, now: i64) -> Result<EcgStatus, OutboxError> {
    let state = sqlx::query("SELECT import_dir, note FROM ecg_state WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    let (import_dir, note): (Option<String>, Option<String>) = match state {
        Some(r) => (r.try_get(0)?, r.try_get(1)?),
        None => (None, None),
    };
    let in_folder = import_dir
        .as_deref()
        .and_then(|dir| count_waiting_files(Path::new(dir)));
    let f = figures(pool, FileLane::Ecg).await?;
    Ok(EcgStatus {
        import_dir,
        note,
        in_folder,
        imported: f.total,
        waiting: f.waiting,
        waiting_stat: f.waiting_urgent,
        oldest_waiting: f.oldest_waiting.map(|o| OldestEcg {
            file_name: o.name,
            patient_id: o.patient_id,
            stat: o.urgent,
            received_at: rfc3339(o.received_at),
            age_secs: age_secs(now, o.received_at),
            attempts: o.attempts,
        }),
        last_error: f.last_error.map(|e| EcgErrorRow {
            at: rfc3339(e.at),
            file_name: e.name,
            error: e.error,
        }),
        delivered: f.delivered,
        refused: f.refused,
        rejected_by_hub: f.rejected_by_hub,
        quarantine: quarantine_rows(pool, Kinds::Ecg).await?,
    })
}

/// Seconds from `received` (ms) to `now` (ms), never negative.
fn age_secs(now: i64, received: i64) -> i64 {
    (now - received).max(0) / 1000
}

/// Files the watcher would take from the folder and its `stat/` subfolder (names
/// starting with `.` are temporary files and markers). `None` when it cannot be read
/// from here (another user's folder).
fn count_waiting_files(dir: &Path) -> Option<i64> {
    let mut n = 0;
    for d in [dir.to_path_buf(), dir.join(crate::ecg::STAT_SUBDIR)] {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        for entry in entries.flatten() {
            let visible = !entry.file_name().to_string_lossy().starts_with('.');
            if visible && entry.file_type().is_ok_and(|t| t.is_file()) {
                n += 1;
            }
        }
    }
    Some(n)
}

async fn reports_status(pool: &SqlitePool) -> Result<Option<ReportsStatus>, OutboxError> {
    if !crate::reports::db::tables_exist(pool).await? {
        return Ok(None);
    }
    let state = crate::reports::db::feed_state(pool).await?;
    let versions = sqlx::query(
        "SELECT COALESCE(SUM(verified = 1), 0), COUNT(DISTINCT CASE WHEN verified = 1 THEN report_id END),
                COALESCE(SUM(verified = 1 AND pdf_path IS NULL), 0),
                COALESCE(SUM(acknowledged_at IS NOT NULL AND relayed_at IS NULL), 0),
                (SELECT relay_error FROM report_versions WHERE acknowledged_at IS NOT NULL
                   AND relayed_at IS NULL AND relay_error IS NOT NULL ORDER BY relay_next_at DESC LIMIT 1),
                (SELECT pdf_error FROM report_versions WHERE verified = 1 AND pdf_path IS NULL
                   AND pdf_error IS NOT NULL ORDER BY pdf_next_at DESC LIMIT 1)
         FROM report_versions",
    )
    .fetch_one(pool)
    .await?;
    // Current version = the newest verified one of each report.
    let critical_waiting: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM report_versions v
         WHERE v.verified = 1 AND v.critical = 1 AND v.acknowledged_at IS NULL
           AND v.version = (SELECT MAX(o.version) FROM report_versions o
                            WHERE o.report_id = v.report_id AND o.verified = 1)",
    )
    .fetch_one(pool)
    .await?;
    let deliveries = sqlx::query(
        "SELECT COALESCE(SUM(status = 'rejected'), 0), COALESCE(SUM(ack_sent_at IS NULL), 0)
         FROM report_deliveries",
    )
    .fetch_one(pool)
    .await?;
    let last_rejection = sqlx::query(
        "SELECT received_at, report_id, version, reason FROM report_deliveries
         WHERE status = 'rejected' ORDER BY received_at DESC, cursor DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?
    .map(|r| -> Result<Rejection, sqlx::Error> {
        Ok(Rejection {
            at: rfc3339(r.try_get(0)?),
            report_id: r.try_get(1)?,
            version: r.try_get(2)?,
            reason: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
        })
    })
    .transpose()?;
    let his_row = sqlx::query(
        "SELECT COALESCE(SUM(hl7_state = 'sent'), 0), COALESCE(SUM(hl7_state = 'pending'), 0),
                COALESCE(SUM(hl7_state = 'refused'), 0), COUNT(hl7_state),
                (SELECT hl7_error FROM report_versions WHERE hl7_state IN ('pending', 'refused')
                   AND hl7_error IS NOT NULL ORDER BY hl7_next_at DESC, id DESC LIMIT 1)
         FROM report_versions",
    )
    .fetch_one(pool)
    .await?;
    let his = if his_row.try_get::<i64, _>(3)? > 0 {
        Some(HisStatus {
            sent: his_row.try_get(0)?,
            pending: his_row.try_get(1)?,
            refused: his_row.try_get(2)?,
            last_error: his_row.try_get(4)?,
        })
    } else {
        None
    };
    Ok(Some(ReportsStatus {
        his,
        received: versions.try_get(0)?,
        reports: versions.try_get(1)?,
        cursor: state.cursor,
        rejected: deliveries.try_get(0)?,
        last_rejection,
        critical_waiting,
        acknowledgements_unrelayed: versions.try_get(3)?,
        last_relay_error: versions.try_get(4)?,
        acks_pending: deliveries.try_get(1)?,
        pdfs_missing: versions.try_get(2)?,
        last_pdf_error: versions.try_get(5)?,
        last_delivery_error: state.last_error.map(|error| LastDeliveryError {
            at: rfc3339(state.last_error_at.unwrap_or(0)),
            error,
        }),
        last_contact: state.last_contact_at.map(rfc3339),
        page: state.page,
    }))
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn human_age(secs: i64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0) as u64)).to_string()
}

/// One quarantine line: when, where from, what (`what`), why and the kept file.
fn write_quarantine_row(
    f: &mut fmt::Formatter<'_>,
    indent: &str,
    q: &QuarantineRow,
    what: &str,
) -> fmt::Result {
    let file = q
        .path
        .as_deref()
        .map(|p| format!(" (file: {p})"))
        .unwrap_or_default();
    writeln!(
        f,
        "{indent}{} [{}] {what}: {}{file}",
        q.at, q.source, q.reason
    )
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.site {
            Some(site) => writeln!(f, "gateway status, site {site} ({})", self.data_dir)?,
            None => writeln!(f, "gateway status ({})", self.data_dir)?,
        }
        writeln!(
            f,
            "queue: {} pending ({}), of which {} STAT ({})",
            self.pending.count,
            human_bytes(self.pending.bytes),
            self.pending_stat.count,
            human_bytes(self.pending_stat.bytes)
        )?;
        match &self.oldest_pending {
            Some(o) => writeln!(
                f,
                "oldest waiting: {} ago, SOP {} (received {}, {} failed attempts)",
                human_age(o.age_secs),
                o.sop_instance_uid,
                o.received_at,
                o.attempts
            )?,
            None => writeln!(f, "oldest waiting: none")?,
        }
        match &self.last_error {
            Some(e) => writeln!(
                f,
                "last error: {} SOP {}: {}",
                e.at, e.sop_instance_uid, e.error
            )?,
            None => writeln!(f, "last error: none")?,
        }
        writeln!(f, "delivered: {}", self.delivered)?;
        write!(
            f,
            "studies awaiting completion: {}",
            self.studies_awaiting_completion
        )?;
        match &self.last_completion_error {
            Some(e) => writeln!(f, " (last notice error: {e})")?,
            None => writeln!(f)?,
        }
        writeln!(
            f,
            "rejected by hub: {}; quarantined: {}",
            self.rejected, self.quarantined
        )?;
        for q in &self.quarantine {
            let what = format!(
                "SOP {} from {}",
                q.sop_instance_uid.as_deref().unwrap_or("?"),
                q.calling_ae.as_deref().unwrap_or("?")
            );
            write_quarantine_row(f, "  ", q, &what)?;
        }
        if let Some(r) = &self.reports {
            write!(f, "{r}")?;
        }
        if let Some(lab) = &self.lab {
            write!(f, "{lab}")?;
        }
        if let Some(ecg) = &self.ecg {
            write!(f, "{ecg}")?;
        }
        Ok(())
    }
}

impl fmt::Display for EcgStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.import_dir, &self.note) {
            (Some(dir), _) => {
                write!(f, "ECG files: import folder {dir}")?;
                match self.in_folder {
                    Some(n) => writeln!(f, " ({n} not yet taken)")?,
                    None => writeln!(f)?,
                }
            }
            (None, Some(note)) => writeln!(f, "ECG files: import folder {note}")?,
            (None, None) => writeln!(f, "ECG files: import folder not started")?,
        }
        writeln!(
            f,
            "  imported: {}; waiting: {} (of which {} STAT); delivered: {}",
            self.imported, self.waiting, self.waiting_stat, self.delivered
        )?;
        if let Some(o) = &self.oldest_waiting {
            writeln!(
                f,
                "  oldest waiting: {} ago, {}{} patient {} (imported {}, {} failed attempts)",
                human_age(o.age_secs),
                o.file_name,
                if o.stat { " STAT," } else { "," },
                o.patient_id.as_deref().unwrap_or("?"),
                o.received_at,
                o.attempts
            )?;
        }
        match &self.last_error {
            Some(e) => writeln!(f, "  last error: {} {}: {}", e.at, e.file_name, e.error)?,
            None => writeln!(f, "  last error: none")?,
        }
        writeln!(
            f,
            "  quarantined: {} refused on import, {} rejected by hub",
            self.refused, self.rejected_by_hub
        )?;
        for q in &self.quarantine {
            write_quarantine_row(f, "    ", q, q.file_name.as_deref().unwrap_or("?"))?;
        }
        Ok(())
    }
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lab results (HL7): listener {}",
            self.listener.as_deref().unwrap_or("not started")
        )?;
        writeln!(
            f,
            "  received: {}; waiting: {} (of which {} urgent); delivered: {}",
            self.received, self.waiting, self.waiting_urgent, self.delivered
        )?;
        if let Some(o) = &self.oldest_waiting {
            writeln!(
                f,
                "  oldest waiting: {} ago, MSH-10 {} (received {}, {} failed attempts)",
                human_age(o.age_secs),
                o.control_id,
                o.received_at,
                o.attempts
            )?;
        }
        match &self.last_error {
            Some(e) => writeln!(
                f,
                "  last error: {} MSH-10 {}: {}",
                e.at, e.control_id, e.error
            )?,
            None => writeln!(f, "  last error: none")?,
        }
        writeln!(
            f,
            "  quarantined: {} refused on receipt, {} rejected by hub",
            self.refused, self.rejected_by_hub
        )?;
        for q in &self.quarantine {
            let what = format!(
                "MSH-10 {} from {}",
                q.control_id.as_deref().unwrap_or("?"),
                q.calling_ae.as_deref().unwrap_or("?")
            );
            write_quarantine_row(f, "    ", q, &what)?;
        }
        Ok(())
    }
}

impl fmt::Display for ReportsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "reports: {} received ({} reports), cursor {}, last contact {}",
            self.received,
            self.reports,
            self.cursor,
            self.last_contact.as_deref().unwrap_or("never")
        )?;
        write!(f, "  rejected: {}", self.rejected)?;
        match &self.last_rejection {
            Some(r) => writeln!(
                f,
                " (last: {} report {} v{}: {})",
                r.at,
                r.report_id.as_deref().unwrap_or("?"),
                r.version.map_or_else(|| "?".to_string(), |v| v.to_string()),
                r.reason
            )?,
            None => writeln!(f)?,
        }
        writeln!(
            f,
            "  critical awaiting acknowledgement: {}",
            self.critical_waiting
        )?;
        write!(
            f,
            "  acknowledgements not yet relayed to the hub: {}",
            self.acknowledgements_unrelayed
        )?;
        match &self.last_relay_error {
            Some(e) if self.acknowledgements_unrelayed > 0 => writeln!(f, " (last error: {e})")?,
            _ => writeln!(f)?,
        }
        write!(
            f,
            "  acks not yet sent: {}; PDFs not yet fetched: {}",
            self.acks_pending, self.pdfs_missing
        )?;
        match &self.last_pdf_error {
            Some(e) if self.pdfs_missing > 0 => writeln!(f, " (last PDF error: {e})")?,
            _ => writeln!(f)?,
        }
        match &self.last_delivery_error {
            Some(e) => writeln!(f, "  last delivery error: {} {}", e.at, e.error)?,
            None => writeln!(f, "  last delivery error: none")?,
        }
        if let Some(page) = &self.page {
            writeln!(f, "  local page: {page}")?;
        }
        if let Some(his) = &self.his {
            write!(
                f,
                "  HIS (HL7): {} sent, {} waiting, {} refused",
                his.sent, his.pending, his.refused
            )?;
            match &his.last_error {
                Some(e) if his.pending + his.refused > 0 => writeln!(f, " (last error: {e})")?,
                _ => writeln!(f)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
        assert_eq!(human_age(3725), "1h 2m 5s");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
