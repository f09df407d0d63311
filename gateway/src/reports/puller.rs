//! The delivery feed: long-polls `GET /api/delivery?after=<cursor>&wait=50` and, for
//! each item, verifies, stores durably, fetches the PDF and acknowledges.
//!
//! The saved cursor only moves once a whole answer has been recorded: items come
//! critical first, not in cursor order, so moving it item by item could skip some after
//! a crash. Items already recorded (same cursor) are recognised and not stored twice.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::db::{self, AckStatus, NewDelivery, ReportOutcome, ReportWrite};
use super::judge;
use super::keys;
use super::wire::{DeliveryItem, DeliveryPage, PublishedKey};
use super::{Ctx, MAX_JSON_BYTES};
use crate::hub::ProblemLog;

/// Seconds the hub may hold a poll open (the contract allows up to 55).
pub const POLL_WAIT_SECS: u64 = 50;
/// After this, the ack and the PDF fetch of a recorded item pass from the puller (which
/// tries them at once) to the sender. Only matters after a crash mid-item.
const HANDOVER_MS: i64 = 60_000;

/// A poll or an item could not be handled; the batch is retried after a backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transient(String);

/// The long-poll loop.
#[derive(Debug)]
pub struct Puller {
    ctx: Arc<Ctx>,
    problems: ProblemLog,
    /// The error last written to the database (written again only when it changes).
    recorded_error: Option<String>,
    /// Ask without waiting: at start and after a failure, so that recovered contact
    /// shows in `gateway status` at once instead of when a long poll ends.
    quick: bool,
}

