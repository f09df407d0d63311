//! The `gateway` binary as scripts and the end-to-end tests run it: configured by
//! environment, the one `gateway ready:` line on stdout, SIGTERM and SIGKILL.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

/// Start `gateway run` on a free port; returns the child and the DICOM port read from
/// the ready line.
async fn spawn_gateway(data_dir: &Path, hub_url: &str) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("run")
        .env("GATEWAY_LISTEN", "127.0.0.1:0")
        .env("GATEWAY_DATA_DIR", data_dir)
        .env("GATEWAY_HUB_URL", hub_url)
        .env("GATEWAY_AE_TITLE", "TEST_GW")
        .env("GATEWAY_QUIET_PERIOD_SECS", "1")
        .env("GATEWAY_BATCH_MAX_INSTANCES", "2")
        .env("GATEWAY_FORWARD_CONCURRENCY", "1")
        .env("GATEWAY_REPORT_LISTEN", "127.0.0.1:0")
        .env("GATEWAY_HL7_LISTEN", "127.0.0.1:0")
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
    // Exactly: gateway ready: dicom=<ip:port> ae=<AE> reports=http://<ip:port>
    // hl7=<ip:port>; the words before reports= are what scripts have always parsed.
    let rest = line
        .strip_prefix("gateway ready: dicom=")
        .unwrap_or_else(|| panic!("ready line: {line}"));
    let (addr, rest) = rest
        .split_once(" ae=")
        .unwrap_or_else(|| panic!("ready line: {line}"));
    let (ae, rest) = rest
        .split_once(" reports=http://")
        .unwrap_or_else(|| panic!("ready line: {line}"));
    let (reports, hl7) = rest
        .split_once(" hl7=")
        .unwrap_or_else(|| panic!("ready line: {line}"));
    let hl7: std::net::SocketAddr = hl7.parse().expect("HL7 listener address");
    assert_eq!(hl7.ip().to_string(), "127.0.0.1");
    assert_ne!(hl7.port(), 0);
    assert_eq!(ae, "TEST_GW");
    let reports: std::net::SocketAddr = reports.parse().expect("report page address");
    assert_eq!(reports.ip().to_string(), "127.0.0.1");
    assert_ne!(reports.port(), 0);
    let addr: std::net::SocketAddr = addr.parse().expect("socket address");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    (child, addr.port())
}

async fn storescu(port: u16, files: &[&Path]) -> DcmtkRun {
    let mut cmd = Command::new(STORESCU);
    cmd.args(["-v", "-aet", "TESTSCU", "+sd", "+r", "127.0.0.1"])
        .arg(port.to_string())
        .args(files);
    let out = cmd.output().await.expect("storescu runs");
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    DcmtkRun {
        success: out.status.success(),
        output,
    }
}

async fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args([name, &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_line_echo_and_graceful_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, port) =
        spawn_gateway(dir.path(), &format!("http://127.0.0.1:{}", dead_port())).await;
    let out = Command::new(ECHOSCU)
        .args(["-aec", "TEST_GW", "127.0.0.1"])
        .arg(port.to_string())
        .output()
        .await
        .expect("echoscu");
    assert!(out.status.success());
    signal(&child, "-TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops in time")
        .expect("wait");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_forwarding_then_restart_delivers_everything_once() {
    let Some(orthanc) = Orthanc::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, port) = spawn_gateway(dir.path(), &orthanc.url()).await;
    let tree = testdata("tree/98892003");
    let run = storescu(port, &[&tree]).await;
    assert_eq!(run.stored(), 17, "{}", run.output);
    // Killed as soon as the modality is done: forwarding is under way.
    signal(&child, "-KILL").await;
    let _ = child.wait().await;

    let (mut child, _port) = spawn_gateway(dir.path(), &orthanc.url()).await;
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("gateway.db"))
                .read_only(true),
        )
        .await
        .expect("open db");
    eventually(
        Duration::from_secs(30),
        "all delivered after restart",
        || {
            let db = db.clone();
            async move {
                let pending: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE state != 'delivered'")
                        .fetch_one(&db)
                        .await
                        .unwrap_or(1);
                pending == 0
            }
        },
    )
    .await;
    let rows: Vec<String> = sqlx::query_scalar("SELECT sop_instance_uid FROM items")
        .fetch_all(&db)
        .await
        .expect("items");
    let distinct: BTreeSet<String> = rows.iter().cloned().collect();
    assert_eq!(rows.len(), 17, "no instance recorded twice");
    let at_hub: BTreeSet<String> = orthanc.instance_uids().await.into_iter().collect();
    assert_eq!(at_hub, distinct);
    db.close().await;
    signal(&child, "-TERM").await;
    let _ = child.wait().await;
    orthanc.stop().await;
}
