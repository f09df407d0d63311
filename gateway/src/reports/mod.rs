//! Reports from the county: the gateway pulls the reports the hub signs for this site
//! (long-poll on the delivery feed, docs/reports.md), verifies each signature against
//! the hub's keys, keeps every version durably (SQLite row committed, PDF file fsynced)
//! and only then acknowledges it; shows them on a local page for the township; records
//! a clinician's acknowledgement of a critical finding and relays it to the hub.
//!
//! - [`puller`]: the long-poll loop and what happens to each item;
//! - [`sender`]: acks, acknowledgement relays and PDF fetches that are owed to or
//!   wanted from the hub, retried with backoff (they survive restarts);
//! - [`judge`], [`keys`]: verification; [`db`]: the tables; [`web`], [`html`],
//!   [`i18n`]: the township page (with the outbox from [`crate::lanes`]);
//! - [`hl7`]: forwarding to the township HIS (HL7 v2 ORU^R01 over MLLP), if configured.

pub mod db;
pub mod hl7;
pub mod html;
pub mod i18n;
pub mod judge;
pub mod keys;
pub mod puller;
pub mod sender;
pub mod web;
pub mod wire;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{Config, ConfigError};
use crate::forwarder::{read_limited, stow::excerpt};
use crate::hub::{HubClient, ProblemLog};
use crate::outbox::{Outbox, OutboxError};
use db::{AckStatus, ReportWrite};
use keys::KeyRing;

/// Directory under the data directory holding the PDFs.
pub const PDF_DIR: &str = "reports";
/// Largest PDF we accept from the hub.
const MAX_PDF_BYTES: usize = 64 * 1024 * 1024;
/// Largest JSON answer we read from the hub.
const MAX_JSON_BYTES: usize = 32 * 1024 * 1024;

