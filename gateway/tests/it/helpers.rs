//! Test helpers: the gateway started in-process on a free port with a temporary data
//! directory, dcmtk's command-line tools as the modality, a minimal raw SCU for what
//! dcmtk refuses to send, and Orthanc (when installed) as a real STOW-RS server.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::association::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use gateway::{dimse, Config, Gateway};
use sqlx::Row;
use tempfile::TempDir;

pub const STORESCU: &str = "/usr/bin/storescu";
pub const ECHOSCU: &str = "/usr/bin/echoscu";
pub const STORESCP: &str = "/usr/bin/storescp";

/// The shared sample files (`../shared/testdata/dicom` from the repository root).
pub fn testdata(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/dicom")
        .join(relative)
}

/// The data set part of a Part 10 file (after preamble and meta group).
pub fn dataset_of(part10: &[u8]) -> &[u8] {
    assert_eq!(&part10[128..132], b"DICM", "not a Part 10 file");
    let group_len = u32::from_le_bytes([part10[140], part10[141], part10[142], part10[143]]);
    &part10[144 + group_len as usize..]
}

/// The transfer syntax UID in a Part 10 file's meta group.
pub fn transfer_syntax_of(part10: &[u8]) -> String {
    let mut pos = 132;
    while pos + 8 <= part10.len() {
        let group = u16::from_le_bytes([part10[pos], part10[pos + 1]]);
        let element = u16::from_le_bytes([part10[pos + 2], part10[pos + 3]]);
        if group != 2 {
            break;
        }
        let vr = &part10[pos + 4..pos + 6];
        let (len, header) = if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
            let l = &part10[pos + 8..pos + 12];
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        } else {
            (
                u16::from_le_bytes([part10[pos + 6], part10[pos + 7]]) as usize,
                8,
            )
        };
        if element == 0x0010 {
            let v = &part10[pos + header..pos + header + len];
            return String::from_utf8_lossy(v)
                .trim_end_matches(['\0', ' '])
                .to_string();
        }
        pos += header + len;
    }
    panic!("no transfer syntax in meta group")
}

/// A port nobody listens on (for an unreachable hub).
pub fn dead_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One outbox row, as tests look at it.
#[derive(Debug, Clone)]
pub struct ItemRow {
    pub id: i64,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub transfer_syntax_uid: String,
    pub calling_ae: String,
    pub path: String,
    pub size: i64,
    pub dataset_offset: i64,
    pub priority: i64,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// One quarantine row.
#[derive(Debug, Clone)]
pub struct QuarantineRow {
    pub sop_instance_uid: Option<String>,
    pub calling_ae: Option<String>,
    pub path: Option<String>,
    pub source: String,
    pub reason: String,
}

/// What a dcmtk run printed and returned.
#[derive(Debug)]
pub struct DcmtkRun {
    pub success: bool,
    pub output: String,
}

impl DcmtkRun {
    /// Number of C-STORE responses with status Success.
    pub fn stored(&self) -> usize {
        self.output
            .matches("Received Store Response (Success)")
            .count()
    }
}

/// The gateway running in this process.
pub struct TestApp {
    pub gateway: Option<Gateway>,
    /// Holds the data directory until the app is dropped.
    _dir: TempDir,
    pub config: Config,
}

impl TestApp {
    /// Start with test defaults (port 0, quiet period 1 s, unreachable hub) adjusted
    /// by `adjust`.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> TestApp {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().join("gateway"),
            hub_url: format!("http://127.0.0.1:{}", dead_port()),
            quiet_period_secs: 1,
            backoff_base_ms: 50,
            backoff_max_ms: 500,
            // Tests run side by side: never the fixed default ports.
            report_listen: "127.0.0.1:0".into(),
            hl7_listen: "127.0.0.1:0".into(),
            ..Config::default()
        };
        adjust(&mut config);
        let gateway = Gateway::start(config.clone())
            .await
            .expect("gateway starts");
        TestApp {
            gateway: Some(gateway),
            _dir: dir,
            config,
        }
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    pub fn port(&self) -> u16 {
        self.gateway().dicom_addr().port()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// Base URL of the local report page.
    pub fn reports_url(&self) -> String {
        format!(
            "http://{}",
            self.gateway()
                .reports_addr()
                .expect("report page listening")
        )
    }

    /// Stop and start again on the same data directory with a changed configuration.
    pub async fn restart(&mut self, adjust: impl FnOnce(&mut Config)) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
        adjust(&mut self.config);
        self.gateway = Some(
            Gateway::start(self.config.clone())
                .await
                .expect("gateway restarts"),
        );
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
    }

