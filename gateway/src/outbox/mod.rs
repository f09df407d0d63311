//! The durable outbox: a SQLite database (WAL) in the data directory recording every
//! received instance until the hub has acknowledged it.
//!
//! All writes go through one task, the committer (`committer` module), which commits whatever
//! is queued in a single transaction (group commit) and only then answers the waiters;
//! reads use a small connection pool (WAL readers never block the writer).
//!
//! Durability: the writer runs with `synchronous=NORMAL` and a commit is made durable by
//! an fdatasync of the WAL file ([`WalSync`]) before anyone is answered: the committer
//! does it for every group except C-STORE rows, whose receivers do it themselves once
//! their spool file's fsync has finished. Two fsyncs at once on one disk take longer
//! than one after the other, and with SQLite's own `FULL` sync the WAL's fsync ran during
//! the spool file's (about a fifth of the C-STORE rate on one association).

mod committer;
mod recovery;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::activity::ReceiveActivity;
use crate::spool::Spool;

pub(crate) use committer::insert_quarantine;
pub use committer::Committer;
pub use recovery::RecoveryReport;

/// File name of the outbox database inside the data directory.
pub const DB_FILE: &str = "gateway.db";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// SQLite refused or failed.
    #[error("outbox database: {0}")]
    Db(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("outbox migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A spool file operation failed during recovery.
    #[error("spool: {0}")]
    Io(#[from] std::io::Error),
    /// The committer task is gone (shutting down).
    #[error("outbox writer has stopped")]
    WriterGone,
    /// The database file does not exist (for read-only openers such as `status`).
    #[error("no gateway database at {0}")]
    Missing(PathBuf),
}

/// Milliseconds since the Unix epoch, the unit of every time in the database.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Instance priority: STAT is forwarded before everything routine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Routine (0).
    Routine,
    /// STAT (1).
    Stat,
}

impl Priority {
    /// Database representation.
    pub fn as_i64(self) -> i64 {
        match self {
            Priority::Routine => 0,
            Priority::Stat => 1,
        }
    }

    /// From the database representation (anything non-zero is STAT).
    pub fn from_i64(v: i64) -> Priority {
        if v != 0 {
            Priority::Stat
        } else {
            Priority::Routine
        }
    }

    /// "stat" or "routine", as the hub's completion API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Routine => "routine",
            Priority::Stat => "stat",
        }
    }
}

/// A received, validated instance to record as pending.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// Transfer syntax of the data set as received.
    pub transfer_syntax_uid: String,
    /// Calling AE title of the association.
    pub calling_ae: String,
    /// Called AE title of the association.
    pub called_ae: String,
    /// Spool file relative to the data directory.
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    /// Offset of the data set in the file.
    pub dataset_offset: u64,
    /// Hex SHA-256 of the data set.
    pub sha256: String,
    /// STAT or routine.
    pub priority: Priority,
    /// Patient and exam from the header, kept on the study for the township page.
    pub labels: StudyLabels,
}

/// What the township page shows of a study, from an instance's header (each optional:
/// modalities leave fields empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyLabels {
    /// Patient ID (0010,0020).
    pub patient_id: Option<String>,
    /// Patient's Name (0010,0010) as written (`alphabetic=ideographic`).
    pub patient_name: Option<String>,
    /// Accession Number (0008,0050).
    pub accession_number: Option<String>,
    /// Modality (0008,0060).
    pub modality: Option<String>,
}

/// What recording an instance did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// A new pending item with this id.
    Stored(i64),
    /// The same SOP Instance UID with identical data set bytes is already pending (or
    /// delivered) as this item: nothing new was recorded; the caller's file is surplus.
    Duplicate(i64),
}

/// A quarantine record.
#[derive(Debug, Clone, Default)]
pub struct QuarantineEntry {
    /// The item, when the hub rejected a recorded instance.
    pub item_id: Option<i64>,
    /// SOP Instance UID, when known.
    pub sop_instance_uid: Option<String>,
    /// Study Instance UID, when known.
    pub study_uid: Option<String>,
    /// Calling AE title of the sender.
    pub calling_ae: Option<String>,
    /// The kept file (relative to the data directory), if any.
    pub path: Option<String>,
    /// "receive" (refused on receipt) or "hub" (rejected by the hub).
    pub source: QuarantineSource,
    /// Why, in words an operator can act on.
    pub reason: String,
    /// A DICOM instance, an HL7 message or an ECG file.
    pub kind: QuarantineKind,
    /// MSH-10 of an HL7 message, when it could be read.
    pub control_id: Option<String>,
    /// Hex SHA-256 of the kept bytes (HL7, ECG: a repeated refusal is recorded once).
    pub sha256: Option<String>,
    /// The original name of an ECG file.
    pub file_name: Option<String>,
}

