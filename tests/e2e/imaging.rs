//! Township to county: dcmtk `storescu` into the gateway, forwarded to the hub, found and
//! retrieved over DICOMweb; and the same through hub outages and a gateway crash.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tests::{attr, get_json, retrieve_parts, testdata, wait_for, Backend, Env, Gateway, Hub};

use crate::{make_study, on_both_backends};

on_both_backends!(
    modality_to_dicomweb,
    hub_down_then_back,
    gateway_killed_mid_forward,
    stat_priority_reaches_exam,
    damaged_spool_file_is_refused_not_stored
);

/// Files of one study, with the transfer syntax option storescu needs to send them as is.
fn sample_files() -> Vec<(PathBuf, &'static [&'static str])> {
    vec![
        (testdata("dicom/single/CT_small.dcm"), &[]),
        (testdata("dicom/single/SC_rgb_small_odd.dcm"), &[]),
        (testdata("dicom/single/examples_rgb_color.dcm"), &[]),
        (testdata("dicom/compressed/MR_small_RLE.dcm"), &["-xr"]),
        (testdata("dicom/compressed/JPEG2000.dcm"), &["-xw"]),
        (testdata("dicom/compressed/SC_rgb_jpeg_dcmtk.dcm"), &["-xy"]),
        (testdata("dicom/compressed/image_dfl.dcm"), &["-xd"]),
    ]
}

/// Exam of a study once it is `ready`.
async fn wait_ready(hub: &Hub, study: &str, timeout: Duration) -> Result<serde_json::Value> {
    wait_for(timeout, &format!("exam of {study} ready"), || async {
        let (_, exams) = get_json(&format!("{}/api/exams?study={study}", hub.url)).await?;
        Ok(exams
            .as_array()
            .and_then(|a| a.first())
            .filter(|e| e["status"] == "ready")
            .cloned())
    })
    .await
}

async fn study_instances(hub: &Hub, study: &str) -> Result<Vec<serde_json::Value>> {
    let (status, v) = get_json(&format!("{}/studies/{study}/instances", hub.dicomweb())).await?;
    ensure!(status == 200, "QIDO instances HTTP {status}: {v}");
    Ok(v.as_array().cloned().unwrap_or_default())
}

pub async fn modality_to_dicomweb(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let gw = Gateway::start(&env, "gw", &hub.url, "township-a")?;
    let echo = gw.echoscu()?;
    ensure!(echo.status.success(), "echoscu failed: {:?}", echo);

    let files = sample_files();
    for (file, opts) in &files {
        gw.storescu(opts, std::slice::from_ref(file))
            .with_context(|| format!("sending {}", file.display()))?;
    }

    for (file, _) in &files {
        let original = std::fs::read(file)?;
        let obj = dicom_object::open_file(file)?;
        let study = obj
            .element_by_name("StudyInstanceUID")?
            .to_str()?
            .trim_end_matches('\0')
            .to_string();
        let sop = obj
            .element_by_name("SOPInstanceUID")?
            .to_str()?
            .trim_end_matches('\0')
            .to_string();
        let pid = obj
            .element_by_name("PatientID")?
            .to_str()?
            .trim()
            .to_string();
        let exam = wait_ready(&hub, &study, Duration::from_secs(60)).await?;
        ensure!(exam["site"] == "township-a", "exam site: {exam}");

        // QIDO finds the study by PatientID with the right attributes.
        let (_, found) = get_json(&format!(
            "{}/studies?PatientID={pid}&StudyInstanceUID={study}",
            hub.dicomweb()
        ))
        .await?;
        let found = found.as_array().context("array")?;
        ensure!(found.len() == 1, "QIDO by PatientID found {found:?}");
        ensure!(
            attr(&found[0], "00100020") == (!pid.is_empty()).then_some(pid.clone()),
            "PatientID in {}",
            found[0]
        );
        let instances = study_instances(&hub, &study).await?;
        let inst = instances
            .iter()
            .find(|i| attr(i, "00080018").as_deref() == Some(sop.as_str()))
            .context("instance listed")?;
        let series = attr(inst, "0020000E").context("series uid")?;

        // WADO-RS returns what the modality sent: dcmtk re-encodes group lengths and
        // padding on the wire, so compare every element's value, pixel data included.
        let parts = retrieve_parts(&format!(
            "{}/studies/{study}/series/{series}/instances/{sop}",
            hub.dicomweb()
        ))
        .await?;
        ensure!(parts.len() == 1, "one part expected");
        ensure!(
            tests::elements_json(&parts[0])? == tests::elements_json(&original)?,
            "retrieved data set of {} differs from the original",
            file.display()
        );
        let (status, meta) = get_json(&format!(
            "{}/studies/{study}/series/{series}/metadata",
            hub.dicomweb()
        ))
        .await?;
        ensure!(
            status == 200 && meta.as_array().is_some_and(|a| !a.is_empty()),
            "metadata: {meta}"
        );
    }
    // A third-party client reads the same data.
    dicomweb_client_check(&hub)?;
    Ok(())
}

