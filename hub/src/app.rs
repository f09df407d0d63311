//! Assembling the HTTP application from configuration.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use access::Access;
use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use storage::Storage;
use tokio::sync::Semaphore;
use viewer_api::ViewerState;

use crate::HubConfig;

/// Shared state of the hub's routes.
#[derive(Clone)]
pub struct HubState {
    /// Index and blobs.
    pub storage: Storage,
    /// Where request bodies are spooled while they are checked.
    pub tmp_dir: PathBuf,
    /// Largest instance accepted.
    pub max_instance_bytes: u64,
    /// Caps header parses running at once (each may hold a header in memory).
    pub parse_slots: Arc<Semaphore>,
    /// Reading targets from the configuration (an administrator's, stored in the
    /// database, take precedence: [`HubState::deadlines`]).
    pub configured_deadlines: storage::worklist::DeadlineTargets,
    /// Claim lease, ms.
    pub lease_ms: i64,
    /// Woken whenever this process changes an exam or a delivery (worklist events,
    /// delivery long-polls); other processes' changes are seen by polling.
    pub changes: Arc<tokio::sync::Notify>,
    /// Signs reports.
    pub signer: Arc<crate::signing::ReportSigner>,
    /// Critical limits of lab tests.
    pub critical_limits: Arc<Vec<crate::lab::Limit>>,
    /// Set once when the process is asked to stop: long-polls answer at once instead
    /// of holding a deploy for their full wait.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl HubState {
    /// State for the given storage and configuration; creates the temporary directory.
    pub fn new(
        storage: Storage,
        config: &HubConfig,
        signer: Arc<crate::signing::ReportSigner>,
    ) -> std::io::Result<Self> {
        let tmp_dir = config.tmp_dir();
        std::fs::create_dir_all(&tmp_dir)?;
        // Leftovers of a crash are partial uploads nobody acknowledged.
        for entry in std::fs::read_dir(&tmp_dir)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(HubState {
            storage,
            tmp_dir,
            max_instance_bytes: config.max_instance_bytes,
            parse_slots: Arc::new(Semaphore::new(cores * 2)),
            configured_deadlines: config.deadlines.clone(),
            lease_ms: config.claim_lease_minutes.max(1) * 60_000,
            changes: Arc::new(tokio::sync::Notify::new()),
            signer,
            critical_limits: Arc::new(config.critical_limits.clone()),
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
        })
    }

    /// The reading targets in force now.
    pub async fn deadlines(
        &self,
    ) -> Result<storage::worklist::DeadlineTargets, storage::StorageError> {
        storage::worklist::deadline_targets(&self.storage.db, &self.configured_deadlines).await
    }
}

/// Mount the hub's own routes (ingest). The caller registers `web::Data<HubState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dicomweb/studies", web::post().to(crate::stow::store))
        .route(
            "/dicomweb/studies/{study}",
            web::post().to(crate::stow::store_into_study),
        )
        .route(
            "/ingest/studies/{study}/complete",
            web::post().to(crate::ingest::complete),
        )
        .route("/api/exams", web::get().to(crate::ingest::list_exams))
        .route("/healthz", web::get().to(health));
}

async fn health(state: web::Data<HubState>) -> HttpResponse {
    match state.storage.db.ping().await {
        Ok(()) => HttpResponse::Ok().body("ok"),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("database unavailable: {e}")),
    }
}

/// How often unacknowledged critical alerts are looked for.
const ESCALATION_CHECK_SECS: u64 = 5;