/// What a quarantine entry holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QuarantineKind {
    /// A DICOM instance.
    #[default]
    Dicom,
    /// An HL7 v2 message (laboratory results).
    Hl7,
    /// An ECG file from the import folder.
    Ecg,
}

impl QuarantineKind {
    /// The `kind` column's value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            QuarantineKind::Dicom => "dicom",
            QuarantineKind::Hl7 => "hl7",
            QuarantineKind::Ecg => "ecg",
        }
    }
}

/// Where a quarantine entry came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QuarantineSource {
    /// Refused while receiving (unparsable, UID mismatch).
    #[default]
    Receive,
    /// Permanently rejected by the hub.
    Hub,
}

impl QuarantineSource {
    fn as_str(self) -> &'static str {
        match self {
            QuarantineSource::Receive => "receive",
            QuarantineSource::Hub => "hub",
        }
    }
}

/// A delivery result for one item, written by the committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemUpdate {
    /// The hub listed it in ReferencedSOPSequence.
    Delivered {
        /// Item id.
        id: i64,
    },
    /// Try again at `next_attempt_at` (ms); counts as a failed attempt.
    Retry {
        /// Item id.
        id: i64,
        /// When to try again.
        next_attempt_at: i64,
        /// What went wrong.
        error: String,
    },
    /// The hub refused a multi-instance request as a whole: send this one alone, now.
    SendAlone {
        /// Item id.
        id: i64,
        /// What the hub said.
        error: String,
    },
    /// Permanently rejected: state `rejected`, quarantine row with the reason.
    Rejected {
        /// Item id.
        id: i64,
        /// The hub's reason.
        reason: String,
        /// Where the file now lives (quarantine/...), if it still exists.
        quarantine_path: Option<String>,
    },
}

/// The outcome of telling the hub a study is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeResult {
    /// The hub answered 200. Only recorded if no instance arrived meanwhile.
    Acknowledged {
        /// Study Instance UID.
        study_uid: String,
        /// `last_received_at` the notice was based on.
        last_received_at: i64,
    },
    /// Anything else: try again at `next_notify_at`.
    Failed {
        /// Study Instance UID.
        study_uid: String,
        /// When to try again (ms).
        next_notify_at: i64,
        /// What went wrong.
        error: String,
    },
}

/// A pending item that is due, as the forwarder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueItem {
    /// Item id.
    pub id: i64,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Calling AE (for quarantine records).
    pub calling_ae: String,
    /// Spool file relative to the data directory.
    pub path: String,
    /// File size.
    pub size: u64,
    /// STAT or routine.
    pub priority: Priority,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Must be sent in a request of its own.
    pub solo: bool,
    /// Where the data set starts in the file.
    pub dataset_offset: u64,
    /// Hex SHA-256 of the data set as received.
    pub sha256: String,
}

/// A study ready to be reported complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteStudy {
    /// Study Instance UID.
    pub study_uid: String,
    /// STAT if any instance was.
    pub priority: Priority,
    /// Time of the last instance (guards the acknowledgement against late arrivals).
    pub last_received_at: i64,
    /// Failed notices so far.
    pub notify_attempts: u32,
    /// Distinct instances the hub has acknowledged.
    pub delivered_instances: i64,
}

/// Handle to the outbox: reads through the pool, writes through the committer.
#[derive(Clone, Debug)]
pub struct Outbox {
    pool: SqlitePool,
    writer: mpsc::UnboundedSender<committer::Request>,
    forwarder_wake: Arc<Notify>,
    completion_wake: Arc<Notify>,
    /// Receiving as it happens: set by associations, read by the forwarder.
    activity: Arc<ReceiveActivity>,
    wal: WalSync,
}

/// Makes the outbox's commits durable: an fdatasync of the WAL file (the whole of what
/// a commit wrote under `synchronous=NORMAL`).
#[derive(Debug, Clone)]
pub struct WalSync {
    wal: PathBuf,
    db: PathBuf,
}

impl WalSync {
    fn new(db: &Path) -> Self {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            db: db.to_path_buf(),
        }
    }

    /// Every commit so far is on disk when this returns `Ok`.
    pub async fn sync(&self) -> std::io::Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // Opened each time: SQLite may have replaced the file since (it does not
            // while connections are open, but a stale descriptor would sync nothing).
            match std::fs::File::open(&this.wal) {
                Ok(f) => f.sync_data(),
                // No WAL: everything is in the database file (checkpointed).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::File::open(&this.db)?.sync_data()
                }
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL: commits are made durable by [`WalSync`] (see the module notes).
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
}

/// Open a read-only pool on an existing outbox database (for `gateway status`). Works
/// while the gateway runs: WAL readers do not disturb the writer.
pub async fn open_read_only(data_dir: &Path) -> Result<SqlitePool, OutboxError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Err(OutboxError::Missing(path));
    }
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?)
}