/// Run the `dicomweb-client` package against the hub.
fn dicomweb_client_check(hub: &Hub) -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/dicomweb_check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(hub.dicomweb())
        .env(
            "HUB_TOKEN",
            tests::reader_token(&hub.url).context("reader token")?,
        )
        .output()?;
    ensure!(
        out.status.success(),
        "dicomweb-client check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

pub async fn hub_down_then_back(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let port = tests::free_port();
    let hub_url = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(&env, "gw", &hub_url, "township-a")?;
    let files = make_study(&env, "gen", 12, "down", &[]);
    gw.storescu(&[], &files)?;
    let status = gw.status()?;
    ensure!(
        status.contains("12"),
        "gateway status should show 12 waiting:\n{status}"
    );

    let hub = Hub::start(&env, "hub", port)?;
    let study = tests::study_uid_of(&files[0])?;
    let exam = wait_ready(&hub, &study, Duration::from_secs(90)).await?;
    ensure!(exam["instance_count"] == 12, "exam: {exam}");
    let instances = study_instances(&hub, &study).await?;
    ensure!(instances.len() == 12, "{} instances", instances.len());

    // The hub goes down again and comes back: later instances still arrive once.
    drop(hub);
    let more = make_study(&env, "gen2", 3, "down2", &[]);
    gw.storescu(&[], &more)?;
    let hub = Hub::start(&env, "hub2", port)?;
    wait_ready(
        &hub,
        &tests::study_uid_of(&more[0])?,
        Duration::from_secs(90),
    )
    .await?;
    let (_, exams) = get_json(&format!("{}/api/exams", hub.url)).await?;
    ensure!(
        exams.as_array().map(Vec::len) == Some(2),
        "exactly two exams: {exams}"
    );
    drop(gw);
    Ok(())
}

pub async fn gateway_killed_mid_forward(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let port = tests::free_port();
    let hub_url = format!("http://127.0.0.1:{port}");
    let mut gw = Gateway::start(&env, "gw", &hub_url, "township-b")?;
    let files = make_study(&env, "gen", 40, "kill", &[]);
    gw.storescu(&[], &files)?;
    let study = tests::study_uid_of(&files[0])?;

    // Start the hub, and kill the gateway as soon as forwarding has begun.
    let hub = Hub::start(&env, "hub", port)?;
    let storage = env.storage().await?;
    wait_for(
        Duration::from_secs(60),
        "first instance at the hub",
        || async {
            let n = storage::index::instances(&storage.db, &study, None, None)
                .await?
                .len();
            Ok((n > 0).then_some(n))
        },
    )
    .await?;
    gw.proc.kill();
    let config = gw.config.clone();
    let gw = Gateway::restart(&env, "gw", &config)?;
    let exam = wait_ready(&hub, &study, Duration::from_secs(90)).await?;
    ensure!(exam["instance_count"] == 40, "exam after restart: {exam}");
    let stored = storage::index::instances(&storage.db, &study, None, None).await?;
    ensure!(stored.len() == 40, "{} instances stored", stored.len());
    let (_, exams) = get_json(&format!("{}/api/exams", hub.url)).await?;
    ensure!(
        exams.as_array().map(Vec::len) == Some(1),
        "one exam: {exams}"
    );
    drop(gw);
    Ok(())
}

pub async fn stat_priority_reaches_exam(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let gw = Gateway::start(&env, "gw", &hub.url, "township-a")?;
    let files = make_study(&env, "gen", 2, "stat", &["--priority", "STAT"]);
    gw.storescu(&[], &files)?;
    let exam = wait_ready(
        &hub,
        &tests::study_uid_of(&files[0])?,
        Duration::from_secs(60),
    )
    .await?;
    ensure!(exam["priority"] == "stat", "exam: {exam}");
    Ok(())
}

/// Spool files holding instances in a gateway's data directory (it keeps empty files
/// created ahead of time beside them).
fn spool_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.components().any(|c| c.as_os_str() == "spool")
                && p.extension().is_some_and(|e| e == "dcm")
                && entry.metadata().is_ok_and(|m| m.len() > 0)
            {
                out.push(p);
            }
        }
    }
    out
}

