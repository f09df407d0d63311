//! The web UI in a real browser (Debian's headless Chromium driven by playwright-core):
//! a reader logs in, sees the worklist update live, claims a CT sent through a township
//! gateway, scrolls it, changes the window, writes and signs the report; the township
//! page then shows the report. The ECG and lab views and the admin pages are opened too. Screenshots are kept under `tests/artifacts/ui/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tests::{get_json_as, wait_for, Backend, Env, Gateway, Hub};

use crate::on_both_backends;
use crate::reading::ready_study;
use crate::{ecg, lab};

on_both_backends!(reader_reads_a_ct_in_the_browser);

/// Slices of the CT series the browser scrolls.
const CT_SLICES: usize = 24;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// A 512x512 CT series from the shared corpus generator.
fn make_ct(env: &Env) -> Result<Vec<PathBuf>> {
    let out = env.path("corpus");
    let tool = tests::testdata("../tools/make_corpus.py");
    let status = std::process::Command::new("python3")
        .arg(&tool)
        .arg(&out)
        .args([
            "--ct-slices",
            &CT_SLICES.to_string(),
            "--only",
            "ct",
            "--quiet",
        ])
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    ensure!(status.success(), "make_corpus.py failed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(out.join("ct"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "dcm"));
    files.sort();
    ensure!(files.len() == CT_SLICES, "{} CT files", files.len());
    Ok(files)
}

async fn reader_reads_a_ct_in_the_browser(backend: Backend) -> Result<()> {
    let node_modules = browser_dir().join("node_modules/playwright-core");
    ensure!(
        node_modules.exists() && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and `npm ci --prefix tests/browser` (.ci/run installs both)"
    );
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let gateway = Gateway::start(&env, "gateway", &hub.url, "local")?;
    let township = gateway.reports.clone().context("gateway report page")?;
    let reader = env.accounts()?.reader.clone();
    // A township clinician of the sending site, who follows the exam but does not read.
    let storage = env.storage().await?;
    tests::accounts::create_user(
        &storage.db,
        &tests::accounts::person("clin", storage::accounts::Role::Clinician, &["local"]),
    )
    .await?;

    let files = make_ct(&env)?;
    let study = tests::study_uid_of(&files[0])?;
    let out = gateway.storescu(&[], &files)?;
    ensure!(
        out.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("{}/api/worklist", hub.url);
    let exam: Value = wait_for(
        Duration::from_secs(60),
        "the CT on the worklist",
        || async {
            let (_, list) = get_json_as(&url, Some(&reader)).await?;
            Ok(list.as_array().and_then(|rows| {
                rows.iter()
                    .find(|r| r["study_uid"] == study.as_str() && r["status"] == "ready")
                    .cloned()
            }))
        },
    )
    .await?;
    let exam_id = exam["id"].as_i64().context("exam id")?;

    // An ECG and a lab result from the same township, for their views.
    ecg::import(
        &gateway,
        false,
        &tests::testdata("ecg/cvrg_hl7aecg-Example2.xml"),
    )?;
    let hl7 = env.path("potassium.hl7");
    std::fs::write(
        &hl7,
        lab::potassium("UI-K-1", "UI-LAB-1", "F1001", "5.9", "F"),
    )?;
    let ack = lab::mllp_send(&gateway, &hl7)?;
    ensure!(ack.contains("MSA|AA"), "lab result not accepted: {ack}");
    let exam_of = |kind: &'static str| {
        let url = format!("{}/api/worklist?status=all", hub.url);
        let reader = reader.clone();
        async move {
            wait_for(Duration::from_secs(60), kind, || async {
                let (_, list) = get_json_as(&url, Some(&reader)).await?;
                Ok(list.as_array().and_then(|rows| {
                    rows.iter()
                        .find(|r| r["kind"] == kind)
                        .and_then(|r| r["id"].as_i64())
                }))
            })
            .await
        }
    };
    let ecg_exam = exam_of("ecg").await?;
    let lab_exam = exam_of("lab").await?;

    let artifacts = browser_dir()
        .parent()
        .context("tests dir")?
        .join("artifacts/ui")
        .join(format!("{backend:?}"));
    let marker = env.path("worklist-open");
    let mut browser = tokio::process::Command::new("node")
        .arg(browser_dir().join("ui.mjs"))
        .env("HUB_URL", &hub.url)
        .env("TOWNSHIP_URL", &township)
        .env("READER", "reader")
        .env("PASSWORD", tests::accounts::PASSWORD)
        .env("EXAM_ID", exam_id.to_string())
        .env("ECG_EXAM_ID", ecg_exam.to_string())
        .env("LAB_EXAM_ID", lab_exam.to_string())
        .env("ADMIN", "admin")
        .env("CLINICIAN", "clin")
        .env("ARTIFACTS", &artifacts)
        .env("LIVE_MARKER", &marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting node (Debian package nodejs)")?;

    // When the worklist is open in the browser, a STAT exam becomes ready elsewhere.
    let started = Instant::now();
    while !marker.exists() {
        if started.elapsed() > Duration::from_secs(90) {
            break;
        }
        if browser.try_wait()?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if marker.exists() {
        ready_study(&env, &hub, "township-a", "ui-stat", "stat").await?;
    }
    let done = tokio::time::timeout(Duration::from_secs(240), browser.wait_with_output())
        .await
        .context("the browser test took over 4 minutes")??;
    if !done.status.success() {
        bail!(
            "browser test failed (screenshots in {}):\n{}\n{}\nhub log:\n{}",
            artifacts.display(),
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr),
            hub.proc.log_tail()
        );
    }

    // What the browser did is what the server has: a final signed report with the text
    // typed and its amendment.
    let (status, report) = get_json_as(
        &format!("{}/api/exams/{exam_id}/report", hub.url),
        Some(&reader),
    )
    .await?;
    ensure!(status == 200, "report: {status} {report}");
    let versions = report["versions"].as_array().context("versions")?;
    ensure!(
        versions.len() == 2
            && versions[0]["status"] == "final"
            && versions[1]["status"] == "amended",
        "versions: {report}"
    );
    let signed_text = |v: &Value| v["signed"]["payload"].as_str().map(str::to_string);
    let first = signed_text(&versions[0]).context("payload")?;
    ensure!(first.contains("磨玻璃结节"), "signed text: {first}");
    let amended = signed_text(&versions[1]).context("payload")?;
    ensure!(amended.contains("钙化灶"), "amended text: {amended}");
    Ok(())
}
