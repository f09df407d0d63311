//! ECG files: the watched import folder and `gateway import`, with real files from
//! other sources (the shared SCP-ECG and aECG samples, pydicom's 12-lead DICOM ECG) and
//! a stand-in for the hub's `POST /ingest/ecg` (the real hub side is tested in the
//! `tests` crate) that records what arrives.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use sqlx::Row;
use tokio::process::{Child, Command};

use crate::file_lanes::*;
use crate::helpers::*;

/// The gateway key the stand-in expects.
const ECG_HUB_KEY: &str = "gk_ecg_test";

const SCP: &str = "scptools_ECG_20070321_110542_191010101010.SCP";
const AECG: &str = "cvrg_hl7aecg-Example2.xml";
const AECG_MIN: &str = "fda_minimum_aecg.xml";
/// Not an ECG: the licence text next to the samples.
const NOT_ECG: &str = "farhad-abtahi-SCP-Tools_LICENSE_MIT.txt";

fn ecg_testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/ecg")
        .join(name)
}

/// pydicom's real 12-lead DICOM ECG (`waveform_ecg.dcm`).
fn pydicom_ecg() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "from pydicom.data import get_testdata_file; print(get_testdata_file('waveform_ecg.dcm'))",
            ])
            .output()
            .expect("python3 runs (pip install pydicom)");
        assert!(
            out.status.success(),
            "pydicom's test file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Received {
    priority: String,
    filename: String,
    body: Vec<u8>,
    content_type: String,
}

/// What the stand-in hub saw and will answer.
#[derive(Default)]
struct PeerState {
    /// Every ingest request with a valid key, retries included.
    requests: Mutex<Vec<Received>>,
    /// Distinct files stored, in order.
    stored: Mutex<Vec<Received>>,
    /// Answers to give before behaving normally: (status, body).
    script: Mutex<VecDeque<(u16, String)>>,
    /// Requests answered only after this long (then set back to 0).
    first_delay_ms: AtomicU64,
    next_exam: AtomicI64,
    /// The DICOM lane's STOW-RS, always busy.
    stow: Arc<BusyStow>,
}

impl PeerState {
    fn stored(&self) -> Vec<Received> {
        self.stored.lock().expect("lock").clone()
    }

