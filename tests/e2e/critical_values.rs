//! A corrected critical value follows its alert: the laboratory corrects (OBX-11 C) a
//! critical potassium to another critical value (the township's alert is replaced, not
//! duplicated, and must be acknowledged anew), then to a normal one (the alert is
//! withdrawn, stops asking to treat, never escalates); a preliminary finalised with the
//! same value raises nothing new; the signed lab report marks the corrected value and
//! names the same order number as the alert.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use storage::accounts::{Grade, Specialty};
use tests::accounts::{create_user, reader};
use tests::{call, sign_report, wait_for, Backend, Env, Gateway, Hub};

use crate::lab::{lab_exam_of, mllp_send, potassium};
use crate::on_both_backends;

on_both_backends!(a_corrected_critical_value_follows_its_alert);

/// Send one potassium result through the gateway's MLLP port; it must be accepted.
fn send(
    env: &Env,
    gw: &Gateway,
    control: &str,
    patient: &str,
    filler: &str,
    value: &str,
    status: &str,
) -> Result<()> {
    let file = env.path(&format!("{control}.hl7"));
    std::fs::write(&file, potassium(control, patient, filler, value, status))?;
    let ack = mllp_send(gw, &file)?;
    ensure!(ack.contains("MSA|AA"), "{control}: {ack}");
    Ok(())
}

/// The township's reports about `patient`.
async fn township_reports(page: &str, patient: &str) -> Result<Vec<Value>> {
    let (_, body) = call(Method::GET, &format!("{page}/api/reports"), None, None).await?;
    Ok(body["reports"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["exam"]["patient_id"] == patient)
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}

/// Wait until the township holds `version` of the report `id`; the report then.
async fn township_version(page: &str, id: &str, version: i64) -> Result<Value> {
    wait_for(
        Duration::from_secs(30),
        &format!("version {version} of {id} at the township"),
        || async {
            let (_, body) =
                call(Method::GET, &format!("{page}/api/reports/{id}"), None, None).await?;
            Ok((body["versions"][0]["version"] == version
                && body["versions"][0]["verified"] == true)
                .then_some(body))
        },
    )
    .await
}

async fn hub_alerts(hub: &Hub, admin: &str, open: bool) -> Result<Value> {
    let (status, body) = call(
        Method::GET,
        &format!("{}/api/admin/critical-alerts?open={open}", hub.url),
        Some(admin),
        None,
    )
    .await?;
    ensure!(status == 200, "alerts: {status} {body}");
    Ok(body)
}

fn alerts_of<'a>(body: &'a Value, patient: &str) -> Vec<&'a Value> {
    body["alerts"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["patient_id"] == patient).collect())
        .unwrap_or_default()
}

