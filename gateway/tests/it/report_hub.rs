//! A hub stand-in for the report delivery contract (docs/reports.md), for the gateway's
//! side only: it serves signed report items on a long-poll feed, publishes verification
//! keys, serves PDFs and records acks and critical-finding acknowledgements. The real
//! hub and gateway are tested together in the `tests` crate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use formats::report::{self, ReportPayload, SignedReport, SigningKey, VerifyingKey};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// The gateway key the stand-in expects.
pub const REPORT_HUB_KEY: &str = "gk_reports_test";

/// What the stand-in holds and saw.
#[derive(Default)]
pub struct PeerState {
    /// Delivery items, each with its cursor.
    pub items: Mutex<Vec<Value>>,
    /// Published keys (`/api/signing-keys`).
    pub published: Mutex<Vec<Value>>,
    /// Bodies of `POST /api/delivery/ack`.
    pub acks: Mutex<Vec<Value>>,
    /// Bodies of `POST /api/delivery/critical-ack`.
    pub critical_acks: Mutex<Vec<Value>>,
    /// `after` of every poll.
    pub polls: Mutex<Vec<i64>>,
    /// (report id, version) of every PDF request.
    pub pdf_requests: Mutex<Vec<(String, i64)>>,
    /// `GET /api/signing-keys` requests.
    pub key_requests: AtomicUsize,
    /// Requests without the right key.
    pub unauthorized: AtomicUsize,
    /// The next this-many PDF requests fail with 503.
    pub pdf_failures: AtomicUsize,
    new_item: Notify,
}

/// The stand-in hub (plain HTTP on 127.0.0.1).
pub struct ReportHub {
    pub state: Arc<PeerState>,
    pub port: u16,
    handle: Option<ServerHandle>,
}

impl ReportHub {
    /// Start on a free port.
    pub async fn start() -> ReportHub {
        Self::start_with(Arc::new(PeerState::default()), 0).await
    }

    /// Start (again) with `state` on `port` (0: any free port).
    pub async fn start_with(state: Arc<PeerState>, port: u16) -> ReportHub {
        let listener =
            std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let data = web::Data::new(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/api/delivery", web::get().to(delivery))
                .route("/api/delivery/ack", web::post().to(ack))
                .route("/api/delivery/critical-ack", web::post().to(critical_ack))
                .route("/api/signing-keys", web::get().to(signing_keys))
                .route(
                    "/api/reports/{report_id}/versions/{version}/pdf",
                    web::get().to(pdf),
                )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        ReportHub {
            state,
            port,
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop at once (open long-polls are cut): the hub is "down".
    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop(false).await;
        }
    }

    /// Publish a verification key.
    pub fn publish(&self, key: &VerifyingKey) {
        self.state.published.lock().expect("lock").push(json!({
            "key_id": report::key_id(key),
            "algorithm": "Ed25519",
            "public_key": report::encode_public_key(key),
        }));
    }

    /// Add a delivery item; returns its cursor.
    pub fn deliver(&self, signed: &SignedReport, envelope: &ReportPayload) -> i64 {
        let mut items = self.state.items.lock().expect("lock");
        let cursor = items.len() as i64 + 1;
        items.push(json!({
            "cursor": cursor,
            "kind": "report",
            "report_id": envelope.report_id,
            "version": envelope.version,
            "status": envelope.status.as_str(),
            "critical": envelope.critical,
            "signed": signed,
        }));
        drop(items);
        self.state.new_item.notify_waiters();
        cursor
    }

    pub fn acks(&self) -> Vec<Value> {
        self.state.acks.lock().expect("lock").clone()
    }

    /// The ack bodies for `cursor`.
    pub fn acks_for(&self, cursor: i64) -> Vec<Value> {
        self.acks()
            .into_iter()
            .filter(|a| a["cursor"] == cursor)
            .collect()
    }

    pub fn critical_acks(&self) -> Vec<Value> {
        self.state.critical_acks.lock().expect("lock").clone()
    }

    pub fn polls(&self) -> Vec<i64> {
        self.state.polls.lock().expect("lock").clone()
    }

    pub fn pdf_requests(&self) -> Vec<(String, i64)> {
        self.state.pdf_requests.lock().expect("lock").clone()
    }

    pub fn key_requests(&self) -> usize {
        self.state.key_requests.load(Ordering::SeqCst)
    }

    pub fn unauthorized(&self) -> usize {
        self.state.unauthorized.load(Ordering::SeqCst)
    }
}

type State = web::Data<Arc<PeerState>>;

fn authorized(req: &HttpRequest, state: &PeerState) -> bool {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {REPORT_HUB_KEY}"));
    if !ok {
        state.unauthorized.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

fn refused() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({"error": "unknown or missing gateway key"}))
}

#[derive(Deserialize)]
struct Poll {
    after: i64,
    wait: u64,
}

async fn delivery(state: State, req: HttpRequest, query: web::Query<Poll>) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    assert!(query.wait <= 55, "wait must be at most 55 s");
    state.polls.lock().expect("lock").push(query.after);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(query.wait);
    loop {
        let notified = state.new_item.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut found: Vec<Value> = state
            .items
            .lock()
            .expect("lock")
            .iter()
            .filter(|i| i["cursor"].as_i64().unwrap_or(0) > query.after)
            .cloned()
            .collect();
        if !found.is_empty() {
            let next = found
                .iter()
                .filter_map(|i| i["cursor"].as_i64())
                .max()
                .unwrap_or(query.after);
            // Critical items first, as the contract says.
            found.sort_by_key(|i| !i["critical"].as_bool().unwrap_or(false));
            return HttpResponse::Ok().json(json!({"items": found, "next_cursor": next}));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return HttpResponse::Ok().json(json!({"items": [], "next_cursor": query.after}));
        }
    }
}

async fn ack(state: State, req: HttpRequest, body: web::Json<Value>) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    state.acks.lock().expect("lock").push(body.into_inner());
    HttpResponse::Ok().json(json!({}))
}

async fn critical_ack(state: State, req: HttpRequest, body: web::Json<Value>) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    state
        .critical_acks
        .lock()
        .expect("lock")
        .push(body.into_inner());
    HttpResponse::Ok().json(json!({}))
}

async fn signing_keys(state: State) -> HttpResponse {
    // Public in the contract ("everyone"): no key needed.
    state.key_requests.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(state.published.lock().expect("lock").clone())
}

async fn pdf(state: State, req: HttpRequest, path: web::Path<(String, i64)>) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    let (report_id, version) = path.into_inner();
    state
        .pdf_requests
        .lock()
        .expect("lock")
        .push((report_id.clone(), version));
    if state
        .pdf_failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return HttpResponse::ServiceUnavailable().body("PDF renderer busy");
    }
    HttpResponse::Ok()
        .content_type("application/pdf")
        .body(format!(
            "%PDF-1.4\n% test report {report_id} v{version}\n%%EOF\n"
        ))
}

/// A signing key for the tests.
pub fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}
