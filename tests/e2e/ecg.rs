//! ECG from the township cart to the county cardiologist and back: files imported with
//! `gateway import` (one marked STAT), the STAT one ahead of an older routine one on the
//! cardiology worklist, the tracing and measurements served, the report prefilled from
//! the measurements, signed, and back at the township verified.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use storage::accounts::{Grade, Specialty};
use tests::accounts::{create_user, reader};
use tests::{bin, call, testdata, wait_for, Backend, Env, Gateway, Hub};

use crate::on_both_backends;

on_both_backends!(
    ecg_from_cart_to_cardiologist_and_back,
    a_device_zero_is_never_shown_as_a_measurement
);

pub fn import(gw: &Gateway, stat: bool, file: &PathBuf) -> Result<String> {
    let mut cmd = std::process::Command::new(bin("gateway"));
    cmd.args(["import", "--config"]).arg(&gw.config);
    if stat {
        cmd.arg("--stat");
    }
    let out = cmd.arg(file).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "gateway import {file:?}: {text}");
    Ok(text)
}

async fn cardiology_list(hub: &Hub, token: &str) -> Result<Vec<Value>> {
    let (status, list) = call(
        Method::GET,
        &format!("{}/api/worklist?specialty=cardiology", hub.url),
        Some(token),
        None,
    )
    .await?;
    ensure!(status == 200, "worklist: {status} {list}");
    Ok(list.as_array().cloned().unwrap_or_default())
}

