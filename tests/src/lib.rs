//! Test harness for the end-to-end suite: real hub and gateway processes on free ports
//! in temporary directories, on either backend pair, driven by third-party clients
//! (dcmtk, dicomweb-client) and plain HTTP.
//!
//! The PostgreSQL + S3 backend needs the servers that `scripts/test` starts; it passes
//! their addresses in `HUB_TEST_PG_URL` and `HUB_TEST_S3_URL`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod accounts;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tempfile::TempDir;

/// Which storage backends a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: SQLite file and local blob directory.
    SqliteLocal,
    /// Scale-out: PostgreSQL server and S3-compatible object storage.
    PostgresS3,
}

/// A test's private storage: a temporary directory plus a database and blob location.
pub struct Env {
    /// Backend pair.
    pub backend: Backend,
    /// Temporary directory holding data directories and logs.
    pub dir: TempDir,
    /// Database URL for hubs of this test.
    pub database_url: String,
    /// Blob URL for hubs of this test.
    pub blob_url: String,
    /// Sites, users and gateway keys (`None` for a bare environment).
    pub accounts: Option<Arc<accounts::Accounts>>,
}

impl Env {
    /// Create fresh storage for one test, with the fixture accounts
    /// ([`accounts::create_fixture`]).
    pub async fn new(backend: Backend) -> Result<Env> {
        let mut env = Env::bare(backend).await?;
        let storage = env.storage().await?;
        let accounts = accounts::create_fixture(&storage.db).await?;
        storage.db.close().await;
        env.accounts = Some(Arc::new(accounts));
        Ok(env)
    }

    /// The fixture accounts; fails for a bare environment.
    pub fn accounts(&self) -> Result<&accounts::Accounts> {
        self.accounts
            .as_deref()
            .context("a bare Env has no accounts")
    }

    /// Create fresh, empty storage for one test: no sites, no users.
    pub async fn bare(backend: Backend) -> Result<Env> {
        let dir = tempfile::Builder::new().prefix("hub-e2e-").tempdir()?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (database_url, blob_url) = match backend {
            Backend::SqliteLocal => (
                format!("sqlite://{}", dir.path().join("hub.db").display()),
                dir.path().join("blobs").display().to_string(),
            ),
            Backend::PostgresS3 => {
                let admin = std::env::var("HUB_TEST_PG_URL")
                    .context("HUB_TEST_PG_URL is not set: run the suite with scripts/test")?;
                let s3 = std::env::var("HUB_TEST_S3_URL")
                    .context("HUB_TEST_S3_URL is not set: run the suite with scripts/test")?;
                let name = format!("t_{tag}");
                let pool = sqlx::PgPool::connect(&admin).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await?;
                pool.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                let (bucket, query) = s3.split_once('?').unwrap_or((&s3, ""));
                (format!("{base}/{name}"), format!("{bucket}/{tag}?{query}"))
            }
        };
        Ok(Env {
            backend,
            dir,
            database_url,
            blob_url,
            accounts: None,
        })
    }

    /// Open the storage API on this test's backends (for direct assertions).
    pub async fn storage(&self) -> Result<storage::Storage> {
        let config = storage::StorageConfig {
            database_url: self.database_url.clone(),
            max_connections: 4,
            blobs: storage::BlobConfig::from_url(&self.blob_url)?,
        };
        Ok(storage::Storage::open(&config).await?)
    }

    /// A `hub` command over this test's storage, data directory `name` (add arguments).
    pub fn hub_command(&self, name: &str) -> Result<Command> {
        let data = self.path(name);
        std::fs::create_dir_all(&data)?;
        let mut cmd = Command::new(bin("hub"));
        cmd.env("HUB_DATA_DIR", &data)
            .env("HUB_DATABASE_URL", &self.database_url)
            .env("HUB_BLOB_URL", &self.blob_url);
        Ok(cmd)
    }

