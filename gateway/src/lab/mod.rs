//! Laboratory results from the township's laboratory systems: HL7 v2 over MLLP
//! (docs/lab.md).
//!
//! For each message, in this order: parse it (`formats::hl7`); a malformed or unsupported
//! one is quarantined (file and row with the reason) and answered AE or AR with an ERR
//! segment naming the problem; an accepted one is committed to the outbox (bytes in the
//! row, `synchronous=FULL`) and only then answered AA. The forwarder sends it on to the
//! hub (`POST /ingest/hl7`, see [`forward`] and [`crate::filelane`]).
//!
//! A message is identified by MSH-10 (the site is this gateway): the same content again
//! (compared by its parsed segments, so framing and separators do not matter) is answered
//! AA and stored once; other content under a known MSH-10 is refused AE ("control id
//! reused with different content") and quarantined.
//!
//! - [`mllp`]: framing; [`db`]: the table's own writes; [`forward`]: the hub request's
//!   path and media type (the request, its verdicts and the queue are [`crate::filelane`]'s).

pub mod db;
pub mod forward;
pub mod mllp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use formats::hl7::{self, AckCode, Hl7Error, LabResults, Msh};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::Config;
use crate::filelane::FileLane;
use crate::outbox::{now_ms, Outbox, QuarantineEntry, QuarantineKind, QuarantineSource};
use crate::spool::Spool;
use db::{LabOutcome, LabWrite, NewLabMessage};
use mllp::{Deframer, Event};

/// Connections served at once; more are closed at once (a laboratory system opens one or
/// two; many more means something is wrong, and each holds a buffer).
const MAX_CONNECTIONS: usize = 64;
/// How long open connections may finish the message in hand after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Read buffer per connection.
const READ_CHUNK: usize = 64 * 1024;

/// What the listener's connections share.
#[derive(Debug)]
pub struct LabCtx {
    /// The outbox (writes through its committer).
    pub outbox: Outbox,
    /// For quarantine files.
    pub spool: Arc<Spool>,
    /// The configuration.
    pub config: Arc<Config>,
}

/// The running MLLP listener.
#[derive(Debug)]
pub struct LabService {
    addr: Option<SocketAddr>,
    task: Option<JoinHandle<()>>,
}

impl LabService {
    /// Bind `hl7_listen` and serve until `shutdown`. Never fails: an address that cannot
    /// be bound is logged and shown by `gateway status` while DICOM goes on (the
    /// laboratory system gets "connection refused" and keeps its messages).
    pub async fn start(ctx: Arc<LabCtx>, shutdown: CancellationToken) -> LabService {
        let Some(listen) = ctx.config.hl7_listen_addr().map(str::to_string) else {
            record_listener(&ctx.outbox, "disabled (hl7_listen is empty)".into()).await;
            return LabService {
                addr: None,
                task: None,
            };
        };
        let bound = match TcpListener::bind(&listen).await {
            Ok(listener) => listener.local_addr().map(|addr| (listener, addr)),
            Err(e) => Err(e),
        };
        match bound {
            Ok((listener, addr)) => {
                record_listener(&ctx.outbox, addr.to_string()).await;
                tracing::info!(%addr, "HL7 MLLP listener started");
                LabService {
                    addr: Some(addr),
                    task: Some(tokio::spawn(serve(listener, ctx, shutdown))),
                }
            }
            Err(e) => {
                tracing::error!(addr = %listen, error = %e, "the HL7 MLLP listener could not start; DICOM is still received");
                record_listener(
                    &ctx.outbox,
                    format!("not listening: cannot listen on {listen}: {e}"),
                )
                .await;
                LabService {
                    addr: None,
                    task: None,
                }
            }
        }
    }

    /// Where the listener is bound, if it is.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Wait for the listener and its connections to end (after the shutdown token was
    /// cancelled).
    pub async fn stop(self) {
        if let Some(task) = self.task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "HL7 listener ended abnormally");
            }
        }
    }
}

