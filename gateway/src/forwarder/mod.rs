//! The forwarder: sends pending instances to the hub by STOW-RS, several per request,
//! a bounded number of requests at once, STAT first, and records each instance's fate
//! only from what the hub answered. Laboratory messages (HL7) go first, one at a time in
//! the order received, on a request of their own (`POST /ingest/hl7`, see
//! [`crate::filelane`]), with the same backoff and the same pause when the hub is
//! unavailable. ECG files have a lane of their own too (`POST /ingest/ecg`, see
//! [`crate::filelane`]): one at a time, STAT first, never behind STOW-RS uploads.
//!
//! While a modality is sending a burst of instances, routine instances are held back
//! (at most [`MAX_HOLD`]) and sent once it pauses: see [`crate::activity`] for why.
//!
//! Which items are in flight is kept in memory: after a restart nothing is in flight
//! and every pending item is simply due again (the hub answers an identical re-send
//! as stored, so a request cut off by a crash costs only bandwidth).

pub mod batch;
pub mod stow;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::filelane::db::{Delivery, DueFile};
use crate::filelane::forward::Verdict as FileVerdict;
use crate::filelane::FileLane;
use crate::hub::{HubClient, ProblemLog};
use crate::outbox::{now_ms, DueItem, ItemUpdate, Outbox, Priority};
use crate::spool::Spool;
use batch::{form_batches, BatchLimits};
use stow::{InstanceOutcome, Part, Verdict};

/// Largest hub response body we read (a STOW response lists each instance briefly).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// After a wake-up caused by a new instance, wait this long so that instances arriving
/// in a burst share requests instead of going one per request.
const LINGER: Duration = Duration::from_millis(100);
/// Longest time routine forwarding makes way for one burst of receiving (see
/// [`crate::activity`]); after that the two share the machine until the burst ends, so
/// an all-day stream of instances is still forwarded as it comes.
const MAX_HOLD: Duration = Duration::from_secs(5);
/// How long in-flight requests may finish after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// While the hub is unavailable it is probed (`GET /healthz`, no body, no database
/// write) about this often, jittered between half and all of it so that many gateways
/// do not return in step. A backlog moves within a few seconds of the hub's return
/// instead of waiting out a pause of up to `backoff_max_ms`; items that failed because
/// the hub was down are due again at once (the pause, not their own backoff, holds
/// them).
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Sends the outbox to the hub.
#[derive(Debug, Clone)]
pub struct Forwarder {
    outbox: Outbox,
    spool: Arc<Spool>,
    hub: HubClient,
    config: Arc<Config>,
    backoff: Backoff,
    /// Shared by all batches, so a failure common to them is logged once.
    problems: Arc<ProblemLog>,
    /// The same for each file lane (laboratory messages, ECG files), in the order of
    /// [`FileLane::ALL`].
    lane_problems: Arc<[ProblemLog; 2]>,
}

impl Forwarder {
    /// A forwarder for this outbox and spool.
    pub fn new(outbox: Outbox, spool: Arc<Spool>, hub: HubClient, config: Arc<Config>) -> Self {
        let backoff = Backoff::from_millis(config.backoff_base_ms, config.backoff_max_ms);
        Forwarder {
            outbox,
            spool,
            hub,
            config,
            backoff,
            problems: Arc::new(ProblemLog::new("STOW-RS")),
            lane_problems: Arc::new(FileLane::ALL.map(|l| ProblemLog::new(l.request_name()))),
        }
    }