    /// Run dcmtk `storescu` against the gateway: `args` then host, port, `files`.
    pub async fn storescu(&self, args: &[&str], files: &[PathBuf]) -> DcmtkRun {
        let mut cmd = tokio::process::Command::new(STORESCU);
        cmd.arg("-v").arg("-aet").arg("TESTSCU").args(args);
        cmd.arg("127.0.0.1").arg(self.port().to_string());
        cmd.args(files);
        run(cmd).await
    }

    /// Run dcmtk `echoscu` against the gateway.
    pub async fn echoscu(&self, args: &[&str]) -> DcmtkRun {
        let mut cmd = tokio::process::Command::new(ECHOSCU);
        cmd.arg("-v")
            .args(args)
            .arg("127.0.0.1")
            .arg(self.port().to_string());
        run(cmd).await
    }

    /// All outbox rows, oldest first.
    pub async fn items(&self) -> Vec<ItemRow> {
        sqlx::query(
            "SELECT id, sop_instance_uid, study_uid, transfer_syntax_uid, calling_ae, path, size,
                    dataset_offset, priority, state, attempts, last_error
             FROM items ORDER BY id",
        )
        .fetch_all(self.gateway().outbox().pool())
        .await
        .expect("items")
        .iter()
        .map(|r| ItemRow {
            id: r.get(0),
            sop_instance_uid: r.get(1),
            study_uid: r.get(2),
            transfer_syntax_uid: r.get(3),
            calling_ae: r.get(4),
            path: r.get(5),
            size: r.get(6),
            dataset_offset: r.get(7),
            priority: r.get(8),
            state: r.get(9),
            attempts: r.get(10),
            last_error: r.get(11),
        })
        .collect()
    }

    /// All quarantine rows, oldest first.
    pub async fn quarantine(&self) -> Vec<QuarantineRow> {
        sqlx::query(
            "SELECT sop_instance_uid, calling_ae, path, source, reason FROM quarantine ORDER BY id",
        )
        .fetch_all(self.gateway().outbox().pool())
        .await
        .expect("quarantine")
        .iter()
        .map(|r| QuarantineRow {
            sop_instance_uid: r.get(0),
            calling_ae: r.get(1),
            path: r.get(2),
            source: r.get(3),
            reason: r.get(4),
        })
        .collect()
    }

    /// A study's completion columns: (open_associations, notified_at, last_notify_error).
    pub async fn study(&self, uid: &str) -> Option<(i64, Option<i64>, Option<String>)> {
        sqlx::query(
            "SELECT open_associations, notified_at, last_notify_error FROM studies WHERE study_uid = ?",
        )
        .bind(uid)
        .fetch_optional(self.gateway().outbox().pool())
        .await
        .expect("study")
        .map(|r| (r.get(0), r.get(1), r.get(2)))
    }