/// Why the report service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    /// The report settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be read.
    #[error(transparent)]
    Db(#[from] OutboxError),
    /// The PDF directory could not be prepared.
    #[error("report PDF directory {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// What the puller, the sender and the page share.
#[derive(Debug)]
pub struct Ctx {
    /// The database (reads through its pool, writes through its committer).
    pub outbox: Outbox,
    /// The hub connection (gateway key, verified TLS).
    pub hub: HubClient,
    /// The configuration.
    pub config: Arc<Config>,
    /// Retry delays.
    pub backoff: Backoff,
    /// Wakes the sender (a new acknowledgement to relay).
    pub wake: Notify,
    /// The verification keys.
    pub keys: KeyRing,
    acks: ProblemLog,
    relays: ProblemLog,
    pdfs: ProblemLog,
    his: ProblemLog,
}

impl Ctx {
    /// Shared state for the report service.
    pub fn new(outbox: Outbox, hub: HubClient, config: Arc<Config>, keys: KeyRing) -> Ctx {
        Ctx {
            outbox,
            hub,
            backoff: Backoff::from_millis(config.backoff_base_ms, config.backoff_max_ms),
            config,
            wake: Notify::new(),
            keys,
            acks: ProblemLog::new("delivery ack"),
            relays: ProblemLog::new("critical acknowledgement relay"),
            pdfs: ProblemLog::new("report PDF"),
            his: ProblemLog::new("HL7 to the HIS"),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Send a request to the hub; the body of a 2xx answer, or what to tell the operator.
    pub async fn hub_call(
        &self,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Vec<u8>, String> {
        let response = request
            .send()
            .await
            .map_err(|e| self.hub.describe_send_error(&e))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return read_limited(response, limit).await;
        }
        let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
        Err(self
            .hub
            .describe_refusal(status, &body)
            .unwrap_or_else(|| format!("HTTP {status}: {}", excerpt(&body))))
    }

    /// Tell the hub what became of a delivery item.
    pub async fn send_ack(
        &self,
        cursor: i64,
        status: AckStatus,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let body = wire::DeliveryAck {
            cursor,
            status: status.as_str(),
            reason: match status {
                AckStatus::Stored => None,
                AckStatus::Rejected => Some(reason.unwrap_or("rejected")),
            },
        };
        let request = self
            .hub
            .post("/api/delivery/ack")
            .timeout(Duration::from_secs(30))
            .json(&body);
        self.hub_call(request, 64 * 1024).await.map(|_| ())
    }

    /// Send an ack and record the result (a failure is retried by the sender).
    pub async fn ack_and_record(
        &self,
        cursor: i64,
        status: AckStatus,
        reason: Option<&str>,
        attempts: u32,
    ) {
        let write = match self.send_ack(cursor, status, reason).await {
            Ok(()) => {
                self.acks.succeeded();
                tracing::debug!(
                    cursor,
                    status = status.as_str(),
                    "delivery acknowledged to the hub"
                );
                ReportWrite::AckSent { cursor }
            }
            Err(error) => {
                self.acks.failed(&error);
                ReportWrite::AckFailed {
                    cursor,
                    next_at: self.next_attempt_at(attempts),
                    error,
                }
            }
        };
        self.record(write).await;
    }

    /// Relay a clinician's acknowledgement and record the result.
    pub async fn relay_and_record(&self, due: &db::DueRelay) {
        let body = wire::CriticalAck {
            report_id: &due.report_id,
            version: due.version,
            acknowledged_by: &due.acknowledged_by,
        };
        let request = self
            .hub
            .post("/api/delivery/critical-ack")
            .timeout(Duration::from_secs(30))
            .json(&body);
        let write = match self.hub_call(request, 64 * 1024).await {
            Ok(_) => {
                self.relays.succeeded();
                tracing::info!(report_id = %due.report_id, version = due.version, "critical acknowledgement relayed to the hub");
                ReportWrite::RelayDone { row: due.row }
            }
            Err(error) => {
                self.relays.failed(&error);
                ReportWrite::RelayFailed {
                    row: due.row,
                    next_at: self.next_attempt_at(due.attempts),
                    error,
                }
            }
        };
        self.record(write).await;
    }

    /// Fetch a version's PDF, keep it under `reports/` and record the result.
    pub async fn fetch_pdf_and_record(&self, due: &db::DuePdf) {
        let write = match self.fetch_pdf(&due.report_id, due.version).await {
            Ok(path) => {
                self.pdfs.succeeded();
                ReportWrite::PdfStored { row: due.row, path }
            }
            Err(error) => {
                self.pdfs.failed(&error);
                ReportWrite::PdfFailed {
                    row: due.row,
                    next_at: self.next_attempt_at(due.attempts),
                    error,
                }
            }
        };
        self.record(write).await;
    }

    /// Send a verified version to the HIS and record the answer.
    pub async fn hl7_and_record(&self, due: &db::DueHl7, addr: &str) {
        let write = match serde_json::from_str::<formats::report::ReportPayload>(&due.payload) {
            // Verified when stored, so this cannot happen short of a damaged database.
            Err(e) => ReportWrite::Hl7Refused {
                row: due.row,
                error: format!("stored payload unreadable: {e}"),
            },
            Ok(payload) => {
                let control_id = format!("GW{}", due.row);
                let message = hl7::oru_r01(
                    &payload,
                    &hl7::Header {
                        receiving_application: self.config.his_application.trim(),
                        receiving_facility: self.config.site.trim(),
                        control_id: &control_id,
                        now_ms: crate::outbox::now_ms(),
                    },
                );
                match hl7::send(addr, &message, &control_id).await {
                    Ok(hl7::Answer::Accepted) => {
                        self.his.succeeded();
                        tracing::info!(report_id = %payload.report_id, version = payload.version, "report sent to the HIS");
                        ReportWrite::Hl7Sent { row: due.row }
                    }
                    Ok(hl7::Answer::Rejected(error)) => {
                        tracing::warn!(report_id = %payload.report_id, version = payload.version, %error, "the HIS refused a report; not sent again");
                        ReportWrite::Hl7Refused {
                            row: due.row,
                            error,
                        }
                    }
                    Ok(hl7::Answer::Error(error)) | Err(error) => {
                        self.his.failed(&error);
                        ReportWrite::Hl7Failed {
                            row: due.row,
                            next_at: self.next_attempt_at(due.attempts),
                            error,
                        }
                    }
                }
            }
        };
        self.record(write).await;
    }

    async fn fetch_pdf(&self, report_id: &str, version: i64) -> Result<String, String> {
        let path = format!(
            "/api/reports/{}/versions/{version}/pdf",
            html::path_segment(report_id)
        );
        let request = self
            .hub
            .get(&path)
            .header(reqwest::header::ACCEPT, "application/pdf")
            .timeout(Duration::from_secs(120));
        let bytes = self.hub_call(request, MAX_PDF_BYTES).await?;
        // An error page answered with 200 must not be kept as "the PDF".
        if !bytes.starts_with(b"%PDF-") {
            return Err(format!(
                "hub answered with something that is not a PDF: {}",
                excerpt(&bytes)
            ));
        }
        let relative = format!("{PDF_DIR}/{}", pdf_file_name(report_id, version));
        let data_dir = self.data_dir().to_path_buf();
        let rel = relative.clone();
        tokio::task::spawn_blocking(move || write_durably(&data_dir, &rel, &bytes))
            .await
            .map_err(|e| format!("writing the PDF: {e}"))?
            .map_err(|e| format!("writing the PDF {relative}: {e}"))?;
        Ok(relative)
    }

    /// Durably record a write; failures are logged (what it recorded is retried anyway:
    /// an unrecorded success only means the request is made again).
    pub async fn record(&self, write: ReportWrite) {
        // A failure scheduled a retry: the sender must learn of its time (it may be
        // sleeping towards a later one).
        let retry = matches!(
            write,
            ReportWrite::AckFailed { .. }
                | ReportWrite::PdfFailed { .. }
                | ReportWrite::RelayFailed { .. }
                | ReportWrite::Hl7Failed { .. }
        );
        if let Err(e) = self.outbox.write_report(write).await {
            tracing::warn!(error = %e, "could not record report delivery state");
        }
        if retry {
            self.wake.notify_one();
        }
    }

    fn next_attempt_at(&self, attempts: u32) -> i64 {
        crate::outbox::now_ms() + self.backoff.delay(attempts.saturating_add(1)).as_millis() as i64
    }
}

/// The file name of a version's PDF: the report id when it is plain, else a digest of
/// it (ids come from the hub; a path must never be built from arbitrary text).
pub fn pdf_file_name(report_id: &str, version: i64) -> String {
    let plain = !report_id.is_empty()
        && report_id.len() <= 100
        && report_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        format!("{report_id}-v{version}.pdf")
    } else {
        let digest = hex::encode(Sha256::digest(report_id.as_bytes()));
        format!("r{}-v{version}.pdf", &digest[..24])
    }
}

/// Write `bytes` to `data_dir/relative`: temporary file, fsync, rename, fsync of the
/// directory; a crash leaves either the old state or the whole file, never a torn one.
fn write_durably(data_dir: &Path, relative: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = data_dir.join(relative);
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("PDF path has no directory"))?
        .to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let tmp = tmp_path(&path);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    crate::spool::sync_dir(&dir)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Remove temporary PDF files a crash left behind.
fn sweep_temporaries(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The running report service: puller, sender and (when configured) the local page.
#[derive(Debug)]
pub struct ReportService {
    ctx: Arc<Ctx>,
    puller: JoinHandle<()>,
    sender: JoinHandle<()>,
    page: Option<web::Page>,
}

impl ReportService {
    /// Load the keys, prepare `reports/`, start pulling and sending, and bind the page.
    /// A page that cannot bind is logged and shown by `gateway status`, but does not
    /// stop the gateway: receiving images from the modalities matters more.
    pub async fn start(
        outbox: Outbox,
        hub: HubClient,
        config: Arc<Config>,
        shutdown: CancellationToken,
    ) -> Result<ReportService, ReportsError> {
        let keys = if config.report_keys.is_empty() {
            KeyRing::remembered(&db::remembered_keys(outbox.pool()).await?)
        } else {
            KeyRing::pinned(config.pinned_report_keys()?)
        };
        let dir = config.data_dir.join(PDF_DIR);
        let io_err = |source| ReportsError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let swept = sweep_temporaries(&dir).map_err(io_err)?;
        if swept > 0 {
            tracing::info!(swept, "removed unfinished report PDF files");
        }
        let ctx = Arc::new(Ctx::new(outbox, hub, config, keys));
        let page = match ctx.config.report_listen_addr() {
            None => {
                ctx.record(ReportWrite::Page(
                    "disabled (report_listen is empty)".into(),
                ))
                .await;
                None
            }
            Some(addr) => match web::Page::start(Arc::clone(&ctx), addr) {
                Ok(page) => {
                    ctx.record(ReportWrite::Page(format!("http://{}", page.addr())))
                        .await;
                    Some(page)
                }
                Err(e) => {
                    let message = format!("not listening: cannot listen on {addr}: {e}");
                    tracing::error!(%addr, error = %e, "the local report page could not start; reports are still pulled and kept");
                    ctx.record(ReportWrite::Page(message)).await;
                    None
                }
            },
        };
        let puller = tokio::spawn(puller::Puller::new(Arc::clone(&ctx)).run(shutdown.clone()));
        let sender = tokio::spawn(sender::run(Arc::clone(&ctx), shutdown));
        tracing::info!(
            pinned_keys = ctx.keys.is_pinned(),
            keys = ctx.keys.snapshot().len(),
            page = ?page.as_ref().map(web::Page::addr),
            site = ?ctx.config.report_site(),
            "report service started"
        );
        Ok(ReportService {
            ctx,
            puller,
            sender,
            page,
        })
    }

    /// Where the local page listens, if it does.
    pub fn page_addr(&self) -> Option<SocketAddr> {
        self.page.as_ref().map(web::Page::addr)
    }

    /// Shared state (for tests).
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Wait for the puller and sender (after the shutdown token was cancelled) and stop
    /// the page.
    pub async fn stop(self) {
        if let Some(page) = self.page {
            page.stop().await;
        }
        for (name, task) in [
            ("report puller", self.puller),
            ("report sender", self.sender),
        ] {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "task ended abnormally");
            }
        }
    }
}

#[cfg(test)]
mod tests;
