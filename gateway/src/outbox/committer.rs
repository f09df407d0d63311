//! The single writer of the outbox database, committing in groups.
//!
//! Every association waiting for its C-STORE to become durable sends a request here;
//! the committer takes everything queued at that moment, writes it in one transaction
//! (one WAL sync for the whole group, see [`super::WalSync`]) and then answers every
//! waiter. With many
//! associations the cost of durability is shared; with one, nothing is lost either.
//!
//! Having one writer also means no SQLITE_BUSY between receiver, forwarder and
//! completion: they all queue here.
//!
//! Spool-file fsyncs run concurrently with the commit of their row (see
//! `scp::receive`), so a committed row may briefly describe a file whose bytes are not
//! yet on disk. Such rows carry `file_synced = 0` until a later group flips them; the
//! flag is not waited for (it rides along with the next commit, or an idle flush),
//! because the C-STORE answer already waits for both the fsync and the commit. A row
//! still unsynced after a crash is verified against its file at start-up.

use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{
    now_ms, ItemUpdate, NewItem, NoticeResult, OutboxError, QuarantineEntry, QuarantineSource,
    StoreOutcome,
};
use crate::ecg::db::{EcgOutcome, EcgWrite};
use crate::filelane::db::Delivery;
use crate::filelane::FileLane;
use crate::lab::db::{LabOutcome, LabWrite};
use crate::reports::db::{ReportOutcome, ReportWrite};

/// Requests taken by the committer.
#[derive(Debug)]
pub(crate) enum Request {
    Store {
        item: NewItem,
        new_for_association: bool,
        reply: oneshot::Sender<Result<StoreOutcome, OutboxError>>,
    },
    FileSynced {
        id: i64,
    },
    Abandon {
        id: i64,
        reply: oneshot::Sender<Result<(), OutboxError>>,
    },
    Quarantine {
        entry: QuarantineEntry,
        reply: oneshot::Sender<Result<(), OutboxError>>,
    },
    AssociationClosed {
        studies: Vec<String>,
    },
    Updates {
        updates: Vec<ItemUpdate>,
        reply: oneshot::Sender<Result<(), OutboxError>>,
    },
    Notice {
        notice: NoticeResult,
        reply: oneshot::Sender<Result<(), OutboxError>>,
    },
    /// The report tables share this writer: one writer for the whole database, and a
    /// report is acknowledged to the hub only after this commit.
    Report {
        write: ReportWrite,
        reply: oneshot::Sender<Result<ReportOutcome, OutboxError>>,
    },
    /// Laboratory messages (HL7) too: one is acknowledged AA to its sender only after
    /// this commit.
    Lab {
        write: LabWrite,
        reply: oneshot::Sender<Result<LabOutcome, OutboxError>>,
    },
    /// ECG files: one is removed from the import folder only after this commit.
    Ecg {
        write: EcgWrite,
        reply: oneshot::Sender<Result<EcgOutcome, OutboxError>>,
    },
    /// What the hub said about an item of a file lane (laboratory message, ECG file).
    Delivery {
        lane: FileLane,
        delivery: Delivery,
        reply: oneshot::Sender<Result<(), OutboxError>>,
    },
}

/// What `apply` decided, for the requests that return something.
enum Outcome {
    None,
    Store(StoreOutcome),
    Report(ReportOutcome),
    Lab(LabOutcome),
    Ecg(EcgOutcome),
}

/// Most requests folded into one transaction: bounds the latency of the first waiter.
const MAX_GROUP: usize = 256;
/// How long `file_synced` marks may wait for a commit to ride along with.
const SYNCED_FLUSH_AFTER: Duration = Duration::from_millis(500);
/// Marks ride along with a group only once this many have accumulated (or after
/// [`SYNCED_FLUSH_AFTER`] without a group): each statement is a round trip to SQLite's
/// thread on the C-STORE answer's path, and a single association otherwise paid one per
/// instance for the previous instance's mark. The cost is that a crash re-verifies at
/// most this many more files at start-up.
const SYNCED_BATCH: usize = 32;