    /// Absolute path of a file recorded relative to the data directory.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.config.data_dir.join(relative)
    }

    /// Non-empty files in the spool (empty ones are pre-created blanks).
    pub fn spool_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.config.data_dir.join("spool"))
            .expect("spool dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
            .collect()
    }

    /// Whether every non-empty spool file belongs to a delivered item: nothing waiting
    /// or abandoned is left, and delivered files stay only to be reused by the next
    /// instances (see the gateway's `spool` module).
    pub async fn spool_holds_only_delivered(&self) -> bool {
        let delivered: std::collections::HashSet<PathBuf> = self
            .items()
            .await
            .iter()
            .filter(|i| i.state == "delivered")
            .map(|i| self.file(&i.path))
            .collect();
        self.spool_files().iter().all(|f| delivered.contains(f))
    }

    /// The `gateway status` binary, as a user runs it.
    pub async fn status_cli(&self, json: bool) -> String {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
        cmd.arg("status").arg("--data-dir").arg(self.data_dir());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().await.expect("gateway status runs");
        assert!(
            out.status.success(),
            "gateway status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }
}

async fn run(mut cmd: tokio::process::Command) -> DcmtkRun {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .expect("dcmtk tool runs (apt-get install dcmtk)");
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    DcmtkRun {
        success: out.status.success(),
        output,
    }
}

/// What dcmtk's `storescu` puts on the wire for `file` with `args`, as received by
/// dcmtk's own `storescp` in bit-preserving mode (`+B`). dcmtk re-encodes while
/// sending (it drops Data Set Trailing Padding and gives sequences explicit lengths),
/// so this, not the source file, is "what the modality sent".
pub async fn dcmtk_reference(args: &[&str], file: &Path) -> Vec<u8> {
    let out = tempfile::tempdir().expect("tempdir");
    let port = dead_port();
    let mut scp = tokio::process::Command::new(STORESCP)
        .args(["+B", "+xa", "-od"])
        .arg(out.path())
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("dcmtk storescp runs");
    let start = Instant::now();
    // Retried until storescp listens.
    loop {
        let mut attempt = tokio::process::Command::new(STORESCU);
        attempt
            .args(["-aet", "TESTSCU"])
            .args(args)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(file);
        let run = run(attempt).await;
        if run.success {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "storescp reference: {}",
            run.output
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = scp.kill().await;
    let files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "storescp wrote {files:?}");
    std::fs::read(&files[0]).expect("read reference")
}

/// Poll `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A minimal SCU built on dicom-ul, for what dcmtk will not send: broken files,
/// commands that contradict their data set, associations cut off mid-instance.
pub struct RawScu {
    assoc: AsyncClientAssociation<tokio::net::TcpStream>,
    context_id: u8,
    next_message_id: u16,
}

impl RawScu {
    /// Associate proposing one SOP class in one transfer syntax.
    pub async fn connect(port: u16, sop_class: &str, transfer_syntax: &str) -> RawScu {
        let assoc = ClientAssociationOptions::new()
            .calling_ae_title("RAWSCU")
            .called_ae_title("TOWNSHIP_GW")
            .with_presentation_context(sop_class, vec![transfer_syntax])
            .establish_async(("127.0.0.1", port))
            .await
            .expect("association");
        let context_id = assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .expect("accepted context")
            .id;
        RawScu {
            assoc,
            context_id,
            next_message_id: 1,
        }
    }

    async fn send_command(&mut self, command: Vec<u8>) {
        self.assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: self.context_id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: command,
                }],
            })
            .await
            .expect("send command");
    }

    async fn send_data(&mut self, dataset: &[u8], complete: bool) {
        let chunks: Vec<&[u8]> = dataset.chunks(8 * 1024).collect();
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.assoc
                .send(&Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: self.context_id,
                        value_type: PDataValueType::Data,
                        is_last: complete && i + 1 == n,
                        data: chunk.to_vec(),
                    }],
                })
                .await
                .expect("send data");
        }
    }

    /// C-STORE `dataset` under the given command UIDs; returns (status, comment).
    pub async fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        dataset: &[u8],
    ) -> (u16, Option<String>) {
        let id = self.next_message_id;
        self.next_message_id += 1;
        self.send_command(dimse::store_request(id, sop_class, sop_instance))
            .await;
        self.send_data(dataset, true).await;
        match self.assoc.receive().await.expect("response") {
            Pdu::PData { data } => {
                let (status, responded_to, comment) =
                    dimse::parse_status(&data[0].data).expect("response command set");
                assert_eq!(responded_to, Some(id), "response must echo the MessageID");
                (status, comment)
            }
            other => panic!("expected a C-STORE-RSP, got {other:?}"),
        }
    }

    /// Send a command and part of its data set, then abort the association.
    pub async fn store_then_abort(mut self, sop_class: &str, sop_instance: &str, partial: &[u8]) {
        self.send_command(dimse::store_request(1, sop_class, sop_instance))
            .await;
        self.send_data(partial, false).await;
        let _ = self.assoc.abort().await;
    }

    pub async fn release(self) {
        self.assoc.release().await.expect("release");
    }
}