    /// Forward until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = self.outbox.forwarder_wake();
        let concurrency = self.config.forward_concurrency.max(1);
        let limits = BatchLimits {
            max_instances: self.config.batch_max_instances.max(1),
            max_bytes: self.config.batch_max_bytes.max(1),
        };
        let mut tasks: JoinSet<HubOutcome> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, Vec<(i64, String)>> = HashMap::new();
        // Laboratory messages travel on a request of their own, outside
        // `forward_concurrency`: they are small and may be critical, so they never wait
        // behind large STOW-RS uploads. One at a time, strictly in the order received.
        // ECG files likewise (a cardiologist waits for a STAT one; a 64 MiB file must not
        // hold up the lab messages either, so it is a lane of its own).
        let mut lane_tasks: HashMap<FileLane, tokio::task::Id> = HashMap::new();
        let mut busy_ids: HashSet<i64> = HashSet::new();
        let mut busy_uids: HashSet<String> = HashSet::new();
        // Besides each item's own backoff, an unreachable hub pauses all sending: with
        // thousands of queued items, per-item timers alone would keep probing a hub
        // that is down many times a second.
        let mut hub_failures: u32 = 0;
        let mut paused_until: Option<Instant> = None;
        // A probe may end a pause, once: when the hub answers its health check but
        // still refuses the gateway (a wrong key), the full backoff applies until a
        // request is answered again.
        let mut probe_may_resume = true;
        let mut next_probe = Instant::now();
        // When the current burst of receiving began (routine forwarding holds back).
        let mut burst_since: Option<Instant> = None;
        loop {
            let mut paused = paused_until.is_some_and(|t| Instant::now() < t);
            if paused && probe_may_resume && Instant::now() >= next_probe {
                if self.hub_answers().await {
                    tracing::info!("hub answers again; resuming forwarding");
                    paused_until = None;
                    paused = false;
                    probe_may_resume = false;
                } else {
                    next_probe = Instant::now() + probe_interval();
                }
            }
            for lane in FileLane::ALL {
                if paused || lane_tasks.contains_key(&lane) {
                    continue;
                }
                match crate::filelane::db::due(self.outbox.pool(), lane, now_ms()).await {
                    Ok(Some(item)) => {
                        let me = self.clone();
                        let handle = tasks.spawn(async move { me.send_file(lane, item).await });
                        lane_tasks.insert(lane, handle.id());
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the {} queue", lane.queue())
                    }
                }
            }
            let dicom_tasks = tasks.len() - lane_tasks.len();
            if !paused && dicom_tasks < concurrency {
                let limit = (concurrency * limits.max_instances + busy_ids.len()) as i64;
                match self.outbox.due_items(now_ms(), limit).await {
                    Ok(mut due) => {
                        if self.holding_back(&mut burst_since).is_some() {
                            due.retain(|item| item.priority == Priority::Stat);
                        }
                        let free = concurrency - dicom_tasks;
                        for batch in form_batches(due, &busy_ids, &busy_uids, limits, free) {
                            let members: Vec<(i64, String)> = batch
                                .iter()
                                .map(|i| (i.id, i.sop_instance_uid.clone()))
                                .collect();
                            for (id, uid) in &members {
                                busy_ids.insert(*id);
                                busy_uids.insert(uid.clone());
                            }
                            let me = self.clone();
                            let handle = tasks.spawn(async move { me.send_batch(batch).await });
                            in_flight.insert(handle.id(), members);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read the outbox"),
                }
            }
            let dicom_tasks = tasks.len() - lane_tasks.len();
            let idle_wait = match paused_until {
                Some(t) if paused => {
                    let left = t.saturating_duration_since(Instant::now());
                    match probe_may_resume {
                        true => left.min(next_probe.saturating_duration_since(Instant::now())),
                        false => left,
                    }
                }
                _ => {
                    let wait = self
                        .idle_wait(
                            dicom_tasks < concurrency || lane_tasks.len() < FileLane::ALL.len(),
                        )
                        .await;
                    // Held back: look again as soon as the modality may have paused.
                    match self.holding_back(&mut burst_since) {
                        Some(left) => wait.min(left),
                        None => wait,
                    }
                }
            };
            tokio::select! {
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match done {
                        Ok((id, outcome)) => {
                            match outcome {
                                HubOutcome::Answered => {
                                    hub_failures = 0;
                                    paused_until = None;
                                    probe_may_resume = true;
                                }
                                HubOutcome::Unavailable => {
                                    hub_failures = hub_failures.saturating_add(1);
                                    let pause = self.backoff.delay(hub_failures);
                                    paused_until = Some(Instant::now() + pause);
                                    next_probe = Instant::now() + probe_interval();
                                    tracing::info!(failures = hub_failures, pause_ms = pause.as_millis() as u64, "hub unavailable; pausing forwarding");
                                }
                                HubOutcome::NotContacted => {}
                            }
                            id
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "forwarding task failed");
                            e.id()
                        }
                    };
                    lane_tasks.retain(|_, task| *task != id);
                    for (item, uid) in in_flight.remove(&id).unwrap_or_default() {
                        busy_ids.remove(&item);
                        busy_uids.remove(&uid);
                    }
                }
                _ = wake.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep(LINGER) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                _ = tokio::time::sleep(idle_wait) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            // Unacknowledged items simply stay pending and are sent again next run.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Whether routine instances wait because a modality is sending right now, and if
    /// so how long until it may have paused. Holding back lasts at most [`MAX_HOLD`] per
    /// burst; `burst_since` keeps when the burst began.
    fn holding_back(&self, burst_since: &mut Option<Instant>) -> Option<Duration> {
        match self.outbox.receive_activity().busy_for(now_ms()) {
            None => {
                *burst_since = None;
                None
            }
            Some(left) => {
                let since = *burst_since.get_or_insert_with(Instant::now);
                (since.elapsed() < MAX_HOLD).then_some(left)
            }
        }
    }

    /// How long to sleep when nothing else wakes us: until the next item is due.
    async fn idle_wait(&self, has_capacity: bool) -> Duration {
        const MAX_IDLE: Duration = Duration::from_secs(1);
        if !has_capacity {
            return MAX_IDLE;
        }
        match self.outbox.next_due_at().await {
            Ok(Some(at)) => {
                let wait = at - now_ms();
                if wait <= 0 {
                    // Due but in flight (or no capacity): a finishing task wakes us.
                    MAX_IDLE
                } else {
                    Duration::from_millis(wait as u64).min(MAX_IDLE)
                }
            }
            _ => MAX_IDLE,
        }
    }

    /// Send one batch and record what happened to each of its items.
    async fn send_batch(&self, batch: Vec<DueItem>) -> HubOutcome {
        let mut updates = Vec::with_capacity(batch.len());
        let mut delete_after = Vec::new();
        // Files of delivered instances, given back to the spool's pool for reuse.
        let mut recycle_after = Vec::new();
        let mut parts = Vec::with_capacity(batch.len());
        let mut sent = Vec::with_capacity(batch.len());
        for item in batch {
            match self.open_part(&item).await {
                Ok(part) => {
                    parts.push(part);
                    sent.push(item);
                }
                Err(PartError::Damaged(why)) => {
                    tracing::error!(sop_instance_uid = %item.sop_instance_uid, reason = %why, "spool file damaged; quarantined");
                    // Keep what is left of the file for the operator, if anything.
                    let kept = self.spool.link_into_quarantine(&item.path).await.ok();
                    if kept.is_some() {
                        delete_after.push(item.path.clone());
                    }
                    updates.push(ItemUpdate::Rejected {
                        id: item.id,
                        reason: why,
                        quarantine_path: kept,
                    });
                }
                Err(PartError::Io(why)) => updates.push(self.retry(&item, why)),
            }
        }
        let verdict = if sent.is_empty() {
            None
        } else {
            Some(self.post(parts, sent.len()).await)
        };
        let hub_down = matches!(verdict, Some(Verdict::Transient(_)));
        if let Some(verdict) = &verdict {
            match verdict {
                // A refused key, an untrusted certificate or an unreachable hub hits
                // every batch alike: say so once, not once per batch and retry.
                Verdict::Transient(why) => {
                    self.problems.failed(why);
                }
                _ => self.problems.succeeded(),
            }
            for item in &sent {
                match verdict.outcome_for(&item.sop_instance_uid) {
                    InstanceOutcome::Stored => {
                        updates.push(ItemUpdate::Delivered { id: item.id });
                        recycle_after.push(item.path.clone());
                    }
                    InstanceOutcome::Retry(why) if hub_down => {
                        updates.push(self.retry_when_hub_is_back(item, why))
                    }
                    InstanceOutcome::Retry(why) => updates.push(self.retry(item, why)),
                    InstanceOutcome::SendAlone(why) => updates.push(ItemUpdate::SendAlone {
                        id: item.id,
                        error: why,
                    }),
                    InstanceOutcome::Reject(why) => {
                        tracing::warn!(sop_instance_uid = %item.sop_instance_uid, reason = %why, "hub rejected instance; quarantined");
                        // Link into quarantine before the row says so; the spool name
                        // goes only after the commit.
                        match self.spool.link_into_quarantine(&item.path).await {
                            Ok(q) => {
                                updates.push(ItemUpdate::Rejected {
                                    id: item.id,
                                    reason: why,
                                    quarantine_path: Some(q),
                                });
                                delete_after.push(item.path.clone());
                            }
                            Err(e) => updates.push(self.retry(
                                item,
                                format!("{why}; could not move the file to quarantine: {e}"),
                            )),
                        }
                    }
                }
            }
        }
        match self.outbox.apply(updates).await {
            Ok(()) => {
                for path in delete_after {
                    self.spool.remove(&path).await;
                }
                for path in recycle_after {
                    self.spool.recycle(&path).await;
                }
            }
            // Nothing recorded: the items stay pending and are sent again; the hub
            // answers an identical re-send as stored.
            Err(e) => tracing::error!(error = %e, "could not record delivery results"),
        }
        match verdict {
            None => HubOutcome::NotContacted,
            Some(Verdict::Transient(_)) => HubOutcome::Unavailable,
            Some(_) => HubOutcome::Answered,
        }
    }

    /// Send one item of a file lane and record what the hub said.
    async fn send_file(&self, lane: FileLane, item: DueFile) -> HubOutcome {
        let verdict = crate::filelane::forward::send(&self.hub, lane, &item).await;
        let problems = &self.lane_problems[lane as usize];
        let retry = |error: String| Delivery::Retry {
            id: item.id,
            next_attempt_at: now_ms()
                + self
                    .backoff
                    .delay(item.attempts.saturating_add(1))
                    .as_millis() as i64,
            error,
        };
        let what = lane.item();
        let (delivery, outcome) = match verdict {
            FileVerdict::Delivered { status, exam_id } => {
                problems.succeeded();
                tracing::info!(id = item.id, name = %item.name, urgent = item.urgent, hub_status = ?status, exam_id = ?exam_id, "{what} delivered");
                (
                    Delivery::Delivered {
                        id: item.id,
                        hub_status: status,
                        exam_id,
                    },
                    HubOutcome::Answered,
                )
            }
            FileVerdict::Rejected(reason) => {
                problems.succeeded();
                tracing::warn!(id = item.id, name = %item.name, %reason, "hub rejected {what}; quarantined");
                let ext = lane.quarantine_extension(&item);
                match self.spool.write_quarantine_file(&ext, item.body).await {
                    Ok(path) => (
                        Delivery::Rejected {
                            id: item.id,
                            reason,
                            quarantine_path: Some(path),
                        },
                        HubOutcome::Answered,
                    ),
                    // The bytes stay in the row; try again (the hub will say the same,
                    // and by then the disk may take the file).
                    Err(e) => (
                        retry(format!(
                            "{reason}; could not write the quarantine file: {e}"
                        )),
                        HubOutcome::Answered,
                    ),
                }
            }
            FileVerdict::Unavailable(why) => {
                problems.failed(&why);
                // The forwarder's pause holds it until the hub answers again.
                let delivery = Delivery::Retry {
                    id: item.id,
                    next_attempt_at: now_ms(),
                    error: why,
                };
                (delivery, HubOutcome::Unavailable)
            }
            FileVerdict::Retry(why) => {
                problems.failed(&why);
                (retry(why), HubOutcome::Answered)
            }
        };
        if let Err(e) = self.outbox.record_delivery(lane, delivery).await {
            // Nothing recorded: sent again later; the hub answers an identical re-send
            // as a duplicate.
            tracing::error!(error = %e, "could not record a delivery result of a {what}");
        }
        outcome
    }

    /// An item that failed only because the hub was unavailable: due again at once, as
    /// the forwarder's pause (ended early by a successful probe) holds every item.
    fn retry_when_hub_is_back(&self, item: &DueItem, error: String) -> ItemUpdate {
        ItemUpdate::Retry {
            id: item.id,
            next_attempt_at: now_ms(),
            error,
        }
    }

    /// Whether the hub answers its health check now (short timeout: a probe of a hub
    /// that is down must not hold the forwarder).
    async fn hub_answers(&self) -> bool {
        let probe = self.hub.get("/healthz").timeout(Duration::from_secs(2));
        matches!(probe.send().await, Ok(r) if r.status().is_success())
    }

    fn retry(&self, item: &DueItem, error: String) -> ItemUpdate {
        let delay = self.backoff.delay(item.attempts.saturating_add(1));
        ItemUpdate::Retry {
            id: item.id,
            next_attempt_at: now_ms() + delay.as_millis() as i64,
            error,
        }
    }

    /// Open an item's spool file for sending, after checking that its data set is
    /// still exactly what was received: a damaged file must never reach the hub as if
    /// it were the instance (a flipped bit in pixel data is a different image).
    async fn open_part(&self, item: &DueItem) -> Result<Part, PartError> {
        let path = self.spool.absolute(&item.path);
        let size = item.size;
        let check_path = path.clone();
        let intact =
            tokio::task::spawn_blocking(move || crate::spool::check_size(&check_path, size))
                .await
                .map_err(|e| PartError::Io(format!("integrity check did not complete: {e}")))?;
        match intact {
            Ok(crate::spool::Integrity::Intact) => {}
            Ok(crate::spool::Integrity::Missing) => {
                return Err(PartError::Damaged(format!(
                    "spool file {} is missing; the instance cannot be sent",
                    item.path
                )))
            }
            Ok(crate::spool::Integrity::Damaged(why)) => {
                return Err(PartError::Damaged(format!(
                    "spool file {} is damaged: {why}",
                    item.path
                )))
            }
            Err(e) => return Err(PartError::Io(format!("cannot read spool file: {e}"))),
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| PartError::Io(format!("cannot open spool file: {e}")))?;
        Ok(Part {
            file,
            size: item.size,
            data_set_sha256: item.sha256.clone(),
        })
    }

    /// POST the batch and classify the answer; transport failures are transient.
    async fn post(&self, parts: Vec<Part>, count: usize) -> Verdict {
        let boundary = format!("gw{}", uuid::Uuid::new_v4().simple());
        let (body, length) = stow::multipart_body(parts, &boundary);
        let content_type =
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
        // Generous for slow township links: a minute plus 32 KiB/s for the body.
        let timeout = Duration::from_secs(60 + length / (32 * 1024));
        let request = self
            .hub
            .post("/dicomweb/studies")
            .timeout(timeout)
            .header(CONTENT_TYPE, content_type)
            .header(ACCEPT, "application/dicom+json")
            .header(CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(body));
        let response = match request.send().await {
            Ok(r) => r,
            // A TLS failure (untrusted certificate, pin mismatch, wrong host name) is
            // about the connection, not the instances: transient, with a message that
            // names the settings to check.
            Err(e) => return Verdict::Transient(self.hub.describe_send_error(&e)),
        };
        let status = response.status().as_u16();
        match read_limited(response, MAX_RESPONSE_BYTES).await {
            // A refused key is the gateway's configuration, not the instances' fault:
            // nothing is rejected, everything waits for the key to be fixed.
            Ok(body) => {
                if let Some(why) = self.hub.describe_refusal(status, &body) {
                    return Verdict::Transient(why);
                }
                let verdict = stow::classify(status, &body, count);
                tracing::debug!(status, instances = count, "STOW-RS answered");
                verdict
            }
            Err(e) => Verdict::Transient(format!("HTTP {status}, response unreadable: {e}")),
        }
    }
}

/// What a batch taught us about the hub as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HubOutcome {
    /// It answered the request meaningfully (whatever it said about each instance).
    Answered,
    /// Unreachable, 5xx, 401/403, or an unreadable answer.
    Unavailable,
    /// No request was made (every item failed locally).
    NotContacted,
}

enum PartError {
    /// The file is gone or damaged: retrying cannot help.
    Damaged(String),
    /// A passing I/O problem.
    Io(String),
}

/// Read a response body, refusing more than `limit` bytes.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes, e.g. "error sending request: connection refused".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

/// Time to the next probe of an unavailable hub: uniform in `[PROBE_EVERY / 2, PROBE_EVERY]`.
fn probe_interval() -> Duration {
    use rand::Rng;
    let ms = PROBE_EVERY.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}