    fn requests(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    fn stored_named(&self, name: &str) -> Received {
        self.stored()
            .into_iter()
            .find(|r| r.filename == name)
            .unwrap_or_else(|| panic!("{name} not stored at the hub"))
    }
}

type State = web::Data<Arc<PeerState>>;

async fn ingest(
    state: State,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    body: web::Bytes,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if header("authorization") != format!("Bearer {ECG_HUB_KEY}") {
        return HttpResponse::Unauthorized().json(json!({"error": "unknown key"}));
    }
    let received = Received {
        priority: query.get("priority").cloned().unwrap_or_default(),
        filename: query.get("filename").cloned().unwrap_or_default(),
        body: body.to_vec(),
        content_type: header("content-type"),
    };
    state.requests.lock().expect("lock").push(received.clone());
    let delay = state.first_delay_ms.swap(0, Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let scripted = state.script.lock().expect("lock").pop_front();
    if let Some((status, text)) = scripted {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
            .content_type("application/json")
            .body(text);
    }
    let mut stored = state.stored.lock().expect("lock");
    if stored.iter().any(|r| r.body == received.body) {
        return HttpResponse::Ok().json(json!({"status": "duplicate", "exam_id": 1}));
    }
    stored.push(received);
    let exam_id = state.next_exam.fetch_add(1, Ordering::SeqCst) + 100;
    HttpResponse::Ok().json(json!({"status": "stored", "exam_id": exam_id}))
}

/// The hub stand-in: `POST /ingest/ecg` and a busy STOW-RS.
struct EcgHub {
    state: Arc<PeerState>,
    server: StandIn,
}

impl EcgHub {
    async fn start() -> EcgHub {
        Self::start_on(0).await
    }

    async fn start_on(port: u16) -> EcgHub {
        Self::start_with(Arc::new(PeerState::default()), port).await
    }

    async fn start_with(state: Arc<PeerState>, port: u16) -> EcgHub {
        let shared = Arc::clone(&state);
        let server = StandIn::start(port, move |cfg| {
            cfg.app_data(web::Data::new(Arc::clone(&shared)))
                .route("/ingest/ecg", web::post().to(ingest));
            BusyStow::route(&shared.stow, cfg);
        });
        EcgHub { state, server }
    }

    fn url(&self) -> String {
        self.server.url()
    }
}

async fn start_gateway(hub_url: String, adjust: impl FnOnce(&mut gateway::Config)) -> TestApp {
    start_gateway_for(hub_url, ECG_HUB_KEY, adjust).await
}

fn import_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("ecg-import")
}

/// `gateway import --data-dir D [--stat] FILE...`: (exit code, stdout lines).
async fn import_cmd(data_dir: &Path, stat: bool, files: &[PathBuf]) -> (i32, Vec<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.arg("import").arg("--data-dir").arg(data_dir);
    if stat {
        cmd.arg("--stat");
    }
    cmd.args(files).stdin(Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("gateway import finished in time")
        .expect("gateway import runs");
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    (
        out.status.code().unwrap_or(-1),
        stdout.lines().map(str::to_string).collect(),
    )
}

/// Files waiting in the import folder and its `stat/` subfolder (with `hidden`, also
/// the markers and temporary files whose names start with `.`).
fn folder_files(data_dir: &Path, hidden: bool) -> Vec<String> {
    let dir = import_dir(data_dir);
    let mut names = Vec::new();
    for (sub, prefix) in [(dir.clone(), ""), (dir.join("stat"), "stat/")] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for e in entries {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().expect("type").is_file() && (hidden || !name.starts_with('.')) {
                names.push(format!("{prefix}{}", e.file_name().to_string_lossy()));
            }
        }
    }
    names.sort();
    names
}

fn waiting_in_folder(data_dir: &Path) -> Vec<String> {
    folder_files(data_dir, false)
}

/// ECG rows: (file_name, state, stat, attempts, last_error, exam_id).
type EcgRow = (String, String, i64, i64, Option<String>, Option<i64>);

async fn ecg_rows(app: &TestApp) -> Vec<EcgRow> {
    sqlx::query(
        "SELECT file_name, state, stat, attempts, last_error, exam_id FROM ecg_files ORDER BY id",
    )
    .fetch_all(app.gateway().outbox().pool())
    .await
    .expect("ecg rows")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect()
}

/// ECG quarantine rows: (source, file_name, reason, path).
async fn ecg_quarantine(app: &TestApp) -> Vec<(String, Option<String>, String, Option<String>)> {
    quarantine_of(app, "ecg", "file_name").await
}

async fn stored_count(state: &Arc<PeerState>, n: usize, what: &str) {
    let state = Arc::clone(state);
    count_reaches(Duration::from_secs(30), what, n, move || {
        state.stored().len()
    })
    .await;
}

async fn rows_in_state(app: &TestApp, n: usize, state: &str) {
    let what = format!("{n} ECG rows {state}");
    eventually(Duration::from_secs(30), &what, || async {
        let rows = ecg_rows(app).await;
        rows.len() >= n && rows.iter().filter(|r| r.1 == state).count() >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_imported_by_the_command_while_running_arrive_byte_identical() {
    let hub = EcgHub::start().await;
    let app = start_gateway(hub.url(), |_| {}).await;
    let data_dir = app.data_dir();
    assert_eq!(
        app.gateway().ecg_import_dir(),
        Some(
            std::fs::canonicalize(import_dir(&data_dir))
                .expect("folder")
                .as_path()
        )
    );

    let routine = [
        ecg_testdata(SCP),
        ecg_testdata(AECG),
        ecg_testdata(AECG_MIN),
    ];
    let (code, lines) = import_cmd(&data_dir, false, &routine).await;
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines,
        vec![
            format!(
                "imported {}: SCP-ECG, 12 leads, 10.0 s, patient 191010101010",
                routine[0].display()
            ),
            format!(
                "imported {}: aECG, 12 leads, 10.0 s, patient 106_ABC",
                routine[1].display()
            ),
            format!(
                "imported {}: aECG, 1 leads, 0.0 s, patient SBJ-123",
                routine[2].display()
            ),
        ]
    );
    let dcm = pydicom_ecg();
    let (code, lines) = import_cmd(&data_dir, true, std::slice::from_ref(&dcm)).await;
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines,
        vec![format!(
            "imported {}: DICOM ECG, 12 leads, 10.0 s, patient 642341",
            dcm.display()
        )]
    );

    stored_count(&hub.state, 4, "four files at the hub").await;
    for (path, priority) in [
        (&routine[0], "routine"),
        (&routine[1], "routine"),
        (&routine[2], "routine"),
        (&dcm, "stat"),
    ] {
        let name = path.file_name().expect("name").to_string_lossy();
        let got = hub.state.stored_named(&name);
        assert!(
            got.body == read(path),
            "{name}: bytes differ from the original"
        );
        assert_eq!(got.priority, priority, "{name}");
        assert_eq!(got.content_type, "application/octet-stream");
    }
    rows_in_state(&app, 4, "delivered").await;
    let rows = ecg_rows(&app).await;
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter().all(|r| r.5.is_some_and(|id| id >= 100)),
        "{rows:?}"
    );
    assert_eq!(rows.iter().filter(|r| r.2 == 1).count(), 1, "{rows:?}");
    eventually(Duration::from_secs(10), "folder emptied", || async {
        folder_files(&data_dir, true).is_empty()
    })
    .await;

    // The same bytes again: taken from the folder, stored once, not sent again.
    let (code, _) = import_cmd(&data_dir, false, &routine[..1]).await;
    assert_eq!(code, 0);
    eventually(Duration::from_secs(10), "taken again", || async {
        folder_files(&data_dir, true).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ecg_rows(&app).await.len(), 4, "stored once");
    assert_eq!(hub.state.requests(), 4, "not sent again");

    let status = app.status_cli(false).await;
    assert_status_shows(
        &status,
        &[
            "ECG files: import folder /",
            "(0 not yet taken)",
            "imported: 4; waiting: 0 (of which 0 STAT); delivered: 4",
            "quarantined: 0 refused on import, 0 rejected by hub",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&app.status_cli(true).await).expect("json");
    assert_eq!(json["ecg"]["delivered"], 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_dropped_into_the_folder_are_taken_and_garbage_is_quarantined() {
    let hub = EcgHub::start().await;
    let app = start_gateway(hub.url(), |_| {}).await;
    let data_dir = app.data_dir();
    let dir = import_dir(&data_dir);

    // As a cart or a technician's file manager does it: plain copies, no renaming.
    let scp_name = "心电图 1.stat.scp";
    std::fs::copy(ecg_testdata(SCP), dir.join(scp_name)).expect("copy");
    std::fs::copy(ecg_testdata(AECG), dir.join("stat").join(AECG)).expect("copy");
    std::fs::copy(pydicom_ecg(), dir.join("ward3.dcm")).expect("copy");
    let garbage = read(&ecg_testdata(NOT_ECG));
    std::fs::write(dir.join("garbage.scp"), &garbage).expect("write");

    stored_count(&hub.state, 3, "three files at the hub").await;
    let got = hub.state.stored_named(scp_name);
    assert_eq!(got.priority, "stat", "`.stat` before the extension");
    assert!(got.body == read(&ecg_testdata(SCP)), "bytes as dropped");
    let got = hub.state.stored_named(AECG);
    assert_eq!(got.priority, "stat", "the stat/ subfolder");
    assert!(got.body == read(&ecg_testdata(AECG)));
    let got = hub.state.stored_named("ward3.dcm");
    assert_eq!(got.priority, "routine");
    assert!(got.body == read(&pydicom_ecg()));

    let app_ref = &app;
    eventually(
        Duration::from_secs(20),
        "the garbage file quarantined",
        || async move { !ecg_quarantine(app_ref).await.is_empty() },
    )
    .await;
    let q = ecg_quarantine(&app).await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].0, "receive");
    assert_eq!(q[0].1.as_deref(), Some("garbage.scp"));
    assert!(
        q[0].2
            .starts_with("not an ECG file we can read: 1069 bytes"),
        "{q:?}"
    );
    assert_eq!(
        read(&app.file(q[0].3.as_deref().expect("file kept"))),
        garbage,
        "kept unchanged"
    );
    assert!(waiting_in_folder(&data_dir).is_empty());
    assert_eq!(hub.state.requests(), 3, "nothing unreadable sent");

    // The command refuses the same garbage and does not copy it; a good file beside it
    // still goes in.
    let (code, lines) = import_cmd(
        &data_dir,
        false,
        &[ecg_testdata(NOT_ECG), ecg_testdata(AECG_MIN)],
    )
    .await;
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "rejected {}: not an ECG file we can read: 1069 bytes, neither a DICOM preamble, XML nor an SCP-ECG record",
            ecg_testdata(NOT_ECG).display()
        )),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("imported "), "{lines:?}");
    assert!(
        !waiting_in_folder(&data_dir).contains(&NOT_ECG.to_string()),
        "a rejected file is not copied"
    );
    stored_count(&hub.state, 4, "the good file at the hub").await;
    assert!(hub.state.stored_named(AECG_MIN).body == read(&ecg_testdata(AECG_MIN)));