impl Puller {
    /// A puller sharing `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Puller {
        Puller {
            ctx,
            problems: ProblemLog::new("report delivery"),
            recorded_error: None,
            quick: true,
        }
    }

    /// Poll until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Ok(state) = db::feed_state(self.ctx.outbox.pool()).await {
            self.recorded_error = state.last_error;
        }
        let mut failures: u32 = 0;
        loop {
            let result = tokio::select! {
                r = self.poll_once() => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    self.problems.succeeded();
                }
                Err(Transient(error)) => {
                    failures = failures.saturating_add(1);
                    self.quick = true;
                    self.problems.failed(&error);
                    if self.recorded_error.as_deref() != Some(error.as_str()) {
                        self.ctx
                            .record(ReportWrite::Contact(Some(error.clone())))
                            .await;
                        self.recorded_error = Some(error);
                    }
                    let delay = self.ctx.backoff.delay(failures);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn poll_once(&mut self) -> Result<(), Transient> {
        let state = db::feed_state(self.ctx.outbox.pool())
            .await
            .map_err(|e| Transient(format!("reading the report cursor: {e}")))?;
        let cursor = state.cursor;
        let wait = if self.quick { 0 } else { POLL_WAIT_SECS };
        let request = self
            .ctx
            .hub
            .get(&format!("/api/delivery?after={cursor}&wait={wait}"))
            .timeout(Duration::from_secs(wait + 30));
        let body = self
            .ctx
            .hub_call(request, MAX_JSON_BYTES)
            .await
            .map_err(Transient)?;
        let page: DeliveryPage = serde_json::from_slice(&body).map_err(|e| {
            Transient(format!(
                "hub's delivery answer is not the expected JSON: {e}"
            ))
        })?;
        self.ctx.record(ReportWrite::Contact(None)).await;
        self.recorded_error = None;
        self.quick = false;
        let mut highest = cursor;
        for value in &page.items {
            let Some(item) = DeliveryItem::parse(value) else {
                // Without a cursor it cannot be acknowledged or skipped precisely; the
                // next_cursor of the answer moves past it.
                tracing::warn!(item = %value, "delivery item without a cursor ignored");
                continue;
            };
            highest = highest.max(item.cursor);
            self.handle(item).await?;
        }
        let next = page.next_cursor.unwrap_or(highest).max(highest);
        if next > cursor {
            self.ctx
                .outbox
                .write_report(ReportWrite::Cursor(next))
                .await
                .map_err(|e| Transient(format!("saving the report cursor: {e}")))?;
        }
        Ok(())
    }

    /// Verify, store, fetch the PDF, acknowledge. An error means nothing is acked for
    /// this item and the batch is retried (the item is then recognised by its cursor).
    async fn handle(&self, item: DeliveryItem) -> Result<(), Transient> {
        let mut delivery = NewDelivery {
            cursor: item.cursor,
            report_id: item.report_id.clone(),
            version: item.version,
            received: None,
            reject_reason: None,
            grace_ms: HANDOVER_MS,
            hl7: self.ctx.config.his_addr().is_some(),
        };
        if item.kind != "report" {
            delivery.reject_reason = Some(format!("unsupported item kind {:?}", item.kind));
        } else {
            match &item.signed {
                Err(reason) => delivery.reject_reason = Some(reason.clone()),
                Ok(signed) => {
                    let verdict = self.judge(&item, signed).await?;
                    let mut received = judge::received_version(
                        signed,
                        item.report_id.as_deref(),
                        item.version,
                        &verdict,
                    );
                    if received.report_id.is_empty() {
                        // Neither envelope nor payload names it: still listed (as
                        // rejected) under a name the page can link to.
                        received.report_id = format!("unidentified-{}", item.cursor);
                    }
                    delivery.received = Some(received);
                }
            }
        }
        let outcome = match self
            .ctx
            .outbox
            .write_report(ReportWrite::Delivery(Box::new(delivery.clone())))
            .await
            .map_err(|e| Transient(format!("storing a report: {e}")))?
        {
            ReportOutcome::Delivery(o) => o,
            other => return Err(Transient(format!("unexpected write outcome {other:?}"))),
        };
        let (report_id, version) = delivery
            .received
            .as_ref()
            .map(|v| (v.report_id.as_str(), v.version))
            .unwrap_or((
                item.report_id.as_deref().unwrap_or(""),
                item.version.unwrap_or(0),
            ));
        match outcome.status {
            AckStatus::Stored if outcome.new_version => {
                let critical = delivery.received.as_ref().is_some_and(|v| v.critical);
                if critical {
                    tracing::warn!(%report_id, version, "critical report received; awaiting a clinician's acknowledgement");
                } else {
                    tracing::info!(%report_id, version, "report received");
                }
                if delivery.hl7 {
                    // The sender forwards it to the HIS now, while we fetch the PDF.
                    self.ctx.wake.notify_one();
                }
                if let Some(row) = outcome.version_row {
                    self.ctx
                        .fetch_pdf_and_record(&db::DuePdf {
                            row,
                            report_id: report_id.to_string(),
                            version,
                            attempts: 0,
                        })
                        .await;
                }
            }
            AckStatus::Stored => {
                tracing::debug!(%report_id, version, cursor = item.cursor, "report already held");
            }
            AckStatus::Rejected => {
                if !outcome.already_recorded {
                    tracing::warn!(
                        %report_id, version, cursor = item.cursor,
                        reason = outcome.reason.as_deref().unwrap_or(""),
                        "report REJECTED: kept aside, never shown as valid"
                    );
                }
            }
        }
        if outcome.ack_pending {
            self.ctx
                .ack_and_record(item.cursor, outcome.status, outcome.reason.as_deref(), 0)
                .await;
        }
        Ok(())
    }

    /// Verify one item, fetching the hub's published keys once if it names a key we do
    /// not know (and keys are not pinned). Only a failed fetch is an error.
    async fn judge(
        &self,
        item: &DeliveryItem,
        signed: &formats::report::SignedReport,
    ) -> Result<Result<formats::report::ReportPayload, judge::Rejection>, Transient> {
        let site = self.ctx.config.report_site();
        let check = |keys: &[formats::report::VerifyingKey]| {
            judge::check(signed, item.report_id.as_deref(), item.version, keys, site)
        };
        let verdict = check(&self.ctx.keys.snapshot());
        let Err(judge::Rejection {
            unknown_key: Some(key_id),
            ..
        }) = &verdict
        else {
            return Ok(verdict);
        };
        if !self.ctx.keys.should_fetch_for(key_id) {
            return Ok(verdict);
        }
        match self.fetch_keys().await {
            Ok(added) => {
                tracing::info!(%key_id, added, "fetched the hub's verification keys");
                Ok(check(&self.ctx.keys.snapshot()))
            }
            Err(e) => {
                self.ctx.keys.fetch_failed(key_id);
                Err(Transient(format!("fetching the hub's signing keys: {e}")))
            }
        }
    }

    /// `GET /api/signing-keys` over the verified link; remembers the keys durably.
    async fn fetch_keys(&self) -> Result<usize, String> {
        let request = self
            .ctx
            .hub
            .get("/api/signing-keys")
            .timeout(Duration::from_secs(30));
        let body = self.ctx.hub_call(request, MAX_JSON_BYTES).await?;
        let published: Vec<PublishedKey> =
            serde_json::from_slice(&body).map_err(|e| format!("not the expected key list: {e}"))?;
        let usable = keys::usable_published_keys(&published);
        if !usable.is_empty() {
            self.ctx
                .outbox
                .write_report(ReportWrite::Keys(usable.clone()))
                .await
                .map_err(|e| format!("remembering keys: {e}"))?;
        }
        Ok(self.ctx.keys.add(&usable))
    }
}