/// Orthanc with its DICOMweb plugin, as a real STOW-RS server standing in for the
/// hub's DICOMweb endpoint (the hub's own end-to-end tests live in the `tests` crate).
pub struct Orthanc {
    child: tokio::process::Child,
    pub port: u16,
    _dir: TempDir,
}

pub const ORTHANC: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

impl Orthanc {
    /// Start Orthanc on a free port. If it is not installed the test fails, unless
    /// `GATEWAY_TEST_SKIP_ORTHANC=1` says to skip it (then `None`, with a note).
    pub async fn start() -> Option<Orthanc> {
        if !Path::new(ORTHANC).exists() || !Path::new(DICOMWEB_PLUGIN).exists() {
            let skip = std::env::var("GATEWAY_TEST_SKIP_ORTHANC").is_ok_and(|v| v == "1");
            assert!(
                skip,
                "Orthanc with the DICOMweb plugin is needed as the STOW-RS server \
                 (apt-get install orthanc orthanc-dicomweb), or set GATEWAY_TEST_SKIP_ORTHANC=1"
            );
            eprintln!("NOTE: Orthanc not installed; skipped by GATEWAY_TEST_SKIP_ORTHANC=1");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = dead_port();
        let storage = dir.path().join("storage");
        let config = serde_json::json!({
            "Name": "gateway-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": port,
            "DicomServerEnabled": false,
            "DicomPort": dead_port(),
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": true, "Root": "/dicomweb/"}
        });
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, config.to_string()).expect("write config");
        let child = tokio::process::Command::new(ORTHANC)
            .arg(&config_path)
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start Orthanc");
        let orthanc = Orthanc {
            child,
            port,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let url = format!("{}/system", orthanc.url());
        eventually(Duration::from_secs(20), "Orthanc answering", || {
            let client = client.clone();
            let url = url.clone();
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await;
        Some(orthanc)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SOP Instance UIDs Orthanc holds.
    pub async fn instance_uids(&self) -> Vec<String> {
        let client = reqwest::Client::new();
        let ids: Vec<String> = client
            .get(format!("{}/instances", self.url()))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let mut uids = Vec::new();
        for id in ids {
            let tags: serde_json::Value = client
                .get(format!("{}/instances/{id}/simplified-tags", self.url()))
                .send()
                .await
                .expect("tags")
                .json()
                .await
                .expect("json");
            uids.push(
                tags["SOPInstanceUID"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        uids.sort();
        uids
    }

    /// The stored file of an instance, byte for byte as Orthanc keeps it.
    pub async fn file_of(&self, sop_instance_uid: &str) -> Vec<u8> {
        let client = reqwest::Client::new();
        let found: Vec<String> = client
            .post(format!("{}/tools/lookup", self.url()))
            .body(sop_instance_uid.to_string())
            .send()
            .await
            .expect("lookup")
            .json::<Vec<serde_json::Value>>()
            .await
            .expect("json")
            .into_iter()
            .filter_map(|v| v["ID"].as_str().map(str::to_string))
            .collect();
        let id = found.first().expect("instance found in Orthanc");
        client
            .get(format!("{}/instances/{id}/file", self.url()))
            .send()
            .await
            .expect("file")
            .bytes()
            .await
            .expect("bytes")
            .to_vec()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