async fn record_listener(outbox: &Outbox, text: String) {
    if let Err(e) = outbox.write_lab(LabWrite::Listener(text)).await {
        tracing::warn!(error = %e, "could not record the HL7 listener state");
    }
}

async fn serve(listener: TcpListener, ctx: Arc<LabCtx>, shutdown: CancellationToken) {
    let admission = Arc::new(Admission::new(
        MAX_CONNECTIONS,
        ctx.config.max_connections_per_address,
        ctx.config.reserved_connections,
        ctx.config.trusted_ips(),
    ));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = match admission.admit(peer.ip()) {
                        Ok(slot) => slot,
                        Err(why) => {
                            tracing::warn!(%peer, reason = %why, "no HL7 connection slot; closing this one");
                            continue;
                        }
                    };
                    let ctx = Arc::clone(&ctx);
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        connection(ctx, stream, peer, shutdown).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of descriptors, say: do not spin.
                    tracing::warn!(error = %e, "accepting an HL7 connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        // A message not yet acknowledged is still the sender's: it sends it again.
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// One connection: any number of messages, one after the other, each answered before
/// the next is read.
async fn connection(
    ctx: Arc<LabCtx>,
    mut stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    tracing::debug!(%peer, "HL7 connection opened");
    let idle = ctx.config.hl7_idle();
    // Until its first frame arrives a connection has only `connection_open_secs`.
    let mut opened = false;
    let mut deframer = Deframer::new(ctx.config.hl7_max_message_bytes);
    let mut buf = vec![0u8; READ_CHUNK];
    let peer_text = peer.to_string();
    let mut reported_skipped = 0;
    loop {
        while let Some(event) = deframer.next_event() {
            let (reply, close) = match event {
                Event::Message(bytes) => (process(&ctx, bytes, &peer_text).await, false),
                Event::TooLong(prefix) => (too_long(&ctx, &prefix, &peer_text).await, true),
            };
            if let Err(e) = stream.write_all(&mllp::frame(&reply)).await {
                tracing::warn!(%peer, error = %e, "could not send the HL7 acknowledgement");
                return;
            }
            if close {
                let _ = stream.shutdown().await;
                return;
            }
        }
        if deframer.skipped() > reported_skipped {
            tracing::debug!(%peer, bytes = deframer.skipped() - reported_skipped, "bytes outside MLLP frames skipped");
            reported_skipped = deframer.skipped();
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            read = async {
                let limit = match opened {
                    false => Some(ctx.config.connection_open()),
                    true => idle,
                };
                match limit {
                    Some(limit) => tokio::time::timeout(limit, stream.read(&mut buf)).await.ok(),
                    None => Some(stream.read(&mut buf).await),
                }
            } => read,
        };
        match read {
            None if !opened => {
                tracing::warn!(%peer, "no HL7 frame in time; closing the connection");
                break;
            }
            None => {
                tracing::info!(%peer, "HL7 connection idle; closing it");
                break;
            }
            Some(Ok(0)) => break,
            Some(Ok(n)) => {
                deframer.push(&buf[..n]);
                // The start block of a frame opens the connection; bytes outside
                // frames do not.
                opened |= buf[..n].contains(&0x0B);
            }
            Some(Err(e)) => {
                tracing::info!(%peer, error = %e, "HL7 connection failed");
                break;
            }
        }
    }
    if deframer.pending() > 0 {
        tracing::warn!(%peer, bytes = deframer.pending(), "HL7 connection closed in the middle of a message (not acknowledged, so the sender still has it)");
    }
    tracing::debug!(%peer, "HL7 connection closed");
}

/// HL7 timestamp of now, Beijing time.
fn hl7_now() -> String {
    crate::reports::hl7::timestamp(now_ms())
}

/// A control ID for our ACKs: unique within this gateway, at most 20 characters.
fn next_control_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 10_000;
    format!("GW{}{n:04}", now_ms())
}

/// A message refused before it was stored: kept in quarantine, answered AE or AR.
struct Refusal<'a> {
    error: Hl7Error,
    msh: Option<Msh>,
    bytes: &'a [u8],
    peer: &'a str,
}