impl Outbox {
    /// Open (creating and migrating) the database in `data_dir`, recover from the last
    /// run, and return the handle plus the committer to spawn.
    pub async fn open(
        data_dir: &Path,
        spool: &Spool,
    ) -> Result<(Outbox, Committer, RecoveryReport), OutboxError> {
        let path = data_dir.join(DB_FILE);
        let options = connect_options(&path);
        let mut writer_conn =
            SqliteConnection::connect_with(&options.clone().create_if_missing(true)).await?;
        MIGRATOR.run(&mut writer_conn).await?;
        let report = recovery::recover(&mut writer_conn, spool).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let forwarder_wake = Arc::new(Notify::new());
        let completion_wake = Arc::new(Notify::new());
        let wal = WalSync::new(&path);
        let committer = Committer::new(
            writer_conn,
            rx,
            Arc::clone(&forwarder_wake),
            Arc::clone(&completion_wake),
            wal.clone(),
        );
        Ok((
            Outbox {
                pool,
                writer: tx,
                forwarder_wake,
                completion_wake,
                activity: Arc::new(ReceiveActivity::default()),
                wal,
            },
            committer,
            report,
        ))
    }

    /// The read pool (for status queries and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Woken after commits that create work for the forwarder.
    pub fn forwarder_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.forwarder_wake)
    }

    /// Whether instances are being received right now (the forwarder makes way).
    pub fn receive_activity(&self) -> &Arc<ReceiveActivity> {
        &self.activity
    }

    /// Woken after commits that may complete a study.
    pub fn completion_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.completion_wake)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, OutboxError>>) -> committer::Request,
    ) -> Result<T, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(make(reply))
            .map_err(|_| OutboxError::WriterGone)?;
        answer.await.map_err(|_| OutboxError::WriterGone)?
    }

    /// Record a received instance, committed but not yet durable: call
    /// [`Outbox::sync`] before telling the sender. `new_for_association` says whether
    /// this association has not stored into the study before (it then counts as open
    /// there).
    pub async fn store(
        &self,
        item: NewItem,
        new_for_association: bool,
    ) -> Result<StoreOutcome, OutboxError> {
        self.call(|reply| committer::Request::Store {
            item,
            new_for_association,
            reply,
        })
        .await
    }

    /// Make every commit so far durable. A received instance's row is committed without
    /// it ([`Outbox::store`]); its receiver calls this after the spool file's fsync,
    /// before answering the C-STORE.
    pub async fn sync(&self) -> std::io::Result<()> {
        self.wal.sync().await
    }

    /// Record that an item's spool file fsync completed. Not waited for: it rides along
    /// with the next commit (see the committer for why that is safe).
    pub fn file_synced(&self, id: i64) {
        let _ = self.writer.send(committer::Request::FileSynced { id });
    }

    /// Remove a pending item whose spool file could not be made durable (the sender
    /// is told to retry, so nothing is lost).
    pub async fn abandon(&self, id: i64) -> Result<(), OutboxError> {
        self.call(|reply| committer::Request::Abandon { id, reply })
            .await
    }

    /// Durably record a quarantine entry.
    pub async fn quarantine(&self, entry: QuarantineEntry) -> Result<(), OutboxError> {
        self.call(|reply| committer::Request::Quarantine { entry, reply })
            .await
    }

    /// An association ended: it no longer holds these studies open. Fire-and-forget so
    /// it can be called from `Drop`.
    pub fn association_closed(&self, studies: Vec<String>) {
        if !studies.is_empty() {
            let _ = self
                .writer
                .send(committer::Request::AssociationClosed { studies });
        }
    }

    /// Apply delivery results.
    pub async fn apply(&self, updates: Vec<ItemUpdate>) -> Result<(), OutboxError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.call(|reply| committer::Request::Updates { updates, reply })
            .await
    }

    /// Record the outcome of a completion notice.
    pub async fn record_notice(&self, notice: NoticeResult) -> Result<(), OutboxError> {
        self.call(|reply| committer::Request::Notice { notice, reply })
            .await
    }

    /// Pending items due at `now`, STAT first then oldest. Only the oldest pending
    /// version of each SOP Instance UID is offered, so versions reach the hub in the
    /// order they were received.
    pub async fn due_items(&self, now: i64, limit: i64) -> Result<Vec<DueItem>, OutboxError> {
        let rows = sqlx::query(
            "SELECT id, sop_instance_uid, study_uid, calling_ae, path, size, priority, attempts, solo,
                    dataset_offset, sha256
             FROM items i
             WHERE state = 'pending' AND next_attempt_at <= ?
               AND NOT EXISTS (SELECT 1 FROM items o WHERE o.sop_instance_uid = i.sop_instance_uid
                               AND o.state = 'pending' AND o.id < i.id)
             ORDER BY priority DESC, received_at, id
             LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(due_item).collect()
    }

    /// When the next pending item (or the laboratory message at the head of its queue,
    /// or an ECG file) becomes due, if anything is pending.
    pub async fn next_due_at(&self) -> Result<Option<i64>, OutboxError> {
        let row = sqlx::query(
            "SELECT MIN(due) FROM (
                 SELECT MIN(next_attempt_at) AS due FROM items WHERE state = 'pending'
                 UNION ALL
                 SELECT next_attempt_at FROM (SELECT next_attempt_at FROM lab_messages
                                              WHERE state = 'pending' ORDER BY id LIMIT 1)
                 UNION ALL
                 SELECT MIN(next_attempt_at) FROM ecg_files WHERE state = 'pending')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Studies whose associations are closed, that have been quiet since `cutoff`, have
    /// nothing pending, have at least one delivered instance and are due for a notice.
    pub async fn complete_studies(
        &self,
        cutoff: i64,
        now: i64,
    ) -> Result<Vec<CompleteStudy>, OutboxError> {
        let rows = sqlx::query(
            "SELECT s.study_uid, s.priority, s.last_received_at, s.notify_attempts,
                    (SELECT COUNT(DISTINCT d.sop_instance_uid) FROM items d
                     WHERE d.study_uid = s.study_uid AND d.state = 'delivered') AS delivered
             FROM studies s
             WHERE s.notified_at IS NULL AND s.open_associations = 0
               AND s.last_received_at <= ? AND s.next_notify_at <= ?
               AND NOT EXISTS (SELECT 1 FROM items p WHERE p.study_uid = s.study_uid
                               AND p.state = 'pending')
               -- All instances rejected: there is nothing at the hub to complete.
               AND EXISTS (SELECT 1 FROM items d WHERE d.study_uid = s.study_uid
                           AND d.state = 'delivered')
             ORDER BY s.priority DESC, s.last_received_at
             LIMIT 64",
        )
        .bind(cutoff)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CompleteStudy {
                    study_uid: row.try_get("study_uid")?,
                    priority: Priority::from_i64(row.try_get("priority")?),
                    last_received_at: row.try_get("last_received_at")?,
                    notify_attempts: row.try_get::<i64, _>("notify_attempts")?.max(0) as u32,
                    delivered_instances: row.try_get("delivered")?,
                })
            })
            .collect()
    }

    /// Durably apply a write to the report tables (committed before this returns).
    pub async fn write_report(
        &self,
        write: crate::reports::db::ReportWrite,
    ) -> Result<crate::reports::db::ReportOutcome, OutboxError> {
        self.call(|reply| committer::Request::Report { write, reply })
            .await
    }

    /// Durably apply a write to the laboratory message table (committed before this
    /// returns).
    pub async fn write_lab(
        &self,
        write: crate::lab::db::LabWrite,
    ) -> Result<crate::lab::db::LabOutcome, OutboxError> {
        self.call(|reply| committer::Request::Lab { write, reply })
            .await
    }

    /// Durably apply a write to the ECG file table (committed before this returns).
    pub async fn write_ecg(
        &self,
        write: crate::ecg::db::EcgWrite,
    ) -> Result<crate::ecg::db::EcgOutcome, OutboxError> {
        self.call(|reply| committer::Request::Ecg { write, reply })
            .await
    }

    /// Durably record what the hub said about an item of a file lane (committed before
    /// this returns).
    pub async fn record_delivery(
        &self,
        lane: crate::filelane::FileLane,
        delivery: crate::filelane::db::Delivery,
    ) -> Result<(), OutboxError> {
        self.call(|reply| committer::Request::Delivery {
            lane,
            delivery,
            reply,
        })
        .await
    }

    /// Close the read pool (the committer closes its own connection when it stops).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn due_item(row: &SqliteRow) -> Result<DueItem, OutboxError> {
    Ok(DueItem {
        id: row.try_get("id")?,
        sop_instance_uid: row.try_get("sop_instance_uid")?,
        study_uid: row.try_get("study_uid")?,
        calling_ae: row.try_get("calling_ae")?,
        path: row.try_get("path")?,
        size: row.try_get::<i64, _>("size")?.max(0) as u64,
        priority: Priority::from_i64(row.try_get("priority")?),
        attempts: row.try_get::<i64, _>("attempts")?.clamp(0, u32::MAX as i64) as u32,
        solo: row.try_get::<i64, _>("solo")? != 0,
        dataset_offset: row.try_get::<i64, _>("dataset_offset")?.max(0) as u64,
        sha256: row.try_get("sha256")?,
    })
}

#[cfg(test)]
mod tests;