    let status = app.status_cli(false).await;
    assert!(
        status.contains("quarantined: 1 refused on import, 0 rejected by hub"),
        "{status}"
    );
    assert!(
        status.contains("[receive] garbage.scp: not an ECG file we can read"),
        "{status}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_verdicts_retry_quarantine_and_stat_goes_first() {
    // The hub is down when the files arrive.
    let hub_port = dead_port();
    let app = start_gateway(format!("http://127.0.0.1:{hub_port}"), |_| {}).await;
    let data_dir = app.data_dir();
    let (code, _) = import_cmd(&data_dir, false, &[ecg_testdata(SCP)]).await;
    assert_eq!(code, 0);
    let app_ref = &app;
    eventually(
        Duration::from_secs(20),
        "a failed attempt recorded",
        || async move {
            ecg_rows(app_ref)
                .await
                .first()
                .is_some_and(|r| r.3 >= 1 && r.4.is_some())
        },
    )
    .await;
    let rows = ecg_rows(&app).await;
    assert_eq!(rows[0].1, "pending");
    assert!(
        rows[0]
            .4
            .as_deref()
            .is_some_and(|e| e.contains("cannot reach the hub")),
        "{rows:?}"
    );
    let status = app.status_cli(false).await;
    assert!(
        status.contains("imported: 1; waiting: 1 (of which 0 STAT); delivered: 0"),
        "{status}"
    );
    assert!(
        status.contains(&format!("{SCP}: cannot reach the hub")),
        "{status}"
    );

    // The hub comes up, refusing the key once and failing once: retried, delivered.
    let state = Arc::new(PeerState::default());
    state.script.lock().expect("lock").extend([
        (401, r#"{"error":"key revoked"}"#.to_string()),
        (503, "starting".to_string()),
    ]);
    let mut hub = EcgHub::start_with(state, hub_port).await;
    stored_count(&hub.state, 1, "delivered after retries").await;
    assert!(hub.state.stored()[0].body == read(&ecg_testdata(SCP)));
    rows_in_state(&app, 1, "delivered").await;

    // The hub cannot use the next one: quarantined with its text, bytes kept.
    hub.state
        .script
        .lock()
        .expect("lock")
        .push_back((400, r#"{"error":"no rhythm data in the file"}"#.into()));
    let (code, _) = import_cmd(&data_dir, false, &[ecg_testdata(AECG_MIN)]).await;
    assert_eq!(code, 0);
    eventually(
        Duration::from_secs(20),
        "rejected by the hub",
        || async move { ecg_rows(app_ref).await.iter().any(|r| r.1 == "rejected") },
    )
    .await;
    let q = ecg_quarantine(&app).await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].0, "hub");
    assert_eq!(q[0].1.as_deref(), Some(AECG_MIN));
    assert_eq!(
        q[0].2,
        "hub refused the file (HTTP 400): no rhythm data in the file"
    );
    assert_eq!(
        read(&app.file(q[0].3.as_deref().expect("file"))),
        read(&ecg_testdata(AECG_MIN))
    );
    let status = app.status_cli(false).await;
    assert!(
        status.contains("quarantined: 0 refused on import, 1 rejected by hub"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "[hub] {AECG_MIN}: hub refused the file (HTTP 400): no rhythm data in the file"
        )),
        "{status}"
    );

    // STAT first: while a routine file is at the hub, a routine and then a STAT file
    // arrive; the STAT one goes next.
    let before = hub.state.requests();
    hub.state.first_delay_ms.store(4_000, Ordering::SeqCst);
    let (code, _) = import_cmd(&data_dir, false, &[pydicom_ecg()]).await;
    assert_eq!(code, 0);
    let state = Arc::clone(&hub.state);
    eventually(
        Duration::from_secs(20),
        "first request in flight",
        move || {
            let state = Arc::clone(&state);
            async move { state.requests() > before }
        },
    )
    .await;
    let (code, _) = import_cmd(&data_dir, false, &[ecg_testdata(AECG)]).await;
    assert_eq!(code, 0);
    let stat_copy = tempfile::tempdir().expect("tempdir");
    let stat_file = stat_copy.path().join("chest-pain.scp");
    // Different bytes from the SCP already delivered: another recording.
    let mut bytes = read(&ecg_testdata(AECG_MIN));
    bytes.extend_from_slice(b"\n");
    std::fs::write(&stat_file, &bytes).expect("write");
    let (code, _) = import_cmd(&data_dir, true, &[stat_file]).await;
    assert_eq!(code, 0);
    stored_count(&hub.state, 4, "all at the hub").await;
    let order: Vec<(String, String)> = hub.state.requests.lock().expect("lock")[before..]
        .iter()
        .map(|r| (r.filename.clone(), r.priority.clone()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("waveform_ecg.dcm".to_string(), "routine".to_string()),
            ("chest-pain.scp".to_string(), "stat".to_string()),
            (AECG.to_string(), "routine".to_string()),
        ]
    );
    app.stop().await;
    hub.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_not_taken_early() {
    let hub = EcgHub::start().await;
    let app = start_gateway(hub.url(), |_| {}).await;
    let data_dir = app.data_dir();
    let path = import_dir(&data_dir).join("slow.xml");
    // The aECG in pieces, then blank lines one by one: the file is valid XML for the
    // last two seconds of writing, so a file taken early would reach the hub shorter
    // than the cart wrote it (or, taken earlier still, end up in quarantine).
    let xml = read(&ecg_testdata(AECG_MIN));
    let blank_lines = 8;
    let mut expected = xml.clone();
    expected.extend(std::iter::repeat_n(b'\n', blank_lines));
    let mut file = std::fs::File::create(&path).expect("create");
    let pieces = xml
        .chunks(300)
        .chain(std::iter::repeat_n(&b"\n"[..], blank_lines));
    for piece in pieces {
        use std::io::Write;
        file.write_all(piece).expect("write");
        file.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(ecg_rows(&app).await.is_empty(), "taken while being written");
        assert!(ecg_quarantine(&app).await.is_empty());
    }
    drop(file);
    stored_count(&hub.state, 1, "the finished file at the hub").await;
    assert!(
        hub.state.stored()[0].body == expected,
        "the whole file, as finally written"
    );
    assert!(ecg_quarantine(&app).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hub.state.requests(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecg_files_do_not_wait_behind_dicom_uploads() {
    let hub = EcgHub::start().await;
    // Every STOW-RS request hangs for a while (then fails): the DICOM lane is busy.
    hub.state.stow.delay_ms.store(8_000, Ordering::SeqCst);
    let app = start_gateway(hub.url(), |c| c.forward_concurrency = 1).await;
    let run = app.storescu(&[], &[testdata("single/CT_small.dcm")]).await;
    assert_eq!(run.stored(), 1, "{}", run.output);
    let state = Arc::clone(&hub.state);
    eventually(
        Duration::from_secs(10),
        "a STOW-RS request in flight",
        move || {
            let state = Arc::clone(&state);
            async move { state.stow.started.load(Ordering::SeqCst) >= 1 }
        },
    )
    .await;
    let (code, _) = import_cmd(&app.data_dir(), false, &[ecg_testdata(SCP)]).await;
    assert_eq!(code, 0);
    stored_count(&hub.state, 1, "the ECG file at the hub").await;
    assert_eq!(
        hub.state.stow.finished.load(Ordering::SeqCst),
        0,
        "delivered while the DICOM upload was still under way"
    );
    app.stop().await;
}

/// `gateway run` as a process (no report page, no HL7 listener).
async fn spawn_gateway(data_dir: &Path, hub_url: &str) -> Child {
    spawn_gateway_run(data_dir, hub_url, ECG_HUB_KEY, "")
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_import_then_restart_still_delivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("gw");
    let hub_port = dead_port();
    let hub_url = format!("http://127.0.0.1:{hub_port}");
    let mut child = spawn_gateway(&data_dir, &hub_url).await;
    let (code, _) = import_cmd(&data_dir, true, &[ecg_testdata(SCP)]).await;
    assert_eq!(code, 0);
    // Taken: committed to the outbox, then removed from the folder.
    eventually(Duration::from_secs(20), "taken from the folder", || async {
        waiting_in_folder(&data_dir).is_empty()
    })
    .await;
    kill_hard(&mut child).await;

    // While the gateway is down, the command still works: the file waits in the folder.
    let (code, lines) = import_cmd(&data_dir, false, &[ecg_testdata(AECG)]).await;
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(waiting_in_folder(&data_dir), vec![AECG.to_string()]);

    let mut hub = EcgHub::start_on(hub_port).await;
    let mut child = spawn_gateway(&data_dir, &hub_url).await;
    stored_count(&hub.state, 2, "both delivered after the restart").await;
    let got = hub.state.stored_named(SCP);
    assert_eq!(got.priority, "stat");
    assert!(got.body == read(&ecg_testdata(SCP)));
    assert!(hub.state.stored_named(AECG).body == read(&ecg_testdata(AECG)));
    terminate(&mut child).await;
    hub.server.stop().await;
}
