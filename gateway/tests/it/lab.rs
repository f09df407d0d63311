//! Laboratory results over MLLP (docs/lab.md): the `hl7` Python package's `mllp_send`
//! plays the laboratory system, sending the shared sample messages; a stand-in for the
//! hub's `POST /ingest/hl7` (the real hub side is tested in the `tests` crate) records
//! what arrives.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::file_lanes::*;
use crate::helpers::*;

/// The gateway key the stand-in expects.
const LAB_HUB_KEY: &str = "gk_lab_test";
const MLLP_SEND: &str = "mllp_send";

const GLUCOSE: &str = "ORU_R01_GHH_LAB_glucose.hl7";
const GENERIC: &str = "sample_oru_r01_generic.hl7";
const LAB: &str = "sample_oru_r01_lab.hl7";
const ADT: &str = "sample_adt_a01.hl7";

fn hl7_testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/hl7")
        .join(name)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What `mllp_send --loose` puts on the wire for a file of one message: line ends
/// turned into CR, trailing CR/LF/space stripped.
fn loose(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec())
        .expect("ascii sample")
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    text.trim_end_matches(['\r', '\n', ' ']).as_bytes().to_vec()
}

/// A file holding each message in an MLLP frame (what `mllp_send` without `--loose`
/// reads): the bytes go on the wire exactly, LF separators included.
fn framed_file(dir: &Path, name: &str, messages: &[&[u8]]) -> PathBuf {
    let mut bytes = Vec::new();
    for m in messages {
        bytes.push(0x0B);
        bytes.extend_from_slice(m);
        bytes.extend_from_slice(b"\x1c\r");
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write framed file");
    path
}

/// What the stand-in hub saw and will answer.
#[derive(Default)]
struct PeerState {
    /// Every ingest request's body, retries included.
    requests: Mutex<Vec<Vec<u8>>>,
    /// Distinct bodies stored.
    stored: Mutex<Vec<Vec<u8>>>,
    /// (Authorization, Content-Type) of every ingest request.
    headers: Mutex<Vec<(String, String)>>,
    /// Answers to give before behaving normally: (status, body).
    script: Mutex<VecDeque<(u16, String)>>,
    /// The DICOM lane's STOW-RS, always busy.
    stow: Arc<BusyStow>,
}

impl PeerState {
    fn stored(&self) -> Vec<Vec<u8>> {
        self.stored.lock().expect("lock").clone()
    }

    fn requests(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }
}

type State = web::Data<Arc<PeerState>>;

async fn ingest(state: State, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let auth = header("authorization");
    state
        .headers
        .lock()
        .expect("lock")
        .push((auth.clone(), header("content-type")));
    if auth != format!("Bearer {LAB_HUB_KEY}") {
        return HttpResponse::Unauthorized().json(json!({"error": "unknown key"}));
    }
    state.requests.lock().expect("lock").push(body.to_vec());
    if let Some((status, text)) = state.script.lock().expect("lock").pop_front() {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
            .content_type("application/json")
            .body(text);
    }
    let mut stored = state.stored.lock().expect("lock");
    if stored.iter().any(|b| b[..] == body[..]) {
        return HttpResponse::Ok().json(json!({"status": "duplicate", "orders": []}));
    }
    stored.push(body.to_vec());
    HttpResponse::Ok().json(json!({"status": "stored", "orders": []}))
}

/// The hub stand-in: `POST /ingest/hl7` and a busy STOW-RS.
struct LabHub {
    state: Arc<PeerState>,
    server: StandIn,
}

impl LabHub {
    async fn start() -> LabHub {
        Self::start_with(Arc::new(PeerState::default()), 0).await
    }

    async fn start_with(state: Arc<PeerState>, port: u16) -> LabHub {
        let shared = Arc::clone(&state);
        let server = StandIn::start(port, move |cfg| {
            cfg.app_data(web::Data::new(Arc::clone(&shared)))
                .route("/ingest/hl7", web::post().to(ingest));
            BusyStow::route(&shared.stow, cfg);
        });
        LabHub { state, server }
    }
}

async fn start_gateway(hub: &LabHub, adjust: impl FnOnce(&mut gateway::Config)) -> TestApp {
    start_gateway_for(hub.server.url(), LAB_HUB_KEY, adjust).await
}

fn hl7_port(app: &TestApp) -> u16 {
    app.gateway().hl7_addr().expect("HL7 listener").port()
}

/// One acknowledgement as `mllp_send` printed it.
#[derive(Debug, Clone)]
struct Ack {
    code: String,
    control_id: String,
    text: String,
    err_code: Option<String>,
    /// MSH-5 of the ACK (the sender of the original message).
    receiving_application: String,
}

/// Read the ACKs in `mllp_send`'s output (it prints each answer's raw bytes).
fn parse_acks(out: &[u8]) -> Vec<Ack> {
    out.split(|&b| b == 0x1C)
        .filter_map(|chunk| formats::hl7::parse(chunk).ok())
        .map(|m| {
            let msa = m.segment("MSA").expect("MSA in ACK");
            Ack {
                code: msa.text(1).unwrap_or_default(),
                control_id: msa.text(2).unwrap_or_default(),
                text: msa.text(3).unwrap_or_default(),
                err_code: m.segment("ERR").and_then(|e| e.component(3, 1)),
                receiving_application: m.msh().receiving_application.clone(),
            }
        })
        .collect()
}

/// Run `mllp_send` (PyPI `hl7`) with `file` against the gateway; the ACKs it printed.
async fn mllp_send(port: u16, file: &Path, loose: bool) -> Vec<Ack> {
    let mut cmd = Command::new(MLLP_SEND);
    cmd.arg("--file")
        .arg(file)
        .arg("--port")
        .arg(port.to_string());
    if loose {
        cmd.arg("--loose");
    }
    cmd.arg("127.0.0.1").stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("mllp_send finished in time")
        .unwrap_or_else(|e| {
            panic!("{MLLP_SEND} runs ({e}): it comes with the PyPI package hl7 (pip install hl7)")
        });
    // It exits 0 whatever the ACK says: the output is what counts.
    assert!(
        out.status.success(),
        "mllp_send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_acks(&out.stdout)
}

async fn lab_rows(app: &TestApp) -> Vec<(String, String, i64)> {
    sqlx::query("SELECT control_id, state, attempts FROM lab_messages ORDER BY id")
        .fetch_all(app.gateway().outbox().pool())
        .await
        .expect("lab rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// HL7 quarantine rows: (source, control id, reason, path).
async fn lab_quarantine(app: &TestApp) -> Vec<(String, Option<String>, String, Option<String>)> {
    quarantine_of(app, "hl7", "control_id").await
}

async fn stored_count(state: &Arc<PeerState>, n: usize, what: &str) {
    let state = Arc::clone(state);
    count_reaches(Duration::from_secs(20), what, n, move || {
        state.stored().len()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oru_samples_are_acknowledged_stored_and_delivered_exactly_once() {
    let hub = LabHub::start().await;
    let app = start_gateway(&hub, |_| {}).await;
    let port = hl7_port(&app);
    let dir = tempfile::tempdir().expect("tempdir");

    // CR separators, sent as they are.
    let acks = mllp_send(port, &hl7_testdata(GLUCOSE), true).await;
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(
        (acks[0].code.as_str(), acks[0].control_id.as_str()),
        ("AA", "CNTRL-3456")
    );
    assert_eq!(
        acks[0].receiving_application, "GHH LAB",
        "sender and receiver swapped"
    );
    assert_eq!(acks[0].err_code, None);
    // LF separators on the wire, exactly as in the file.
    let generic = read(&hl7_testdata(GENERIC));
    let lf_file = framed_file(dir.path(), "generic.mllp", &[&generic]);
    let acks = mllp_send(port, &lf_file, false).await;
    assert_eq!(
        (acks[0].code.as_str(), acks[0].control_id.as_str()),
        ("AA", "59689")
    );
    // LF file converted by --loose.
    let acks = mllp_send(port, &hl7_testdata(LAB), true).await;
    assert_eq!(
        (acks[0].code.as_str(), acks[0].control_id.as_str()),
        ("AA", "3216598")
    );

    stored_count(&hub.state, 3, "three messages at the hub").await;
    let expected = vec![
        loose(&read(&hl7_testdata(GLUCOSE))),
        generic.clone(),
        loose(&read(&hl7_testdata(LAB))),
    ];
    assert_eq!(
        hub.state.stored(),
        expected,
        "bytes exactly as received, in order"
    );
    for (auth, content_type) in hub.state.headers.lock().expect("lock").iter() {
        assert_eq!(auth, &format!("Bearer {LAB_HUB_KEY}"));
        assert_eq!(content_type, "x-application/hl7-v2+er7");
    }
    let app_ref = &app;
    eventually(Duration::from_secs(10), "all delivered", || async move {
        lab_rows(app_ref)
            .await
            .iter()
            .all(|(_, s, _)| s == "delivered")
    })
    .await;

    // Identical re-send: AA again, stored once, not forwarded again.
    let acks = mllp_send(port, &hl7_testdata(GLUCOSE), true).await;
    assert_eq!(
        (acks[0].code.as_str(), acks[0].control_id.as_str()),
        ("AA", "CNTRL-3456")
    );
    let acks = mllp_send(port, &lf_file, false).await;
    assert_eq!(acks[0].code, "AA");
    // The same message framed by another client: CR separators, no trailing CR. Its
    // content is the same, so it is the same message, not a reused control id.
    let reframed = framed_file(dir.path(), "reframed.mllp", &[&loose(&generic)]);
    let acks = mllp_send(port, &reframed, false).await;
    assert_eq!(
        (acks[0].code.as_str(), acks[0].err_code.as_deref()),
        ("AA", None),
        "{acks:?}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hub.state.requests(), 3, "no second delivery");
    assert_eq!(lab_rows(&app).await.len(), 3);
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM lab_messages")
        .fetch_all(app.gateway().outbox().pool())
        .await
        .expect("bodies");
    assert!(
        bodies.iter().all(Vec::is_empty),
        "delivered bytes are not kept twice"
    );

    let status = app.status_cli(false).await;
    assert_status_shows(
        &status,
        &[
            "lab results (HL7): listener 127.0.0.1:",
            "received: 3; waiting: 0 (of which 0 urgent); delivered: 3",
            "quarantined: 0 refused on receipt, 0 rejected by hub",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&app.status_cli(true).await).expect("json");
    assert_eq!(json["lab"]["delivered"], 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_malformed_and_reused_messages_are_refused_and_quarantined() {
    let hub = LabHub::start().await;
    let app = start_gateway(&hub, |_| {}).await;
    let port = hl7_port(&app);
    let dir = tempfile::tempdir().expect("tempdir");

    // ADT^A01: a well-formed message of a type we do not take.
    let acks = mllp_send(port, &hl7_testdata(ADT), true).await;
    assert_eq!(acks[0].code, "AR", "{acks:?}");
    assert_eq!(acks[0].control_id, "599102");
    assert_eq!(acks[0].err_code.as_deref(), Some("200"));
    assert!(
        acks[0].text.contains("unsupported message type ADT^A01"),
        "{acks:?}"
    );

    // Garbage in a frame, then a good message on the same connection.
    let glucose = loose(&read(&hl7_testdata(GLUCOSE)));
    let file = framed_file(
        dir.path(),
        "garbage.mllp",
        &[b"this is not HL7 at all", &glucose],
    );
    let acks = mllp_send(port, &file, false).await;
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_eq!(acks[0].code, "AE");
    assert_eq!(acks[0].control_id, "", "nothing to echo");
    assert_eq!(acks[0].err_code.as_deref(), Some("100"));
    assert!(acks[0].text.contains("must start with MSH"), "{acks:?}");
    assert_eq!(
        (acks[1].code.as_str(), acks[1].control_id.as_str()),
        ("AA", "CNTRL-3456")
    );

    // A known MSH-10 with other content.
    let changed = String::from_utf8(glucose.clone())
        .expect("ascii")
        .replace("^182|", "^183|");
    let file = framed_file(dir.path(), "reused.mllp", &[changed.as_bytes()]);
    let acks = mllp_send(port, &file, false).await;
    assert_eq!(acks[0].code, "AE", "{acks:?}");
    assert_eq!(acks[0].control_id, "CNTRL-3456");
    assert_eq!(acks[0].err_code.as_deref(), Some("205"));
    assert!(
        acks[0]
            .text
            .contains("control id reused with different content"),
        "{acks:?}"
    );
    // The same refused message again: answered the same, quarantined once.
    let acks = mllp_send(port, &file, false).await;
    assert_eq!(acks[0].code, "AE");

    // A malformed ORU: OBX without a value type.
    let broken = b"MSH|^~\\&|LIS|LAB|GW|TS|20240101||ORU^R01|BROKEN-1|P|2.5.1\rPID|||1\rOBR|1|||GLU\rOBX|1||GLU||5.5\r";
    let file = framed_file(dir.path(), "broken.mllp", &[broken]);
    let acks = mllp_send(port, &file, false).await;
    assert_eq!(acks[0].code, "AE");
    assert_eq!(acks[0].control_id, "BROKEN-1");
    assert_eq!(acks[0].err_code.as_deref(), Some("101"));
    assert_eq!(acks[0].text, "OBX-2 (value type) is missing in OBX 1");

    stored_count(&hub.state, 1, "the good message at the hub").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hub.state.stored(),
        vec![glucose.clone()],
        "only the good message"
    );
    assert_eq!(lab_rows(&app).await.len(), 1);

    let q = lab_quarantine(&app).await;
    assert_eq!(q.len(), 4, "{q:?}");
    assert!(q.iter().all(|(source, ..)| source == "receive"));
    assert_eq!(q[0].1.as_deref(), Some("599102"));
    assert!(
        q[0].2
            .starts_with("unsupported HL7 message: unsupported message type ADT^A01"),
        "{q:?}"
    );
    assert_eq!(q[1].1, None);
    assert!(
        q[1].2
            .starts_with("malformed HL7 message: not an HL7 v2 message"),
        "{q:?}"
    );
    assert!(
        q[2].2.contains("control id reused with different content"),
        "{q:?}"
    );
    assert!(
        q[3].2.contains("OBX-2 (value type) is missing in OBX 1"),
        "{q:?}"
    );
    // The files hold the bytes exactly.
    let kept = |i: usize| read(&app.file(q[i].3.as_deref().expect("file kept")));
    assert_eq!(kept(1), b"this is not HL7 at all");
    assert_eq!(kept(2), changed.as_bytes());
    // mllp_send strips CR (and the block characters) from both ends of each frame.
    assert_eq!(kept(3), broken.strip_suffix(b"\r").expect("ends with CR"));

    let status = app.status_cli(false).await;
    assert!(
        status.contains("quarantined: 4 refused on receipt, 0 rejected by hub"),
        "{status}"
    );
    assert!(
        status.contains("[receive] MSH-10 599102 from 127.0.0.1:"),
        "{status}"
    );
    assert!(
        status.contains("control id reused with different content"),
        "{status}"
    );
    app.stop().await;
}

/// Send raw bytes on one connection and read one framed answer.
async fn raw_exchange(port: u16, bytes: &[u8]) -> (Vec<u8>, tokio::net::TcpStream) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.contains(&0x1C) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    (answer, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_message_is_refused_and_the_connection_closed() {
    let hub = LabHub::start().await;
    let app = start_gateway(&hub, |c| c.hl7_max_message_bytes = 2048).await;
    let port = hl7_port(&app);
    let lab = loose(&read(&hl7_testdata(LAB)));
    assert!(lab.len() > 2048);
    // Noise before the frame is skipped; the frame has no end yet: refused at the limit.
    let mut bytes = b"\r\n\r\n".to_vec();
    bytes.push(0x0B);
    bytes.extend_from_slice(&lab);
    let (answer, mut stream) = raw_exchange(port, &bytes).await;
    let acks = parse_acks(&answer);
    assert_eq!(acks[0].code, "AE", "{acks:?}");
    assert_eq!(acks[0].control_id, "3216598", "MSH-10 read from the start");
    assert!(
        acks[0]
            .text
            .contains("larger than hl7_max_message_bytes (2048 bytes)"),
        "{acks:?}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(n, 0, "the connection is closed");
    let q = lab_quarantine(&app).await;
    assert_eq!(q.len(), 1);
    assert!(q[0].2.contains("larger than"), "{q:?}");
    // A small message on a new connection is fine.
    let glucose = loose(&read(&hl7_testdata(GLUCOSE)));
    let mut framed = vec![0x0B];
    framed.extend_from_slice(&glucose);
    framed.extend_from_slice(b"\x1c\r");
    let (answer, _) = raw_exchange(port, &framed).await;
    assert_eq!(parse_acks(&answer)[0].code, "AA");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_verdicts_retry_quarantine_and_requeue() {
    let hub = LabHub::start().await;
    // A refused key, then a hub error: retried; then stored.
    hub.state.script.lock().expect("lock").extend([
        (401, r#"{"error":"key revoked"}"#.to_string()),
        (503, "starting".to_string()),
    ]);
    let app = start_gateway(&hub, |_| {}).await;
    let port = hl7_port(&app);
    let acks = mllp_send(port, &hl7_testdata(GLUCOSE), true).await;
    assert_eq!(acks[0].code, "AA");
    stored_count(&hub.state, 1, "delivered after retries").await;
    assert_eq!(hub.state.requests(), 3);
    let app_ref = &app;
    eventually(
        Duration::from_secs(10),
        "recorded as delivered",
        || async move { lab_rows(app_ref).await[0].1 == "delivered" },
    )
    .await;
    assert_eq!(lab_rows(&app).await[0].2, 2, "two failed attempts");

    // The hub cannot use the next one: quarantined with its reason.
    hub.state
        .script
        .lock()
        .expect("lock")
        .push_back((400, r#"{"error":"unknown test code cbc"}"#.into()));
    let acks = mllp_send(port, &hl7_testdata(GENERIC), true).await;
    assert_eq!(acks[0].code, "AA", "accepted here; the hub decides later");
    eventually(
        Duration::from_secs(10),
        "rejected by the hub",
        || async move { lab_rows(app_ref).await[1].1 == "rejected" },
    )
    .await;
    let q = lab_quarantine(&app).await;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, "hub");
    assert_eq!(q[0].1.as_deref(), Some("59689"));
    assert_eq!(
        q[0].2,
        "hub refused the message (HTTP 400): unknown test code cbc"
    );
    let generic = loose(&read(&hl7_testdata(GENERIC)));
    assert_eq!(read(&app.file(q[0].3.as_deref().expect("file"))), generic);
    let status = app.status_cli(false).await;
    assert!(
        status.contains("quarantined: 0 refused on receipt, 1 rejected by hub"),
        "{status}"
    );
    assert!(status.contains("unknown test code cbc"), "{status}");

    // Fixed at the hub; the laboratory sends the same message again: it goes again.
    let acks = mllp_send(port, &hl7_testdata(GENERIC), true).await;
    assert_eq!(acks[0].code, "AA");
    stored_count(&hub.state, 2, "the re-sent message stored").await;
    assert_eq!(hub.state.stored()[1], generic);
    eventually(Duration::from_secs(10), "delivered", || async move {
        lab_rows(app_ref).await[1].1 == "delivered"
    })
    .await;
    assert_eq!(lab_rows(&app).await.len(), 2, "one row per MSH-10");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_connections_at_once_each_with_several_messages() {
    let hub = LabHub::start().await;
    let app = start_gateway(&hub, |_| {}).await;
    let port = hl7_port(&app);
    let dir = tempfile::tempdir().expect("tempdir");
    let generic = String::from_utf8(read(&hl7_testdata(GENERIC))).expect("ascii");
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for conn in 0..6 {
        let messages: Vec<String> = (0..3)
            .map(|i| generic.replace("|59689|", &format!("|C{conn}-{i}|")))
            .collect();
        expected.extend(messages.iter().map(|m| m.as_bytes().to_vec()));
        let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_bytes()).collect();
        files.push(framed_file(dir.path(), &format!("conn{conn}.mllp"), &refs));
    }
    let runs = files.iter().map(|f| mllp_send(port, f, false));
    let results = futures_util::future::join_all(runs).await;
    for (conn, acks) in results.iter().enumerate() {
        let got: Vec<(&str, &str)> = acks
            .iter()
            .map(|a| (a.code.as_str(), a.control_id.as_str()))
            .collect();
        let want: Vec<String> = (0..3).map(|i| format!("C{conn}-{i}")).collect();
        assert_eq!(
            got,
            want.iter().map(|c| ("AA", c.as_str())).collect::<Vec<_>>(),
            "connection {conn}"
        );
    }
    stored_count(&hub.state, 18, "all 18 messages at the hub").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stored = hub.state.stored();
    assert_eq!(hub.state.requests(), 18, "each sent once");
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_messages_do_not_wait_behind_dicom_uploads() {
    let hub = LabHub::start().await;
    // Every STOW-RS request hangs for a while (then fails): the DICOM lane is busy.
    hub.state.stow.delay_ms.store(8_000, Ordering::SeqCst);
    let app = start_gateway(&hub, |c| c.forward_concurrency = 1).await;
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
    let acks = mllp_send(hl7_port(&app), &hl7_testdata(GLUCOSE), true).await;
    assert_eq!(acks[0].code, "AA");
    stored_count(&hub.state, 1, "the lab message at the hub").await;
    assert_eq!(
        hub.state.stow.finished.load(Ordering::SeqCst),
        0,
        "delivered while the DICOM upload was still under way"
    );
    app.stop().await;
}

/// `gateway run` with the HL7 listener on a free port; the child and the HL7 port.
async fn spawn_gateway(data_dir: &Path, hub_url: &str) -> (Child, u16) {
    let (child, line) = spawn_gateway_run(data_dir, hub_url, LAB_HUB_KEY, "127.0.0.1:0").await;
    let hl7: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("hl7="))
        .unwrap_or_else(|| panic!("hl7= in {line}"))
        .parse()
        .expect("HL7 address");
    assert!(!line.contains("reports="), "the page is disabled: {line}");
    (child, hl7.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_aa_then_restart_still_delivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The hub is down while the message arrives.
    let hub_port = dead_port();
    let hub_url = format!("http://127.0.0.1:{hub_port}");
    let (mut child, port) = spawn_gateway(dir.path(), &hub_url).await;
    let acks = mllp_send(port, &hl7_testdata(LAB), true).await;
    assert_eq!(acks[0].code, "AA");
    kill_hard(&mut child).await;

    let mut hub = LabHub::start_with(Arc::new(PeerState::default()), hub_port).await;
    let (mut child, _) = spawn_gateway(dir.path(), &hub_url).await;
    stored_count(&hub.state, 1, "delivered after the restart").await;
    assert_eq!(hub.state.stored(), vec![loose(&read(&hl7_testdata(LAB)))]);
    terminate(&mut child).await;
    hub.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_hl7_port_does_not_stop_the_gateway() {
    let hub = LabHub::start().await;
    let first = start_gateway(&hub, |_| {}).await;
    let busy = first.gateway().hl7_addr().expect("listening").to_string();
    let second = start_gateway(&hub, move |c| c.hl7_listen = busy).await;
    assert_eq!(second.gateway().hl7_addr(), None);
    let run = second.echoscu(&[]).await;
    assert!(run.success, "DICOM still received: {}", run.output);
    let status = second.status_cli(false).await;
    assert!(
        status.contains("lab results (HL7): listener not listening: cannot listen on 127.0.0.1:"),
        "{status}"
    );
    let disabled = start_gateway(&hub, |c| c.hl7_listen = String::new()).await;
    assert_eq!(disabled.gateway().hl7_addr(), None);
    assert!(disabled
        .status_cli(false)
        .await
        .contains("listener disabled (hl7_listen is empty)"));
    for app in [first, second, disabled] {
        app.stop().await;
    }
}
