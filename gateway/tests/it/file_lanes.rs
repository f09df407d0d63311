//! What the laboratory and ECG tests share: a stand-in hub on 127.0.0.1 serving the
//! routes a test gives it, a STOW-RS endpoint that is always busy (the DICOM lane held
//! up), the gateway pointed at the stand-in, `gateway run` as a process, and the
//! quarantine rows of one kind.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use sqlx::Row;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

/// A stand-in hub (plain HTTP on 127.0.0.1).
pub struct StandIn {
    pub port: u16,
    handle: Option<ServerHandle>,
}

impl StandIn {
    /// Serve the routes `configure` adds on `port` (0: any free port).
    pub fn start<F>(port: u16, configure: F) -> StandIn
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let listener =
            std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .configure(configure.clone())
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        StandIn {
            port,
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop at once: the hub is "down".
    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop(false).await;
        }
    }
}

/// A STOW-RS endpoint that keeps the DICOM lane busy: each request is answered 503
/// after `delay_ms`.
#[derive(Default)]
pub struct BusyStow {
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    pub delay_ms: AtomicU64,
}

impl BusyStow {
    /// Add `POST /dicomweb/studies` answered by `stow` to a stand-in's routes.
    pub fn route(stow: &Arc<BusyStow>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(Arc::clone(stow)))
            .route("/dicomweb/studies", web::post().to(busy_stow));
    }
}

async fn busy_stow(stow: web::Data<Arc<BusyStow>>) -> HttpResponse {
    stow.started.fetch_add(1, Ordering::SeqCst);
    let delay = stow.delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    stow.finished.fetch_add(1, Ordering::SeqCst);
    HttpResponse::ServiceUnavailable().body("busy")
}

/// The gateway in-process, sending to `hub_url` with `key`.
pub async fn start_gateway_for(
    hub_url: String,
    key: &'static str,
    adjust: impl FnOnce(&mut gateway::Config),
) -> TestApp {
    TestApp::start(move |c| {
        c.hub_url = hub_url;
        c.hub_key = key.into();
        adjust(c);
    })
    .await
}

/// `gateway run` as a process (no report page, the HL7 listener on `hl7_listen`, fast
/// backoff); the child and its ready line.
pub async fn spawn_gateway_run(
    data_dir: &Path,
    hub_url: &str,
    key: &str,
    hl7_listen: &str,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("run")
        .env("GATEWAY_LISTEN", "127.0.0.1:0")
        .env("GATEWAY_DATA_DIR", data_dir)
        .env("GATEWAY_HUB_URL", hub_url)
        .env("GATEWAY_HUB_KEY", key)
        .env("GATEWAY_REPORT_LISTEN", "")
        .env("GATEWAY_HL7_LISTEN", hl7_listen)
        .env("GATEWAY_BACKOFF_BASE_MS", "50")
        .env("GATEWAY_BACKOFF_MAX_MS", "500")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("gateway binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("ready line in time")
        .expect("read stdout")
        .expect("a line");
    assert!(line.starts_with("gateway ready: dicom="), "{line}");
    (child, line)
}

/// Kill a `gateway run` child with SIGKILL (no chance to clean up) and reap it.
pub async fn kill_hard(child: &mut Child) {
    let killed = Command::new("kill")
        .args(["-KILL", &child.id().expect("running").to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    let _ = child.wait().await;
}

/// Stop a `gateway run` child with SIGTERM and wait for it (bounded).
pub async fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().expect("running").to_string()])
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
}

/// Quarantine rows of `kind`: (source, `name_column`, reason, path).
pub async fn quarantine_of(
    app: &TestApp,
    kind: &str,
    name_column: &str,
) -> Vec<(String, Option<String>, String, Option<String>)> {
    let sql = format!(
        "SELECT source, {name_column}, reason, path FROM quarantine WHERE kind = ? ORDER BY id"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(kind)
        .fetch_all(app.gateway().outbox().pool())
        .await
        .expect("quarantine rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Wait until `count` reaches `n`.
pub async fn count_reaches(
    timeout: Duration,
    what: &str,
    n: usize,
    count: impl Fn() -> usize + Send + Sync + 'static,
) {
    let count = Arc::new(count);
    eventually(timeout, what, move || {
        let count = Arc::clone(&count);
        async move { count() >= n }
    })
    .await;
}

/// `gateway status` shows each of these texts (the whole output is printed when not).
pub fn assert_status_shows(status: &str, texts: &[&str]) {
    for text in texts {
        assert!(status.contains(text), "{text:?} not in:\n{status}");
    }
}