pub async fn damaged_spool_file_is_refused_not_stored(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let port = tests::free_port();
    let gw = Gateway::start(
        &env,
        "gw",
        &format!("http://127.0.0.1:{port}"),
        "township-a",
    )?;
    let files = make_study(&env, "gen", 3, "rot", &[]);
    gw.storescu(&[], &files)?;
    // Bit rot on the gateway's disk while the hub is unreachable.
    let spooled = spool_files(&env.path("gw"));
    ensure!(spooled.len() == 3, "spool files: {spooled:?}");
    // Flip the last byte in place (no truncation the gateway could catch by size).
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&spooled[0])?;
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        f.seek(SeekFrom::End(-1))?;
        f.write_all(&[last[0] ^ 0xFF])?;
    }

    let hub = Hub::start(&env, "hub", port)?;
    let study = tests::study_uid_of(&files[0])?;
    let exam = wait_ready(&hub, &study, Duration::from_secs(60)).await?;
    ensure!(
        exam["instance_count"] == 2,
        "only the intact instances are stored: {exam}"
    );
    let status = wait_for(
        Duration::from_secs(30),
        "quarantine in gateway status",
        || async {
            let s = gw.status()?;
            Ok(s.contains("damaged").then_some(s))
        },
    )
    .await?;
    ensure!(status.contains("SHA-256"), "{status}");
    Ok(())
}

/// After an outage long enough for the forwarder's pause to grow towards its 60 s
/// ceiling, the backlog moves within seconds of the hub's return: the gateway probes
/// the hub instead of waiting out the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_moves_within_seconds_of_the_hubs_return() -> Result<()> {
    let env = Env::new(Backend::SqliteLocal).await?;
    let port = tests::free_port();
    let hub_url = format!("http://127.0.0.1:{port}");
    // The production backoff (500 ms doubling up to 60 s), not the tests' fast one.
    let gw = tests::Gateway::start_with(
        &env,
        "gw",
        &hub_url,
        "township-a",
        "backoff_base_ms = 500\nbackoff_max_ms = 60000",
    )?;
    let files = make_study(&env, "gen", 6, "outage", &[]);
    gw.storescu(&[], &files)?;
    // 20 s of failures: the pause ceiling has doubled to 16-32 s by now.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let hub = Hub::start(&env, "hub", port)?;
    let back = std::time::Instant::now();
    let study = tests::study_uid_of(&files[0])?;
    let moved = tests::wait_for(
        Duration::from_secs(60),
        "the backlog at the hub",
        || async {
            Ok((study_instances(&hub, &study)
                .await
                .map(|i| i.len())
                .unwrap_or(0)
                == 6)
                .then_some(()))
        },
    )
    .await;
    let took = back.elapsed();
    moved?;
    ensure!(
        took < Duration::from_secs(5),
        "the backlog took {took:?} after the hub came back"
    );
    Ok(())
}