pub async fn ecg_from_cart_to_cardiologist_and_back(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let gw = Gateway::start(&env, "gw", &hub.url, "township-a")?;
    let page = gw.reports.clone().context("report page")?;
    let storage = env.storage().await?;
    let card = create_user(
        &storage.db,
        &reader("card", &[Specialty::Cardiology], Grade::Senior),
    )
    .await?;

    // A routine aECG first, then the STAT SCP-ECG from the chest-pain patient.
    let routine = testdata("ecg/cvrg_hl7aecg-Example2.xml");
    let stat = testdata("ecg/scptools_ECG_20070321_110542_191010101010.SCP");
    ensure!(import(&gw, false, &routine)?.contains("imported"));
    wait_for(
        Duration::from_secs(30),
        "the routine ECG on the worklist",
        || async { Ok((!cardiology_list(&hub, &card).await?.is_empty()).then_some(())) },
    )
    .await?;
    ensure!(import(&gw, true, &stat)?.contains("imported"));
    let list = wait_for(
        Duration::from_secs(30),
        "both ECGs on the worklist",
        || async {
            let list = cardiology_list(&hub, &card).await?;
            Ok((list.len() == 2).then_some(list))
        },
    )
    .await?;
    ensure!(list[0]["priority"] == "stat", "STAT first: {list:?}");
    ensure!(
        list[0]["received_at"].as_i64() > list[1]["received_at"].as_i64(),
        "the STAT one is the newer one"
    );
    let ready = list[0]["ready_at"].as_i64().context("ready")?;
    ensure!(
        list[0]["deadline_at"].as_i64() == Some(ready + 30 * 60_000),
        "emergency deadline: {}",
        list[0]
    );
    let exam = list[0]["id"].to_string();

    // A file that is no ECG is refused by the import command with the reason.
    let junk = env.path("junk.scp");
    std::fs::write(&junk, b"not an ecg at all")?;
    let out = std::process::Command::new(bin("gateway"))
        .args(["import", "--config"])
        .arg(&gw.config)
        .arg(&junk)
        .output()?;
    ensure!(!out.status.success(), "junk accepted");

    // The waveform and measurements, and the printout at paper scale.
    let (status, wave) = call(
        Method::GET,
        &format!("{}/api/exams/{exam}/ecg", hub.url),
        Some(&card),
        None,
    )
    .await?;
    ensure!(status == 200, "waveform: {status}");
    ensure!(
        wave["ecg"]["leads"].as_array().map(Vec::len) == Some(12),
        "12 leads (8 + 4 derived)"
    );
    ensure!(
        wave["ecg"]["device_measurements"]["heart_rate_bpm"] == 75.0,
        "{}",
        wave["ecg"]["device_measurements"]
    );
    let rate = wave["automatic"]["heart_rate_bpm"]
        .as_f64()
        .context("automatic rate")?;
    ensure!((rate - 75.0).abs() <= 2.0, "automatic heart rate {rate}");
    let svg = reqwest::Client::new()
        .get(format!(
            "{}/api/exams/{exam}/ecg.svg?speed=25&gain=10",
            hub.url
        ))
        .bearer_auth(&card)
        .send()
        .await?;
    ensure!(svg.status() == 200, "svg: {}", svg.status());
    ensure!(svg.text().await?.contains("<svg"));
    let png = reqwest::Client::new()
        .get(format!("{}/api/exams/{exam}/ecg.png", hub.url))
        .bearer_auth(&card)
        .send()
        .await?;
    ensure!(
        png.status() == 200 && png.bytes().await?.starts_with(b"\x89PNG"),
        "png"
    );
    let (status, _) = call(
        Method::GET,
        &format!("{}/api/exams/{exam}/ecg.svg?speed=30", hub.url),
        Some(&card),
        None,
    )
    .await?;
    ensure!(status == 400, "a non-standard speed: {status}");
    // A rhythm lead the recording lacks is refused, naming the leads there are (an
    // empty strip would read as asystole); another spelling of a real lead is fine.
    let (status, body) = call(
        Method::GET,
        &format!("{}/api/exams/{exam}/ecg.svg?rhythm=XYZ", hub.url),
        Some(&card),
        None,
    )
    .await?;
    ensure!(
        status == 400
            && body["error"] == "invalid_layout"
            && body["message"].as_str().is_some_and(|m| m.contains("aVR")),
        "an unknown rhythm lead: {status} {body}"
    );
    let (status, _) = call(
        Method::GET,
        &format!("{}/api/exams/{exam}/ecg.svg?rhythm=avr", hub.url),
        Some(&card),
        None,
    )
    .await?;
    ensure!(status == 200, "rhythm lead aVR spelled avr: {status}");

    // The report, prefilled from the measurements, confirmed and signed.
    let (status, held) = call(
        Method::POST,
        &format!("{}/api/exams/{exam}/claim", hub.url),
        Some(&card),
        None,
    )
    .await?;
    ensure!(status == 200, "claim: {status} {held}");
    let (_, prefill) = call(
        Method::GET,
        &format!("{}/api/exams/{exam}/ecg/prefill", hub.url),
        Some(&card),
        None,
    )
    .await?;
    let mut content = prefill["content"].clone();
    ensure!(
        content["intervals"]
            .as_str()
            .is_some_and(|t| t.contains("PR 157")),
        "{content}"
    );
    ensure!(
        content["automatic"]
            .as_str()
            .is_some_and(|t| t.contains("自动测量")),
        "{content}"
    );
    content["rhythm"] = json!("窦性心律");
    content["conclusion"] = json!("窦性心律，正常心电图。");
    let signed = tests::sign_report(&hub.url, &card, &exam, "ecg", content, false).await?;
    ensure!(signed["status"] == "final", "{signed}");
    let report_id = signed["report_id"]
        .as_str()
        .context("report id")?
        .to_string();

    // Back at the township, verified, with both automatic and confirmed values.
    let there = wait_for(
        Duration::from_secs(30),
        "the ECG report at the township",
        || async {
            let (status, body) = call(
                Method::GET,
                &format!("{page}/api/reports/{report_id}"),
                None,
                None,
            )
            .await?;
            Ok((status == 200 && body["versions"][0]["verified"] == true).then_some(body))
        },
    )
    .await?;
    let content = &there["versions"][0]["content"];
    ensure!(
        content["conclusion"] == "窦性心律，正常心电图。" && content["automatic"].is_string(),
        "{there}"
    );

    // The printed report carries a rhythm strip.
    let pdf = reqwest::Client::new()
        .get(format!(
            "{}/api/reports/{report_id}/versions/1/pdf",
            hub.url
        ))
        .bearer_auth(&card)
        .send()
        .await?
        .bytes()
        .await?;
    let pdf_file = env.path("ecg-report.pdf");
    std::fs::write(&pdf_file, &pdf)?;
    let images = std::process::Command::new("/usr/bin/pdfimages")
        .arg("-list")
        .arg(&pdf_file)
        .output()?;
    let listed = String::from_utf8_lossy(&images.stdout)
        .lines()
        .skip(2)
        .count();
    ensure!(
        listed == 1,
        "the ECG report PDF should hold one tracing image, has {listed}"
    );

    // A cart that speaks DICOM sends its 12-lead ECG by C-STORE: it lands on the
    // cardiology worklist too, and its tracing reads from the stored instance.
    let out = std::process::Command::new("python3")
        .args(["-c", "from pydicom.data import get_testdata_file; print(get_testdata_file('waveform_ecg.dcm'))"])
        .output()?;
    let dicom_ecg = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    gw.storescu(&[], std::slice::from_ref(&dicom_ecg))?;
    let row = wait_for(
        Duration::from_secs(30),
        "the DICOM ECG on the worklist",
        || async {
            Ok(cardiology_list(&hub, &card)
                .await?
                .into_iter()
                .find(|r| r["modality"] == "ECG" && r["study_uid"].is_string()))
        },
    )
    .await?;
    let (status, wave) = call(
        Method::GET,
        &format!("{}/api/exams/{}/ecg", hub.url, row["id"]),
        Some(&card),
        None,
    )
    .await?;
    ensure!(status == 200, "DICOM waveform: {status} {wave}");
    ensure!(
        wave["ecg"]["leads"].as_array().map(Vec::len) == Some(12),
        "DICOM ECG leads"
    );

    // A DICOM ECG whose automatic rate suggests an emergency (30 bpm) becomes STAT.
    let slow = crate::make_dicom(&["slow-ecg", env.path("slow").to_str().context("path")?]);
    gw.storescu(&[], &slow)?;
    wait_for(
        Duration::from_secs(30),
        "the bradycardic ECG made STAT",
        || async {
            Ok(cardiology_list(&hub, &card)
                .await?
                .into_iter()
                .find(|r| r["patient_id"] == "SLOW-ECG" && r["priority"] == "stat")
                .map(|_| ()))
        },
    )
    .await?;
    Ok(())
}