pub async fn a_corrected_critical_value_follows_its_alert(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start_with(&env, "hub", 0, &[("HUB_CRITICAL_ACK_SECS", "6")])?;
    let gw = Gateway::start(&env, "gw", &hub.url, "township-a")?;
    let page = gw.reports.clone().context("report page")?;
    let storage = env.storage().await?;
    let labdoc = create_user(
        &storage.db,
        &reader("labdoc", &[Specialty::Laboratory], Grade::Senior),
    )
    .await?;
    let admin = env.accounts()?.admin.clone();

    // A critical potassium raises an alert at the township.
    send(&env, &gw, "KC-1", "WX-90", "F950", "6.8", "F")?;
    let alert = wait_for(
        Duration::from_secs(30),
        "the alert at the township",
        || async {
            Ok(township_reports(&page, "WX-90")
                .await?
                .into_iter()
                .find(|r| r["critical_waiting"] == true))
        },
    )
    .await?;
    let id = alert["report_id"].as_str().context("alert id")?.to_string();
    let v1 = township_version(&page, &id, 1).await?;
    ensure!(
        v1["versions"][0]["exam"]["accession_number"] == "F950",
        "alert order number: {v1}"
    );

    // Corrected to another critical value: the same alert, version 2, to acknowledge.
    send(&env, &gw, "KC-2", "WX-90", "F950", "7.4", "C")?;
    let v2 = township_version(&page, &id, 2).await?;
    let text = v2["versions"][0]["content"]["alert"].as_str().unwrap_or("");
    ensure!(
        text.contains("7.4") && text.contains("6.8") && v2["versions"][0]["critical"] == true,
        "replacement: {v2}"
    );
    let reports = township_reports(&page, "WX-90").await?;
    ensure!(
        reports.len() == 1,
        "the correction raised a second alert: {reports:?}"
    );
    ensure!(reports[0]["critical_waiting"] == true, "{reports:?}");
    // The replaced version can no longer be acknowledged: the clinician must read v2.
    let (status, body) = call(
        Method::POST,
        &format!("{page}/api/reports/{id}/versions/1/acknowledge"),
        None,
        Some(json!({"name": "刘医生"})),
    )
    .await?;
    ensure!(
        status == 409,
        "acknowledging a replaced version: {status} {body}"
    );

    // Corrected to a normal value: withdrawn, nothing left to acknowledge.
    send(&env, &gw, "KC-3", "WX-90", "F950", "4.6", "C")?;
    let v3 = township_version(&page, &id, 3).await?;
    let newest = &v3["versions"][0];
    let text = newest["content"]["alert"].as_str().unwrap_or("");
    ensure!(
        newest["critical"] == false
            && text.contains("撤回")
            && text.contains("4.6")
            && newest["reason"].as_str().is_some_and(|r| r.contains("7.4")),
        "withdrawal: {v3}"
    );
    let reports = township_reports(&page, "WX-90").await?;
    ensure!(
        reports.len() == 1
            && reports[0]["critical_waiting"] == false
            && reports[0]["critical_withdrawn"] == true,
        "after the withdrawal: {reports:?}"
    );
    let html = reqwest::get(format!("{page}/")).await?.text().await?;
    ensure!(
        html.contains("data-withdrawn=\"true\"") && html.contains("data-waiting=\"0\""),
        "township page does not show the withdrawal: {html}"
    );

    // A preliminary critical value finalised unchanged: one alert, one version.
    send(&env, &gw, "KC-4", "WX-91", "F951", "6.9", "P")?;
    let other = wait_for(
        Duration::from_secs(30),
        "the second patient's alert",
        || async {
            Ok(township_reports(&page, "WX-91")
                .await?
                .into_iter()
                .find(|r| r["critical_waiting"] == true))
        },
    )
    .await?;
    send(&env, &gw, "KC-5", "WX-91", "F951", "6.9", "F")?;
    let exam91 = lab_exam_of(&hub, &labdoc, "WX-91").await?;
    wait_for(
        Duration::from_secs(30),
        "the final result at the hub",
        || async {
            let (_, lab) = call(
                Method::GET,
                &format!("{}/api/exams/{}/lab", hub.url, exam91["id"]),
                Some(&labdoc),
                None,
            )
            .await?;
            Ok((lab["order"]["results"][0]["status"] == "F").then_some(()))
        },
    )
    .await?;

    // Past the acknowledgement window: the withdrawn alert never escalates, and the
    // county's list tells the chain.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all = hub_alerts(&hub, &admin, false).await?;
    let chain = alerts_of(&all, "WX-90");
    ensure!(chain.len() == 3, "three versions on record: {all}");
    ensure!(
        chain.iter().all(|a| a["report_id"] == id.as_str()),
        "one alert: {all}"
    );
    let by_version = |v: i64| chain.iter().find(|a| a["version"] == v).copied();
    let (first, second, third) = (
        by_version(1).context("v1")?,
        by_version(2).context("v2")?,
        by_version(3).context("v3")?,
    );
    ensure!(
        first["superseded_at"].is_i64()
            && second["superseded_at"].is_i64()
            && third["withdrawn"] == true
            && third["superseded_at"].is_null(),
        "chain: {all}"
    );
    ensure!(
        chain.iter().all(|a| a["escalated_at"].is_null()),
        "a corrected alert escalated: {all}"
    );
    let finalised = alerts_of(&all, "WX-91");
    ensure!(
        finalised.len() == 1 && finalised[0]["report_id"] == other["report_id"],
        "P then F with the same value: {all}"
    );
    let open = hub_alerts(&hub, &admin, true).await?;
    ensure!(alerts_of(&open, "WX-90").is_empty(), "still open: {open}");
    ensure!(
        all["sites"][0]["withdrawn"] == 1 && all["sites"][0]["alerts"] == 2,
        "site figures: {all}"
    );

    // The signed lab report marks the corrected value and names the same order number.
    let exam = lab_exam_of(&hub, &labdoc, "WX-90").await?;
    let id90 = exam["id"].to_string();
    ensure!(
        exam["accession_number"] == "F950",
        "worklist order number: {exam}"
    );
    let (status, _) = call(
        Method::POST,
        &format!("{}/api/exams/{id90}/claim", hub.url),
        Some(&labdoc),
        None,
    )
    .await?;
    ensure!(status == 200, "claim: {status}");
    let content = json!({"comment": "检验科更正后血钾正常。", "conclusion": "血钾正常。"});
    let signed = sign_report(&hub.url, &labdoc, &id90, "lab", content, false).await?;
    let report_id = signed["report_id"].as_str().context("report id")?;
    let (_, report) = call(
        Method::GET,
        &format!("{}/api/reports/{report_id}", hub.url),
        Some(&labdoc),
        None,
    )
    .await?;
    let payload = &report["versions"][0]["payload"];
    let results = payload["content"]["results"].as_str().unwrap_or("");
    ensure!(
        results.contains("4.6") && results.contains("更正") && results.contains("7.4"),
        "corrected value not marked: {report}"
    );
    ensure!(
        payload["exam"]["accession_number"] == "F950",
        "report order number: {report}"
    );
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/reports/{report_id}/versions/1/pdf",
            hub.url
        ))
        .bearer_auth(&labdoc)
        .send()
        .await?;
    ensure!(resp.status() == 200, "PDF: {}", resp.status());
    let pdf = env.path("lab.pdf");
    std::fs::write(&pdf, resp.bytes().await?)?;
    let out = std::process::Command::new("/usr/bin/pdftotext")
        .args(["-enc", "UTF-8"])
        .arg(&pdf)
        .arg("-")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("F950") && text.contains("更正"),
        "PDF lacks the order number or the correction: {text}"
    );
    Ok(())
}