/// Handle one framed message and return the acknowledgement to send.
pub async fn process(ctx: &LabCtx, bytes: Vec<u8>, peer: &str) -> Vec<u8> {
    let msg = match hl7::parse(&bytes) {
        Ok(msg) => msg,
        Err(error) => {
            let msh = hl7::parse_header(&bytes).ok();
            return refuse(
                ctx,
                Refusal {
                    error,
                    msh,
                    bytes: &bytes,
                    peer,
                },
            )
            .await;
        }
    };
    let results = match hl7::lab_results(&msg) {
        Ok(r) => r,
        Err(error) => {
            let msh = Some(msg.msh().clone());
            return refuse(
                ctx,
                Refusal {
                    error,
                    msh,
                    bytes: &bytes,
                    peer,
                },
            )
            .await;
        }
    };
    let msh = msg.msh();
    let sha256 = msg.content_digest();
    let new = NewLabMessage {
        control_id: msh.control_id.clone(),
        sha256: sha256.clone(),
        message_type: msh.message_type(),
        sending_application: Some(msh.sending_application.clone()).filter(|s| !s.is_empty()),
        sending_facility: Some(msh.sending_facility.clone()).filter(|s| !s.is_empty()),
        patient_id: Some(results.patient.id.clone()),
        orders: results.orders.len() as i64,
        observations: results
            .orders
            .iter()
            .map(|o| o.observations.len() as i64)
            .sum(),
        urgent: is_urgent(&results),
        peer: peer.to_string(),
        body: bytes.clone(),
    };
    let urgent = new.urgent;
    let reply = |code, error: Option<(&str, &str)>| {
        hl7::ack(msh, code, error, &hl7_now(), &next_control_id())
    };
    match ctx.outbox.write_lab(LabWrite::Receive(Box::new(new))).await {
        Ok(LabOutcome::Stored(id)) => {
            tracing::info!(id, control_id = %msh.control_id, %peer, urgent, orders = results.orders.len(), "lab message stored");
            reply(AckCode::AA, None)
        }
        Ok(LabOutcome::Duplicate(id)) => {
            tracing::info!(id, control_id = %msh.control_id, %peer, "identical lab message received again; already held");
            reply(AckCode::AA, None)
        }
        Ok(LabOutcome::Requeued(id)) => {
            tracing::info!(id, control_id = %msh.control_id, %peer, "lab message the hub had refused received again; sending it again");
            reply(AckCode::AA, None)
        }
        Ok(LabOutcome::Conflict { received_at, .. }) => {
            let text = format!(
                "control id reused with different content: MSH-10 {} was received with other content at {}",
                msh.control_id,
                crate::reports::html::rfc3339(received_at)
            );
            tracing::warn!(control_id = %msh.control_id, %peer, "lab message refused: control id reused with different content");
            quarantine(ctx, &bytes, &sha256, Some(&msh.control_id), peer, &text).await;
            // 205: duplicate key identifier.
            reply(AckCode::AE, Some(("205", &text)))
        }
        Ok(LabOutcome::Done) => reply(AckCode::AA, None),
        Err(e) => {
            // Nothing was stored: the sender keeps the message and sends it again.
            tracing::error!(control_id = %msh.control_id, error = %e, "could not store a lab message");
            reply(
                AckCode::AE,
                Some((
                    "207",
                    "application internal error: the message could not be stored; send it again",
                )),
            )
        }
    }
}

/// A STAT order or a result flagged critical (HL7 table 0078: HH, LL, AA).
fn is_urgent(results: &LabResults) -> bool {
    results.orders.iter().any(|o| {
        o.priority.as_deref() == Some("S")
            || o.observations.iter().any(|obs| {
                obs.abnormal_flags
                    .iter()
                    .any(|f| matches!(f.to_ascii_uppercase().as_str(), "HH" | "LL" | "AA"))
            })
    })
}