/// A cart that did not compute the rate writes 0 (aECG, SCP-ECG section 7): the
/// printout, the JSON and the report draft show our rate instead, say it is ours, and
/// list the device's 0 as not computed; the samples are a resource of their own.
pub async fn a_device_zero_is_never_shown_as_a_measurement(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let gw = Gateway::start(&env, "gw", &hub.url, "township-a")?;
    let storage = env.storage().await?;
    let card = create_user(
        &storage.db,
        &reader("card", &[Specialty::Cardiology], Grade::Senior),
    )
    .await?;
    let original = std::fs::read_to_string(testdata("ecg/cvrg_hl7aecg-Example2.xml"))?;
    // The sample states its rate (52) twice, the only values with that unit.
    let rate = r#"value="52" unit="bmp""#;
    ensure!(
        original.matches(rate).count() == 2,
        "the sample states its rate"
    );
    let zero = env.path("zero-rate.xml");
    std::fs::write(&zero, original.replace(rate, r#"value="0" unit="bmp""#))?;
    ensure!(import(&gw, false, &zero)?.contains("imported"));
    let list = wait_for(
        Duration::from_secs(30),
        "the ECG on the worklist",
        || async {
            let list = cardiology_list(&hub, &card).await?;
            Ok((!list.is_empty()).then_some(list))
        },
    )
    .await?;
    let exam = list[0]["id"].to_string();

    let response = reqwest::Client::new()
        .get(format!("{}/api/exams/{exam}/ecg", hub.url))
        .bearer_auth(&card)
        .send()
        .await?;
    ensure!(response.status() == 200, "ecg: {}", response.status());
    let text = response.text().await?;
    ensure!(
        text.len() < 64 * 1024,
        "the measurements carry no samples: {} bytes",
        text.len()
    );
    let wave: Value = serde_json::from_str(&text)?;
    let shown = &wave["measurements"]["shown"];
    let hr = shown
        .as_array()
        .and_then(|s| s.iter().find(|v| v["quantity"] == "heart_rate"))
        .context("a rate is shown")?;
    let ours = hr["value"].as_f64().context("rate value")?;
    ensure!(
        hr["origin"] == "automatic" && ours > 20.0,
        "our rate replaces the device's 0: {hr}"
    );
    ensure!(
        wave["measurements"]["set_aside"][0]["quantity"] == "heart_rate"
            && wave["measurements"]["set_aside"][0]["reason"]["code"] == "not_computed",
        "{}",
        wave["measurements"]
    );
    ensure!(
        wave["ecg"]["leads"][0]["samples"].as_u64() > Some(1000),
        "a lead says how many samples it has: {}",
        wave["ecg"]["leads"][0]
    );
    let (status, samples) = call(
        Method::GET,
        &format!("{}/api/exams/{exam}/ecg/samples", hub.url),
        Some(&card),
        None,
    )
    .await?;
    ensure!(
        status == 200
            && samples["leads"][0]["samples_uv"].as_array().map(Vec::len)
                == wave["ecg"]["leads"][0]["samples"]
                    .as_u64()
                    .map(|n| n as usize),
        "samples on request: {status}"
    );

    let svg = reqwest::Client::new()
        .get(format!("{}/api/exams/{exam}/ecg.svg", hub.url))
        .bearer_auth(&card)
        .send()
        .await?
        .text()
        .await?;
    let printed = format!("HR {ours:.0} bpm");
    ensure!(
        !svg.contains("HR 0 bpm") && svg.contains(&format!("自动测量 {printed}")),
        "the printout shows our rate as ours"
    );
    ensure!(
        svg.contains("HR（设备未计算）"),
        "the printout says the device did not"
    );

    let (status, prefill) = call(
        Method::GET,
        &format!("{}/api/exams/{exam}/ecg/prefill", hub.url),
        Some(&card),
        None,
    )
    .await?;
    ensure!(status == 200, "prefill: {status} {prefill}");
    let content = &prefill["content"];
    ensure!(
        content["rate"] == format!("{ours:.0} bpm（自动测量）"),
        "the draft's rate is ours and says so: {content}"
    );
    ensure!(
        content["sources"]
            .as_str()
            .is_some_and(|s| s.contains("自动测量：HR") && s.contains("HR：设备未计算")),
        "{content}"
    );
    // Any sentence about the rate states the rate shown.
    let rhythm = content["rhythm"].as_str().unwrap_or_default();
    ensure!(
        !rhythm.contains("次/分") || rhythm.contains(&format!("{ours:.0} 次/分")),
        "{rhythm}"
    );
    Ok(())
}
