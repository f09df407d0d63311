//! What the gateway still owes the hub or wants from it, retried with backoff until it
//! succeeds: delivery acks that could not be sent, clinicians' acknowledgements of
//! critical findings (relayed as soon as they are recorded), PDFs not fetched yet, and
//! (when configured) HL7 messages for the HIS.
//! Everything is read from the database, so it carries over a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::db;
use super::Ctx;
use crate::outbox::now_ms;

/// Longest sleep between checks when nothing wakes the sender.
const IDLE: Duration = Duration::from_secs(30);
/// Rows handled per kind and round.
const BATCH: i64 = 32;

/// Send until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    loop {
        let work = async {
            round(&ctx).await;
        };
        tokio::select! {
            _ = work => {}
            _ = shutdown.cancelled() => return,
        }
        let hl7 = ctx.config.his_addr().is_some();
        let wait = match db::next_due_at(ctx.outbox.pool(), hl7).await {
            Ok(Some(at)) => {
                Duration::from_millis((at - now_ms()).clamp(0, IDLE.as_millis() as i64) as u64)
            }
            Ok(None) => IDLE,
            Err(e) => {
                tracing::warn!(error = %e, "could not read pending report work");
                IDLE
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One pass over everything due: relays first (a clinician is waiting on them), then
/// acks, PDFs and HL7.
async fn round(ctx: &Ctx) {
    let pool = ctx.outbox.pool();
    let now = now_ms();
    match db::due_relays(pool, now, BATCH).await {
        Ok(due) => {
            for relay in due {
                ctx.relay_and_record(&relay).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read pending acknowledgement relays"),
    }
    match db::due_acks(pool, now, BATCH).await {
        Ok(due) => {
            for ack in due {
                ctx.ack_and_record(ack.cursor, ack.status, ack.reason.as_deref(), ack.attempts)
                    .await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read pending delivery acks"),
    }
    match db::due_pdfs(pool, now, BATCH).await {
        Ok(due) => {
            for pdf in due {
                ctx.fetch_pdf_and_record(&pdf).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read pending report PDFs"),
    }
    if let Some(addr) = ctx.config.his_addr() {
        match db::due_hl7(pool, now, BATCH).await {
            Ok(due) => {
                for message in due {
                    ctx.hl7_and_record(&message, addr).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read pending HL7 messages"),
        }
    }
}