/// Build the server on an already bound listener (so tests can bind port 0); with a
/// TLS configuration it serves HTTPS only.
pub fn build_server(
    listener: TcpListener,
    storage: Storage,
    config: &HubConfig,
    tls: Option<rustls::ServerConfig>,
    signer: Arc<crate::signing::ReportSigner>,
) -> std::io::Result<Server> {
    let hub = web::Data::new(HubState::new(storage.clone(), config, signer)?);
    // Unacknowledged critical values escalate; every hub process looks, each alert
    // escalates once (the update decides).
    let escalation = hub.clone();
    let ack_secs = config.critical_ack_secs;
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(ESCALATION_CHECK_SECS));
        loop {
            tick.tick().await;
            if let Err(e) = crate::lab::escalate(&escalation, ack_secs).await {
                tracing::error!(error = %e, "checking critical alerts for escalation failed");
            }
        }
    });
    // Thumbnails a crash left unmade are queued again (see render::thumbnails).
    viewer_api::render::thumbnails::start(&storage);
    let mut access_config = config.access.clone();
    access_config.secure_cookies |= tls.is_some();
    let access = web::Data::new(Access::new(storage.db.clone(), access_config));
    let viewer = web::Data::new(ViewerState::new(
        storage,
        config.report_font.as_deref(),
        &config.hospital_name,
    ));
    let serve_viewer = config.serve_viewer;
    let stopping = hub.stopping.clone();
    let cors_origins = config.cors_origins.clone();
    let server = HttpServer::new(move || {
        App::new()
            // Every request, whatever its route, passes the access guard first.
            .wrap(actix_web::middleware::from_fn(access::guard))
            .wrap(
                actix_web::middleware::Logger::new("%a \"%r\" %s %b %Dms").log_target("hub::http"),
            )
            // Outermost, so a preflight (which carries no credentials) is answered before
            // the guard; only for the configured origins (checked when loading the
            // config). Other origins get no CORS headers rather than an error, so
            // same-origin requests that carry Origin (the web UI's POSTs) are unaffected.
            .wrap(actix_web::middleware::Condition::new(
                !cors_origins.is_empty(),
                cors_origins.iter().fold(
                    actix_cors::Cors::default()
                        .allowed_methods(["GET", "HEAD", "POST", "PUT", "DELETE"])
                        .allowed_headers([
                            actix_web::http::header::AUTHORIZATION,
                            actix_web::http::header::ACCEPT,
                            actix_web::http::header::CONTENT_TYPE,
                        ])
                        .expose_headers(["Content-Location", "Warning", "Server-Timing"])
                        .supports_credentials()
                        .block_on_origin_mismatch(false)
                        .max_age(3600),
                    |cors, origin| cors.allowed_origin(origin),
                ),
            ))
            .app_data(hub.clone())
            .app_data(viewer.clone())
            .app_data(access.clone())
            // Bodies are streamed; the default 256 KiB payload limit applies only to
            // extractors that buffer (JSON), which stay small.
            .app_data(viewer_api::error::json_config(64 * 1024))
            .app_data(viewer_api::error::query_config())
            .app_data(viewer_api::error::path_config())
            .configure(configure)
            .configure(access::session::configure)
            .configure(crate::admin::http::configure)
            .configure(crate::worklist::configure)
            .configure(crate::reports::configure)
            .configure(crate::delivery::configure)
            .configure(crate::turnaround::configure)
            .configure(crate::lab::configure)
            .configure(crate::ecg::configure)
            .configure(viewer_api::ecg::configure)
            // The clinicians' report API is served here in every deployment: the
            // proxy sends /api to the hubs.
            .configure(viewer_api::reports::configure)
            // The web UI is static and served wherever `/` is routed (the hubs, behind
            // the proxy).
            .configure(viewer_api::webui::configure)
            .configure(|cfg| {
                if serve_viewer {
                    viewer_api::configure(cfg)
                }
            })
    });
    let mut server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    if let Some(w) = config.workers {
        server = server.workers(w);
    }
    // Signals are ours: long-polls must end before actix waits for in-flight requests.
    let server = server.disable_signals().run();
    actix_web::rt::spawn(stop_on_signal(server.handle(), stopping));
    Ok(server)
}

/// On SIGTERM or SIGINT: end the long-polls, then stop gracefully (requests in flight
/// finish; new connections are refused).
async fn stop_on_signal(
    server: actix_web::dev::ServerHandle,
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the hub with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    stopping.send_replace(true);
    server.stop(true).await;
}