/// The writer task. Run it with [`Committer::run`]; it ends when every [`super::Outbox`]
/// handle is dropped and the queue is drained.
#[derive(Debug)]
pub struct Committer {
    conn: SqliteConnection,
    rx: mpsc::UnboundedReceiver<Request>,
    forwarder_wake: Arc<Notify>,
    completion_wake: Arc<Notify>,
    synced: Vec<i64>,
    wal: super::WalSync,
}

/// What a group's commit should wake.
#[derive(Default)]
struct Wakes {
    forwarder: bool,
    completion: bool,
}

impl Committer {
    pub(super) fn new(
        conn: SqliteConnection,
        rx: mpsc::UnboundedReceiver<Request>,
        forwarder_wake: Arc<Notify>,
        completion_wake: Arc<Notify>,
        wal: super::WalSync,
    ) -> Self {
        Committer {
            conn,
            rx,
            forwarder_wake,
            completion_wake,
            synced: Vec::new(),
            wal,
        }
    }

    /// Commit groups until all senders are gone.
    pub async fn run(mut self) {
        loop {
            let first = if self.synced.is_empty() {
                self.rx.recv().await
            } else {
                match tokio::time::timeout(SYNCED_FLUSH_AFTER, self.rx.recv()).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.flush_synced().await;
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            let mut group = Vec::with_capacity(8);
            let mut next = Some(first);
            while let Some(req) = next {
                match req {
                    Request::FileSynced { id } => self.synced.push(id),
                    other => group.push(other),
                }
                next = if group.len() < MAX_GROUP {
                    self.rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !group.is_empty() {
                self.commit_group(group).await;
            }
        }
        self.flush_synced().await;
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the outbox writer connection");
        }
    }

    async fn flush_synced(&mut self) {
        if self.synced.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.synced);
        let result = async {
            let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
            mark_synced(&mut tx, &ids).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            // Harmless to lose: unsynced rows are verified at start-up instead.
            tracing::warn!(error = %e, "could not record spool fsyncs; will retry");
            self.synced.extend(ids);
        }
    }

    /// One transaction for the whole group; if anything in it fails, each request is
    /// retried in a transaction of its own so one bad request cannot fail the others.
    async fn commit_group(&mut self, group: Vec<Request>) {
        let synced = if self.synced.len() >= SYNCED_BATCH {
            std::mem::take(&mut self.synced)
        } else {
            Vec::new()
        };
        let mut wakes = Wakes::default();
        let mut outcomes = Vec::with_capacity(group.len());
        let attempt: Result<(), sqlx::Error> = async {
            let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
            mark_synced(&mut tx, &synced).await?;
            for req in &group {
                outcomes.push(apply(&mut tx, req, &mut wakes, &self.synced).await?);
            }
            tx.commit().await?;
            self.make_durable(&group).await
        }
        .await;
        match attempt {
            Ok(()) => {
                // Only now, with the group on disk, are the waiters answered.
                for (req, outcome) in group.into_iter().zip(outcomes) {
                    answer(req, outcome);
                }
                self.wake(wakes);
            }
            Err(e) => {
                tracing::warn!(error = %e, size = group.len(), "group commit failed; committing one by one");
                self.synced.extend(synced);
                for req in group {
                    self.commit_one(req).await;
                }
            }
        }
    }

    async fn commit_one(&mut self, req: Request) {
        let mut wakes = Wakes::default();
        let synced = std::mem::take(&mut self.synced);
        let result: Result<Outcome, sqlx::Error> = async {
            let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
            mark_synced(&mut tx, &synced).await?;
            let outcome = apply(&mut tx, &req, &mut wakes, &self.synced).await?;
            tx.commit().await?;
            self.make_durable(std::slice::from_ref(&req)).await?;
            Ok(outcome)
        }
        .await;
        match result {
            Ok(outcome) => {
                answer(req, outcome);
                self.wake(wakes);
            }
            Err(e) => {
                self.synced = synced;
                tracing::error!(error = %e, "outbox write failed");
                fail(req, e);
            }
        }
    }

    /// Sync the WAL after a commit, unless every request in it is a C-STORE row (whose
    /// receiver syncs after its spool file's fsync) or needs no durability.
    async fn make_durable(&self, group: &[Request]) -> Result<(), sqlx::Error> {
        let needed = group
            .iter()
            .any(|r| !matches!(r, Request::Store { .. } | Request::AssociationClosed { .. }));
        if needed {
            self.wal.sync().await?;
        }
        Ok(())
    }

    fn wake(&self, wakes: Wakes) {
        if wakes.forwarder {
            self.forwarder_wake.notify_one();
        }
        if wakes.completion {
            self.completion_wake.notify_one();
        }
    }
}

/// Answer a committed request; `outcome` is what `apply` decided for it.
fn answer(req: Request, outcome: Outcome) {
    let missing = || OutboxError::Db(sqlx::Error::Protocol("write outcome missing".into()));
    match req {
        Request::Store { reply, .. } => {
            let result = match outcome {
                Outcome::Store(o) => Ok(o),
                _ => Err(missing()),
            };
            let _ = reply.send(result);
        }
        Request::Report { reply, .. } => {
            let result = match outcome {
                Outcome::Report(o) => Ok(o),
                _ => Err(missing()),
            };
            let _ = reply.send(result);
        }
        Request::Lab { reply, .. } => {
            let result = match outcome {
                Outcome::Lab(o) => Ok(o),
                _ => Err(missing()),
            };
            let _ = reply.send(result);
        }
        Request::Ecg { reply, .. } => {
            let result = match outcome {
                Outcome::Ecg(o) => Ok(o),
                _ => Err(missing()),
            };
            let _ = reply.send(result);
        }
        Request::Abandon { reply, .. }
        | Request::Quarantine { reply, .. }
        | Request::Updates { reply, .. }
        | Request::Notice { reply, .. }
        | Request::Delivery { reply, .. } => {
            let _ = reply.send(Ok(()));
        }
        Request::FileSynced { .. } | Request::AssociationClosed { .. } => {}
    }
}

fn fail(req: Request, e: sqlx::Error) {
    let msg = e.to_string();
    let err = || OutboxError::Db(sqlx::Error::Protocol(msg.clone()));
    match req {
        Request::Store { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Report { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Lab { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Ecg { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::Abandon { reply, .. }
        | Request::Quarantine { reply, .. }
        | Request::Updates { reply, .. }
        | Request::Notice { reply, .. }
        | Request::Delivery { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Request::FileSynced { .. } | Request::AssociationClosed { .. } => {}
    }
}

/// Mark rows whose spool file fsync completed, in one statement per 256 ids.
async fn mark_synced(conn: &mut SqliteConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(256) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!("UPDATE items SET file_synced = 1 WHERE id IN ({marks})");
        // Only `?` placeholders are formatted in: safe.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        for id in chunk {
            query = query.bind(id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Write one request; returns the outcome for a Store or a report write.
/// `synced` lists rows whose fsync completed but is not yet marked in the database
/// (see [`SYNCED_BATCH`]); they count as synced.
async fn apply(
    conn: &mut SqliteConnection,
    req: &Request,
    wakes: &mut Wakes,
    synced: &[i64],
) -> Result<Outcome, sqlx::Error> {
    let now = now_ms();
    match req {
        Request::Store {
            item,
            new_for_association,
            ..
        } => {
            let outcome = store(conn, item, *new_for_association, now, synced).await?;
            if matches!(outcome, StoreOutcome::Stored(_)) {
                wakes.forwarder = true;
            }
            return Ok(Outcome::Store(outcome));
        }
        Request::Report { write, .. } => {
            return Ok(Outcome::Report(
                crate::reports::db::apply(conn, write, now).await?,
            ));
        }
        Request::Lab { write, .. } => {
            let outcome = crate::lab::db::apply(conn, write, now).await?;
            if outcome.gives_work() {
                wakes.forwarder = true;
            }
            return Ok(Outcome::Lab(outcome));
        }
        Request::Ecg { write, .. } => {
            let outcome = crate::ecg::db::apply(conn, write, now).await?;
            if outcome.gives_work() {
                wakes.forwarder = true;
            }
            return Ok(Outcome::Ecg(outcome));
        }
        Request::Delivery { lane, delivery, .. } => {
            crate::filelane::db::apply(conn, *lane, delivery, now).await?
        }
        Request::FileSynced { id } => mark_synced(conn, &[*id]).await?,
        Request::Abandon { id, .. } => {
            sqlx::query("DELETE FROM items WHERE id = ? AND state = 'pending'")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        Request::Quarantine { entry, .. } => insert_quarantine(conn, entry, now).await?,
        Request::AssociationClosed { studies } => {
            for study in studies {
                sqlx::query(
                    "UPDATE studies SET open_associations = MAX(open_associations - 1, 0)
                     WHERE study_uid = ?",
                )
                .bind(study)
                .execute(&mut *conn)
                .await?;
            }
            wakes.completion = true;
        }
        Request::Updates { updates, .. } => {
            for update in updates {
                apply_update(conn, update, now, wakes).await?;
            }
        }
        Request::Notice { notice, .. } => match notice {
            NoticeResult::Acknowledged {
                study_uid,
                last_received_at,
            } => {
                // Guarded by last_received_at: an instance that arrived while the notice
                // was in flight keeps the study open for another notice.
                sqlx::query(
                    "UPDATE studies SET notified_at = ?, notify_attempts = 0, next_notify_at = 0,
                            last_notify_error = NULL
                     WHERE study_uid = ? AND last_received_at = ? AND notified_at IS NULL",
                )
                .bind(now)
                .bind(study_uid)
                .bind(last_received_at)
                .execute(&mut *conn)
                .await?;
            }
            NoticeResult::Failed {
                study_uid,
                next_notify_at,
                error,
            } => {
                sqlx::query(
                    "UPDATE studies SET notify_attempts = notify_attempts + 1,
                            next_notify_at = ?, last_notify_error = ?
                     WHERE study_uid = ?",
                )
                .bind(next_notify_at)
                .bind(error)
                .bind(study_uid)
                .execute(&mut *conn)
                .await?;
            }
        },
    }
    Ok(Outcome::None)
}

async fn store(
    conn: &mut SqliteConnection,
    item: &NewItem,
    new_for_association: bool,
    now: i64,
    synced: &[i64],
) -> Result<StoreOutcome, sqlx::Error> {
    // Identical bytes already pending (with a durable file) or delivered: the sender
    // re-sent what we have, so answer success without a second item. An unsynced row
    // is not trusted for this: if its fsync then failed, the re-send would be lost. A
    // row whose fsync completed counts as durable whether or not its mark has been
    // written yet (`synced`).
    let candidates = sqlx::query(
        "SELECT id, state, file_synced FROM items
         WHERE sop_instance_uid = ? AND sha256 = ? AND state IN ('pending', 'delivered')
         ORDER BY id",
    )
    .bind(&item.sop_instance_uid)
    .bind(&item.sha256)
    .fetch_all(&mut *conn)
    .await?;
    let mut existing = None;
    for row in &candidates {
        let id: i64 = row.try_get(0)?;
        let state: String = row.try_get(1)?;
        let file_synced: i64 = row.try_get(2)?;
        if state == "delivered" || file_synced == 1 || synced.contains(&id) {
            existing = Some(id);
            break;
        }
    }
    let opens = i64::from(new_for_association);
    if let Some(id) = existing {
        if new_for_association {
            sqlx::query(
                "UPDATE studies SET open_associations = open_associations + 1 WHERE study_uid = ?",
            )
            .bind(&item.study_uid)
            .execute(&mut *conn)
            .await?;
        }
        return Ok(StoreOutcome::Duplicate(id));
    }
    // A new instance (or a late one) reopens the study: the hub is told again after a
    // new quiet period. The study upsert and the item insert go as one query (SQLite
    // runs the statements in order, binding the parameters in order): one round trip to
    // SQLite's thread less on the C-STORE answer's path. The result's rowid is the
    // item's, from the last statement.
    let id = sqlx::query(
        "INSERT INTO studies (study_uid, priority, first_received_at, last_received_at,
                              open_associations, notified_at, notify_attempts, next_notify_at,
                              patient_id, patient_name, accession_number, modality)
         VALUES (?, ?, ?, ?, ?, NULL, 0, 0, ?, ?, ?, ?)
         ON CONFLICT (study_uid) DO UPDATE SET
             priority = MAX(priority, excluded.priority),
             last_received_at = excluded.last_received_at,
             open_associations = open_associations + excluded.open_associations,
             notified_at = NULL, notify_attempts = 0, next_notify_at = 0,
             last_notify_error = NULL,
             patient_id = COALESCE(excluded.patient_id, patient_id),
             patient_name = COALESCE(excluded.patient_name, patient_name),
             accession_number = COALESCE(excluded.accession_number, accession_number),
             modality = COALESCE(excluded.modality, modality);
         INSERT INTO items (sop_instance_uid, sop_class_uid, study_uid, series_uid,
                            transfer_syntax_uid, calling_ae, called_ae, path, size,
                            dataset_offset, sha256, priority, state, file_synced,
                            next_attempt_at, received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
    )
    .bind(&item.study_uid)
    .bind(item.priority.as_i64())
    .bind(now)
    .bind(now)
    .bind(opens)
    .bind(non_empty(&item.labels.patient_id))
    .bind(non_empty(&item.labels.patient_name))
    .bind(non_empty(&item.labels.accession_number))
    .bind(non_empty(&item.labels.modality))
    .bind(&item.sop_instance_uid)
    .bind(&item.sop_class_uid)
    .bind(&item.study_uid)
    .bind(&item.series_uid)
    .bind(&item.transfer_syntax_uid)
    .bind(&item.calling_ae)
    .bind(&item.called_ae)
    .bind(&item.path)
    .bind(item.size as i64)
    .bind(item.dataset_offset as i64)
    .bind(&item.sha256)
    .bind(item.priority.as_i64())
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .last_insert_rowid();
    Ok(StoreOutcome::Stored(id))
}

/// A header value worth keeping: an empty or blank one must not replace what an earlier
/// instance of the study said.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub(crate) async fn insert_quarantine(
    conn: &mut SqliteConnection,
    entry: &QuarantineEntry,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO quarantine (item_id, sop_instance_uid, study_uid, calling_ae, path,
                                 source, reason, created_at, kind, control_id, sha256, file_name)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.item_id)
    .bind(&entry.sop_instance_uid)
    .bind(&entry.study_uid)
    .bind(&entry.calling_ae)
    .bind(&entry.path)
    .bind(entry.source.as_str())
    .bind(&entry.reason)
    .bind(now)
    .bind(entry.kind.as_str())
    .bind(&entry.control_id)
    .bind(&entry.sha256)
    .bind(&entry.file_name)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_update(
    conn: &mut SqliteConnection,
    update: &ItemUpdate,
    now: i64,
    wakes: &mut Wakes,
) -> Result<(), sqlx::Error> {
    match update {
        ItemUpdate::Delivered { id } => {
            sqlx::query(
                "UPDATE items SET state = 'delivered', delivered_at = ?, last_error = NULL
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            wakes.completion = true;
            // A later version of the same SOP Instance may now be eligible.
            wakes.forwarder = true;
        }
        ItemUpdate::Retry {
            id,
            next_attempt_at,
            error,
        } => {
            sqlx::query(
                "UPDATE items SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,
                        last_error_at = ?
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(next_attempt_at)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        ItemUpdate::SendAlone { id, error } => {
            sqlx::query(
                "UPDATE items SET solo = 1, next_attempt_at = ?, last_error = ?, last_error_at = ?
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(now)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            wakes.forwarder = true;
        }
        ItemUpdate::Rejected {
            id,
            reason,
            quarantine_path,
        } => {
            let row = sqlx::query(
                "SELECT sop_instance_uid, study_uid, calling_ae FROM items
                 WHERE id = ? AND state = 'pending'",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else { return Ok(()) };
            sqlx::query(
                "UPDATE items SET state = 'rejected', path = COALESCE(?, path), last_error = ?,
                        last_error_at = ?
                 WHERE id = ?",
            )
            .bind(quarantine_path)
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            let entry = QuarantineEntry {
                item_id: Some(*id),
                sop_instance_uid: row.try_get(0)?,
                study_uid: row.try_get(1)?,
                calling_ae: row.try_get(2)?,
                path: quarantine_path.clone(),
                source: QuarantineSource::Hub,
                reason: reason.clone(),
                ..QuarantineEntry::default()
            };
            insert_quarantine(conn, &entry, now).await?;
            wakes.completion = true;
            wakes.forwarder = true;
        }
    }
    Ok(())
}