async fn refuse(ctx: &LabCtx, r: Refusal<'_>) -> Vec<u8> {
    let code = r.error.ack_code();
    let what = if code == AckCode::AR {
        "unsupported HL7 message"
    } else {
        "malformed HL7 message"
    };
    let text = r.error.to_string();
    tracing::warn!(peer = r.peer, control_id = ?r.msh.as_ref().map(|m| &m.control_id), error = %text, "{what} refused ({})", code.as_str());
    let sha256 = hex::encode(Sha256::digest(r.bytes));
    let control_id = r.msh.as_ref().map(|m| m.control_id.as_str());
    quarantine(
        ctx,
        r.bytes,
        &sha256,
        control_id,
        r.peer,
        &format!("{what}: {text}"),
    )
    .await;
    let error = Some((r.error.hl7_code(), text.as_str()));
    match &r.msh {
        Some(msh) => hl7::ack(msh, code, error, &hl7_now(), &next_control_id()),
        None => hl7::ack_without_msh(code, &text, &hl7_now(), &next_control_id()),
    }
}

/// Keep refused bytes in the quarantine (file + row), once per distinct content.
async fn quarantine(
    ctx: &LabCtx,
    bytes: &[u8],
    sha256: &str,
    control_id: Option<&str>,
    peer: &str,
    reason: &str,
) {
    match crate::filelane::db::already_quarantined(ctx.outbox.pool(), FileLane::Lab, sha256).await {
        Ok(true) => {
            tracing::info!(
                peer,
                "the same refused HL7 message again; already in quarantine"
            );
            return;
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not look up the quarantine"),
    }
    let mut entry = QuarantineEntry {
        calling_ae: Some(peer.to_string()),
        source: QuarantineSource::Receive,
        reason: reason.to_string(),
        kind: QuarantineKind::Hl7,
        control_id: control_id.map(str::to_string),
        sha256: Some(sha256.to_string()),
        ..QuarantineEntry::default()
    };
    match ctx.spool.write_quarantine_file("hl7", bytes.to_vec()).await {
        Ok(path) => entry.path = Some(path),
        Err(e) => {
            tracing::error!(error = %e, "could not keep a refused HL7 message in quarantine");
            entry.reason = format!("{reason} (file not kept: {e})");
        }
    }
    if let Err(e) = ctx.outbox.quarantine(entry).await {
        tracing::error!(error = %e, "could not record a quarantine entry");
    }
}

/// A frame over `hl7_max_message_bytes`: answered AE (echoing MSH-10 when its start can
/// be read) and recorded in the quarantine without a file; the connection is closed.
async fn too_long(ctx: &LabCtx, prefix: &[u8], peer: &str) -> Vec<u8> {
    let max = ctx.config.hl7_max_message_bytes;
    let text = format!("message larger than hl7_max_message_bytes ({max} bytes) refused");
    tracing::warn!(
        peer,
        max,
        "over-long HL7 message refused; closing the connection"
    );
    let msh = hl7::parse_header(prefix).ok();
    let entry = QuarantineEntry {
        calling_ae: Some(peer.to_string()),
        source: QuarantineSource::Receive,
        reason: format!("{text}; the connection was closed (file not kept)"),
        kind: QuarantineKind::Hl7,
        control_id: msh.as_ref().map(|m| m.control_id.clone()),
        ..QuarantineEntry::default()
    };
    if let Err(e) = ctx.outbox.quarantine(entry).await {
        tracing::error!(error = %e, "could not record a quarantine entry");
    }
    // 104: value too long (table 0357, v2.7).
    match msh {
        Some(msh) => hl7::ack(
            &msh,
            AckCode::AE,
            Some(("104", &text)),
            &hl7_now(),
            &next_control_id(),
        ),
        None => hl7::ack_without_msh(AckCode::AE, &text, &hl7_now(), &next_control_id()),
    }
}