    /// Run `hub <args>` (an admin or audit command) to completion.
    pub fn hub_cli(&self, args: &[&str]) -> Result<Output> {
        Ok(self
            .hub_command("hub-cli")?
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// A path inside the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Path of a workspace binary built in the same profile as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-hash -> target/<profile>/<name>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name)
}

/// Shared test data (`../shared/testdata` from the repository root).
pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata")
        .join(rel)
}

/// A free TCP port on 127.0.0.1 for a server started later.
///
/// Chosen below Linux's ephemeral range (32768+): a client retrying a port in that range
/// while nothing listens can be handed the very same port for its own end and connect to
/// itself, taking the port from the server that starts later.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % 5000) as u16;
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed + n.wrapping_mul(7)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// A child process killed when dropped, whose stderr goes to a log file.
pub struct Proc {
    child: Option<Child>,
    /// Log file of its stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Start `cmd`, wait for a stdout line starting with `ready_prefix`, return it.
    fn start(mut cmd: Command, log: PathBuf, ready_prefix: &str) -> Result<(Proc, String)> {
        let log_file = std::fs::File::create(&log)?;
        cmd.stdout(Stdio::piped())
            .stderr(log_file)
            .stdin(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut proc = Proc {
            child: Some(child),
            log,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(ready_prefix) => return Ok((proc, line)),
                Ok(_) => continue,
                Err(_) => {
                    let exit = proc
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    proc.kill();
                    bail!(
                        "{ready_prefix} never printed (exit: {exit:?}); log:\n{}",
                        proc.log_tail()
                    );
                }
            }
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running hub process (hub + DICOMweb read side).
pub struct Hub {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Hub {
    /// Start a hub on `port` (0 for any) over the test's storage.
    pub fn start(env: &Env, name: &str, port: u16) -> Result<Hub> {
        Self::start_with(env, name, port, &[])
    }

    /// Like [`Hub::start`], with further `HUB_*` environment settings.
    pub fn start_with(env: &Env, name: &str, port: u16, settings: &[(&str, &str)]) -> Result<Hub> {
        let mut cmd = env.hub_command(name)?;
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("HUB_WORKERS", "2")
            .env("RUST_LOG", "info,sqlx=warn")
            .envs(settings.iter().copied());
        let (proc, line) = Proc::start(cmd, env.path(&format!("{name}.log")), "hub ready:")?;
        let url = line
            .split_once('=')
            .map(|(_, url)| url)
            .context("hub ready line")?
            .trim()
            .to_string();
        if let Some(accounts) = &env.accounts {
            accounts::register(&url, accounts.clone());
        }
        Ok(Hub { proc, url })
    }

    /// The DICOMweb root.
    pub fn dicomweb(&self) -> String {
        format!("{}/dicomweb", self.url)
    }
}

/// A running `viewer-api` process (the read side on its own, as in the scale-out deployment).
pub struct Viewer {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Viewer {
    /// Start viewer-api on any free port over the test's storage.
    pub fn start(env: &Env, name: &str) -> Result<Viewer> {
        let mut cmd = Command::new(bin("viewer-api"));
        cmd.env("VIEWER_LISTEN", "127.0.0.1:0")
            .env("VIEWER_DATABASE_URL", &env.database_url)
            .env("VIEWER_BLOB_URL", &env.blob_url)
            .env("RUST_LOG", "info,sqlx=warn");
        let (proc, line) = Proc::start(cmd, env.path(&format!("{name}.log")), "viewer-api ready:")?;
        let url = line
            .split("http=")
            .nth(1)
            .context("viewer-api ready line")?
            .trim()
            .to_string();
        if let Some(accounts) = &env.accounts {
            accounts::register(&url, accounts.clone());
        }
        Ok(Viewer { proc, url })
    }
}

/// A running gateway process.
pub struct Gateway {
    /// The process.
    pub proc: Proc,
    /// DICOM listener address `127.0.0.1:PORT`.
    pub dicom: String,
    /// Its AE title.
    pub ae: String,
    /// Its configuration file (to restart it the same way).
    pub config: PathBuf,
    /// Its local report page, `http://127.0.0.1:PORT`, when listening.
    pub reports: Option<String>,
    /// Its HL7 MLLP listener `127.0.0.1:PORT`, when listening.
    pub hl7: Option<String>,
}

impl Gateway {
    /// Write a configuration and start a gateway of `site` (with its key) forwarding to
    /// `hub_url`.
    pub fn start(env: &Env, name: &str, hub_url: &str, site: &str) -> Result<Gateway> {
        Self::start_with(env, name, hub_url, site, "")
    }

    /// Like [`Gateway::start`], with extra TOML lines in the configuration.
    pub fn start_with(
        env: &Env,
        name: &str,
        hub_url: &str,
        site: &str,
        extra: &str,
    ) -> Result<Gateway> {
        let data = env.path(name);
        std::fs::create_dir_all(&data)?;
        let config = data.join("gateway.toml");
        let key = env.accounts()?.key(site)?;
        // Fast retries suit most tests; a test that sets one of these in `extra`
        // (a production backoff, say) has its own value instead.
        let defaults = format!(
            "ae_title = \"TOWNSHIP_GW\"\nlisten = \"127.0.0.1:0\"\nhub_url = \"{hub_url}\"\nsite = \"{site}\"\n\
             hub_key = \"{key}\"\ndata_dir = \"{}\"\nquiet_period_secs = 1\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
             report_listen = \"127.0.0.1:0\"\nhl7_listen = \"127.0.0.1:0\"\n",
            data.join("data").display()
        );
        let set_in_extra = |line: &str| {
            let key = line.split('=').next().unwrap_or_default().trim();
            extra
                .lines()
                .any(|l| l.split('=').next().unwrap_or_default().trim() == key)
        };
        let kept: Vec<&str> = defaults.lines().filter(|l| !set_in_extra(l)).collect();
        std::fs::write(&config, format!("{}\n{extra}\n", kept.join("\n")))?;
        Self::restart(env, name, &config)
    }

    /// Start a gateway from an existing configuration (after a crash, say).
    pub fn restart(env: &Env, name: &str, config: &Path) -> Result<Gateway> {
        let mut cmd = Command::new(bin("gateway"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,sqlx=warn");
        let log = env.path(&format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let (proc, line) = Proc::start(cmd, log, "gateway ready:")?;
        let dicom = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("dicom="))
            .context("dicom= in ready line")?
            .to_string();
        let ae = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ae="))
            .unwrap_or("TOWNSHIP_GW")
            .to_string();
        let reports = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("reports="))
            .map(str::to_string);
        let hl7 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("hl7="))
            .map(str::to_string);
        Ok(Gateway {
            proc,
            dicom,
            ae,
            config: config.to_path_buf(),
            reports,
            hl7,
        })
    }

    /// Output of `gateway status` for this gateway's configuration.
    pub fn status(&self) -> Result<String> {
        let out = Command::new(bin("gateway"))
            .args(["status", "--config"])
            .arg(&self.config)
            .output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    fn host_port(&self) -> (String, String) {
        let (h, p) = self.dicom.rsplit_once(':').unwrap_or(("127.0.0.1", "104"));
        (h.to_string(), p.to_string())
    }

    /// Run dcmtk's `storescu` against this gateway; fails unless every file was stored.
    pub fn storescu(&self, extra: &[&str], files: &[PathBuf]) -> Result<Output> {
        let (host, port) = self.host_port();
        let out = Command::new("/usr/bin/storescu")
            .args(["-aec", &self.ae, "-nh"])
            .args(extra)
            .arg(&host)
            .arg(&port)
            .args(files)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // With -nh storescu exits 0 even when files fail: read what it said.
        if !out.status.success() || text.contains("E: ") {
            bail!("storescu failed: {text}");
        }
        Ok(out)
    }

    /// Run dcmtk's `echoscu`.
    pub fn echoscu(&self) -> Result<Output> {
        let (host, port) = self.host_port();
        Ok(Command::new("/usr/bin/echoscu")
            .args(["-aec", &self.ae])
            .arg(&host)
            .arg(&port)
            .output()?)
    }
}

/// Poll `check` until it yields `Some`, or fail after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Build a STOW-RS body from (content type, bytes) parts.
pub fn multipart(boundary: &str, parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (ct, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// STOW-RS the given DICOM files' bytes in one request as the gateway of `site`
/// (default `local`); returns status and JSON body.
pub async fn stow(url: &str, site: Option<&str>, parts: &[Vec<u8>]) -> Result<(u16, Value)> {
    let accounts = accounts::for_url(url).context("no accounts registered for this hub")?;
    let key = accounts.key(site.unwrap_or("local"))?.to_string();
    stow_as(url, Some(&key), parts).await
}

/// STOW-RS with the given bearer credential (or none).
pub async fn stow_as(url: &str, token: Option<&str>, parts: &[Vec<u8>]) -> Result<(u16, Value)> {
    let parts: Vec<(&str, Vec<u8>)> = parts
        .iter()
        .map(|p| ("application/dicom", p.clone()))
        .collect();
    let body = multipart("STOWBOUNDARY", &parts);
    let mut req = reqwest::Client::new()
        .post(format!("{url}/dicomweb/studies"))
        .header(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=STOWBOUNDARY",
        )
        .header("Accept", "application/dicom+json")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, json))
}

/// Run SQL statements against a test's database directly, as someone with database
/// rights would (to tamper, or to set known times).
pub async fn run_sql(env: &Env, statements: &[String]) -> Result<()> {
    use sqlx::Connection;
    match env.backend {
        Backend::SqliteLocal => {
            let mut c = sqlx::SqliteConnection::connect(&env.database_url).await?;
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(s.as_str()))
                    .execute(&mut c)
                    .await?;
            }
        }
        Backend::PostgresS3 => {
            let mut c = sqlx::PgConnection::connect(&env.database_url).await?;
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(s.as_str()))
                    .execute(&mut c)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Send a request with an optional bearer token and JSON body; status and body (JSON
/// when it parses, else the text as a JSON string).
pub async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(reqwest::StatusCode, Value)> {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The Study Instance UID of a DICOM file.
pub fn study_uid_of(file: &Path) -> Result<String> {
    let obj = dicom_object::open_file(file)?;
    Ok(obj
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)?
        .to_str()?
        .trim_end_matches('\0')
        .to_string())
}

/// As the claim holder: save the draft, take the preview, confirm what it shows and
/// sign; returns the signed version.
pub async fn sign_report(
    hub_url: &str,
    token: &str,
    exam: &str,
    template: &str,
    content: Value,
    critical: bool,
) -> Result<Value> {
    let base = format!("{hub_url}/api/exams/{exam}/report");
    let body = serde_json::json!({"template": template, "content": content, "critical": critical});
    let (status, draft) = call(
        reqwest::Method::PUT,
        &format!("{base}/draft"),
        Some(token),
        Some(body),
    )
    .await?;
    anyhow::ensure!(status == 200, "draft: {status} {draft}");
    let (status, preview) = call(
        reqwest::Method::GET,
        &format!("{base}/preview"),
        Some(token),
        None,
    )
    .await?;
    anyhow::ensure!(status == 200, "preview: {status} {preview}");
    let confirm = serde_json::json!({"confirm_sha256": preview["confirm_sha256"]});
    let (status, signed) = call(
        reqwest::Method::POST,
        &format!("{base}/sign"),
        Some(token),
        Some(confirm),
    )
    .await?;
    anyhow::ensure!(status == 200, "sign: {status} {signed}");
    Ok(signed)
}

/// The county reader's token for a URL of a hub a test started.
pub fn reader_token(url: &str) -> Option<String> {
    accounts::for_url(url).map(|a| a.reader.clone())
}

/// GET a URL as JSON, as the county reader.
pub async fn get_json(url: &str) -> Result<(u16, Value)> {
    get_json_as(url, reader_token(url).as_deref()).await
}

/// GET a URL as JSON with the given bearer token (or none).
pub async fn get_json_as(url: &str, token: Option<&str>) -> Result<(u16, Value)> {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The boundary of a `multipart/...` Content-Type.
pub fn boundary_of(content_type: &str) -> Result<String> {
    Ok(content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .context("no boundary in the Content-Type")?
        .trim_matches('"')
        .to_string())
}

/// Split a `multipart/related` response into its parts' bodies (as the county reader).
pub async fn retrieve_parts(url: &str) -> Result<Vec<Vec<u8>>> {
    let mut req = reqwest::Client::new().get(url);
    if let Some(token) = reader_token(url) {
        req = req.bearer_auth(token);
    }
    let resp = req
        .header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("retrieve {url}: HTTP {}", resp.status());
    }
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let boundary = boundary_of(&ct)?;
    let mut mp = multer::Multipart::new(resp.bytes_stream(), boundary);
    let mut parts = Vec::new();
    while let Some(field) = mp.next_field().await? {
        parts.push(field.bytes().await?.to_vec());
    }
    Ok(parts)
}

/// A DICOM JSON attribute's first value as text.
pub fn attr(item: &Value, tag: &str) -> Option<String> {
    let v = item.get(tag)?.get("Value")?.get(0)?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o
            .get("Alphabetic")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// The SOP Instance UIDs listed in a STOW response sequence (`00081199` or `00081198`).
pub fn sop_uids(resp: &Value, seq: &str) -> Vec<String> {
    resp.get(seq)
        .and_then(|s| s.get("Value"))
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(|i| attr(i, "00081155")).collect())
        .unwrap_or_default()
}

/// Every data element of a Part 10 file as DICOM JSON, group lengths and trailing padding
/// (which dcmtk drops on the wire) left out: equal for
/// two files that carry the same values, however each sender padded and grouped them.
pub fn elements_json(file: &[u8]) -> Result<Value> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Always)
        .from_reader(file)?;
    let mut v = dicom_json::to_value(&*obj)?;
    if let Some(map) = v.as_object_mut() {
        map.retain(|tag, _| !tag.ends_with("0000") && tag != "FFFCFFFC");
    }
    Ok(v)
}

/// Bytes of a Part 10 file after its file meta group: what C-STORE transfers.
pub fn dataset_bytes(file: &[u8]) -> Result<&[u8]> {
    if file.len() < 144 || &file[128..132] != b"DICM" {
        bail!("not a Part 10 file");
    }
    // (0002,0000) group length UL: tag 4 + VR 2 + len 2 + value 4.
    let group_len = u32::from_le_bytes([file[140], file[141], file[142], file[143]]) as usize;
    Ok(&file[144 + group_len..])
}
