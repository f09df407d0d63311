//! The township's side door: its gateway long-polls for signed reports, acknowledges
//! each one, and relays clinicians' acknowledgements of critical findings.

use std::time::{Duration, Instant};

use access::policy::store_site;
use access::Caller;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use storage::audit::{Action, EventType, Outcome};
use viewer_api::ApiError;

use crate::HubState;

/// Mount the delivery routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/delivery", web::get().to(poll))
        .route("/api/delivery/ack", web::post().to(ack))
        .route("/api/delivery/critical-ack", web::post().to(critical_ack));
}

fn site(caller: &Caller) -> Result<String, ApiError> {
    store_site(&caller.principal)
        .map(str::to_string)
        .ok_or_else(|| ApiError::not_found("no delivery outbox for this caller"))
}

/// Query of the long-poll.
#[derive(Deserialize)]
pub struct PollQuery {
    /// Last cursor the gateway stored.
    #[serde(default)]
    after: i64,
    /// Seconds to wait for the first item (0..=55).
    #[serde(default)]
    wait: u64,
    limit: Option<i64>,
}

/// `GET /api/delivery?after=&wait=`: items after the cursor, waiting for the first.
async fn poll(
    caller: Caller,
    state: web::Data<HubState>,
    q: web::Query<PollQuery>,
) -> Result<HttpResponse, ApiError> {
    let site = site(&caller)?;
    if q.wait > 55 {
        return Err(ApiError::bad_request(
            "invalid_wait",
            "wait must be at most 55 seconds",
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(q.wait);
    let mut stopping = state.stopping.subscribe();
    loop {
        // Ask to be woken before looking, so a signature in between is not missed.
        let changed = state.changes.notified();
        let items = storage::reports::poll_deliveries(
            &state.storage.db,
            &site,
            q.after,
            q.limit.unwrap_or(50),
        )
        .await?;
        // A stopping hub answers what it has now: the gateway polls the next replica.
        let left = match *stopping.borrow_and_update() {
            true => Duration::ZERO,
            false => deadline.saturating_duration_since(Instant::now()),
        };
        if !items.is_empty() || left.is_zero() {
            let next = items.iter().map(|i| i.cursor).max().unwrap_or(q.after);
            let items: Vec<serde_json::Value> = items
                .into_iter()
                .map(|i| {
                    serde_json::json!({
                        "cursor": i.cursor, "kind": "report", "report_id": i.report_id, "version": i.version,
                        "status": i.status, "critical": i.critical, "signed": i.signed,
                    })
                })
                .collect();
            return Ok(
                HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next }))
            );
        }
        // Other hub processes sign too: look again at least every second.
        tokio::select! {
            _ = tokio::time::timeout(left.min(Duration::from_secs(1)), changed) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// Body of an acknowledgement.
#[derive(Deserialize)]
pub struct AckBody {
    cursor: i64,
    status: String,
    reason: Option<String>,
}

async fn ack(
    caller: Caller,
    state: web::Data<HubState>,
    body: web::Json<AckBody>,
) -> Result<HttpResponse, ApiError> {
    let site = site(&caller)?;
    let stored = match body.status.as_str() {
        "stored" => true,
        "rejected" => false,
        other => {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!("status must be stored or rejected, not {other:?}"),
            ))
        }
    };
    let reason = body
        .reason
        .as_deref()
        .map(|r| r.chars().take(1000).collect::<String>());
    let outcome = if stored {
        Outcome::Success
    } else {
        Outcome::SeriousFailure
    };
    let audit = caller.event(
        EventType::DICOM_INSTANCES_TRANSFERRED,
        Action::Read,
        outcome,
    );
    if storage::reports::ack_delivery(
        &state.storage.db,
        &site,
        body.cursor,
        stored,
        reason.as_deref(),
        &audit,
    )
    .await?
    {
        if !stored {
            tracing::error!(site, cursor = body.cursor, reason = ?reason, "a township refused a signed report");
        }
        state.changes.notify_waiters();
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(format!(
            "no delivery {} for site {site}",
            body.cursor
        )))
    }
}

/// Body of a critical-finding acknowledgement.
#[derive(Deserialize)]
pub struct CriticalAckBody {
    report_id: String,
    version: i64,
    acknowledged_by: String,
}

async fn critical_ack(
    caller: Caller,
    state: web::Data<HubState>,
    body: web::Json<CriticalAckBody>,
) -> Result<HttpResponse, ApiError> {
    let site = site(&caller)?;
    let by = body.acknowledged_by.trim();
    if by.is_empty() || by.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "invalid_name",
            "acknowledged_by must name the clinician (1-100 characters)",
        ));
    }
    let audit = caller.event(EventType::PATIENT_RECORD, Action::Update, Outcome::Success);
    if storage::reports::acknowledge_critical(
        &state.storage.db,
        &site,
        &body.report_id,
        body.version,
        by,
        &audit,
    )
    .await?
    {
        state.changes.notify_waiters();
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("no such critical report for this site"))
    }
}
