//! County diagnoses, township treats: a CT sent by storescu to the township gateway is
//! read at the county (preliminary by a junior, final by a senior), and the signed report
//! comes back to the gateway, which verifies it, keeps it and prints it; amendments follow,
//! a report altered on the way is refused, a critical finding is acknowledged.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use storage::accounts::{Grade, Specialty};
use tests::accounts::{create_user, reader};
use tests::{call, wait_for, Backend, Env, Gateway, Hub};

use crate::{make_study, on_both_backends};

on_both_backends!(township_to_county_and_back);

/// The exam id of a study once it is on the worklist.
async fn exam_on_worklist(hub: &Hub, token: &str, study: &str) -> Result<String> {
    wait_for(
        Duration::from_secs(60),
        "the exam on the worklist",
        || async {
            let (_, list) = call(
                Method::GET,
                &format!("{}/api/worklist", hub.url),
                Some(token),
                None,
            )
            .await?;
            Ok(list
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["study_uid"] == study))
                .map(|r| r["id"].to_string()))
        },
    )
    .await
}

/// Claim, write, confirm and sign.
async fn sign(hub: &Hub, token: &str, exam: &str, content: Value, critical: bool) -> Result<Value> {
    let (status, c) = call(
        Method::POST,
        &format!("{}/api/exams/{exam}/claim", hub.url),
        Some(token),
        None,
    )
    .await?;
    ensure!(status == 200, "claim: {status} {c}");
    tests::sign_report(&hub.url, token, exam, "imaging", content, critical).await
}

/// The gateway's record of a report, once it has the given version.
async fn at_township(page: &str, report_id: &str, version: i64) -> Result<Value> {
    let url = format!("{page}/api/reports/{report_id}");
    wait_for(
        Duration::from_secs(30),
        "the report at the township",
        || async {
            let (status, body) = call(Method::GET, &url, None, None).await?;
            let has = status == 200
                && body["versions"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(|v| v["version"] == version));
            Ok(has.then_some(body))
        },
    )
    .await
}

pub async fn township_to_county_and_back(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let mut gw = Gateway::start(&env, "gw", &hub.url, "township-a")?;
    let page = gw.reports.clone().context("the gateway's report page")?;
    let storage = env.storage().await?;
    let jr = create_user(
        &storage.db,
        &reader("jr", &[Specialty::Radiology], Grade::Junior),
    )
    .await?;
    let sr = create_user(
        &storage.db,
        &reader("sr", &[Specialty::Radiology], Grade::Senior),
    )
    .await?;

    // The technician sends a CT with storescu; it reaches the county worklist.
    let files = make_study(&env, "ct", 3, "round-trip", &[]);
    gw.storescu(&[], &files)?;
    let study = tests::study_uid_of(&files[0])?;
    let exam = exam_on_worklist(&hub, &jr, &study).await?;

    // Junior preliminary, senior final.
    let findings = "右肺下叶见斑片状高密度影，边界模糊。";
    sign(
        &hub,
        &jr,
        &exam,
        json!({"findings": findings, "impression": "右肺下叶炎症可能。"}),
        false,
    )
    .await?;
    let final_ = sign(
        &hub,
        &sr,
        &exam,
        json!({"findings": findings, "impression": "右肺下叶肺炎。"}),
        false,
    )
    .await?;
    let report_id = final_["report_id"]
        .as_str()
        .context("report id")?
        .to_string();

    // The township has it, verified, with the content, and prints it.
    let there = at_township(&page, &report_id, 2).await?;
    let v2 = &there["versions"].as_array().context("versions")?[0];
    ensure!(v2["verified"] == true && v2["status"] == "final", "{there}");
    ensure!(v2["content"]["impression"] == "右肺下叶肺炎。", "{v2}");
    let pdf_url = wait_for(
        Duration::from_secs(30),
        "the PDF at the township",
        || async {
            let (_, body) = call(
                Method::GET,
                &format!("{page}/api/reports/{report_id}"),
                None,
                None,
            )
            .await?;
            Ok(body["versions"][0]["pdf_url"].as_str().map(str::to_string))
        },
    )
    .await?;
    let pdf = reqwest::get(format!("{page}{pdf_url}"))
        .await?
        .bytes()
        .await?;
    ensure!(pdf.starts_with(b"%PDF-"), "township PDF");
    // The hub knows it was delivered.
    let (_, at_hub) = call(
        Method::GET,
        &format!("{}/api/reports/{report_id}", hub.url),
        Some(&sr),
        None,
    )
    .await?;
    ensure!(at_hub["versions"][1]["ack_status"] == "stored", "{at_hub}");

    // An amendment reaches the township; both versions stay there.
    let (status, v3) = call(
        Method::POST,
        &format!("{}/api/reports/{report_id}/amend", hub.url),
        Some(&sr),
        Some(json!({"content": {"findings": findings, "impression": "右肺下叶肺炎，建议抗感染治疗后复查。"},
                    "reason": "补充治疗建议"})),
    )
    .await?;
    ensure!(status == 200, "amend: {status} {v3}");
    let there = at_township(&page, &report_id, 3).await?;
    ensure!(there["current_version"] == 3, "{there}");
    let versions = there["versions"].as_array().context("versions")?;
    ensure!(
        versions.len() == 2 && versions.iter().all(|v| v["verified"] == true),
        "{there}"
    );

    // A report altered after signing (here in the hub's database, as on the wire) is
    // refused by the township: kept aside, never shown as valid, the hub told why.
    gw.proc.stop();
    let files = make_study(&env, "ct2", 1, "round-trip-2", &[]);
    let parts = vec![std::fs::read(&files[0])?];
    let (status, _) = tests::stow(&hub.url, Some("township-a"), &parts).await?;
    ensure!(status == 200);
    let study2 = tests::study_uid_of(&files[0])?;
    let key = env.accounts()?.key("township-a")?.to_string();
    call(
        Method::POST,
        &format!("{}/ingest/studies/{study2}/complete", hub.url),
        Some(&key),
        Some(json!({"priority": "routine", "instance_count": 1})),
    )
    .await?;
    let exam2 = exam_on_worklist(&hub, &sr, &study2).await?;
    let forged = sign(
        &hub,
        &sr,
        &exam2,
        json!({"findings": "未见异常。", "impression": "正常。"}),
        false,
    )
    .await?;
    let forged_id = forged["report_id"]
        .as_str()
        .context("report id")?
        .to_string();
    let unlock = match backend {
        Backend::SqliteLocal => "DROP TRIGGER report_versions_no_update".to_string(),
        Backend::PostgresS3 => {
            "ALTER TABLE report_versions DISABLE TRIGGER report_versions_no_change".to_string()
        }
    };
    tests::run_sql(
        &env,
        &[
            unlock,
            format!("UPDATE report_versions SET payload = REPLACE(payload, '正常。', '异常。') WHERE report_id = '{forged_id}'"),
        ],
    )
    .await?;
    gw = Gateway::restart(&env, "gw", &gw.config)?;
    let page = gw.reports.clone().context("page after restart")?;
    let refused = at_township(&page, &forged_id, 1).await?;
    let v = &refused["versions"][0];
    ensure!(
        v["verified"] == false && v["content"].is_null(),
        "forged report shown as valid: {refused}"
    );
    ensure!(
        v["verify_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    let rejected = wait_for(
        Duration::from_secs(30),
        "the hub to hear of the refusal",
        || async {
            let (_, r) = call(
                Method::GET,
                &format!("{}/api/reports/{forged_id}", hub.url),
                Some(&sr),
                None,
            )
            .await?;
            Ok((r["versions"][0]["ack_status"] == "rejected").then_some(r))
        },
    )
    .await?;
    ensure!(rejected["versions"][0]["verification"]["state"] == "invalid");

    // A critical finding: shown at the township until a clinician acknowledges it there;
    // the county sees who and when.
    let files = make_study(&env, "ct3", 1, "round-trip-3", &[]);
    let (status, _) =
        tests::stow(&hub.url, Some("township-a"), &[std::fs::read(&files[0])?]).await?;
    ensure!(status == 200);
    let study3 = tests::study_uid_of(&files[0])?;
    call(
        Method::POST,
        &format!("{}/ingest/studies/{study3}/complete", hub.url),
        Some(&key),
        Some(json!({"priority": "stat", "instance_count": 1})),
    )
    .await?;
    let exam3 = exam_on_worklist(&hub, &sr, &study3).await?;
    let critical = sign(
        &hub,
        &sr,
        &exam3,
        json!({"findings": "左侧大量气胸。", "impression": "张力性气胸。"}),
        true,
    )
    .await?;
    let critical_id = critical["report_id"].as_str().context("id")?.to_string();
    let there = at_township(&page, &critical_id, 1).await?;
    ensure!(there["versions"][0]["critical"] == true, "{there}");
    let (_, list) = call(Method::GET, &format!("{page}/api/reports"), None, None).await?;
    ensure!(
        list["reports"][0]["report_id"] == critical_id.as_str(),
        "critical first: {list}"
    );
    ensure!(list["reports"][0]["critical_waiting"] == true, "{list}");
    let (status, ack) = call(
        Method::POST,
        &format!("{page}/api/reports/{critical_id}/versions/1/acknowledge"),
        None,
        Some(json!({"name": "赵医生"})),
    )
    .await?;
    ensure!(status.is_success(), "acknowledge: {status} {ack}");
    wait_for(
        Duration::from_secs(30),
        "the acknowledgement at the county",
        || async {
            let (_, r) = call(
                Method::GET,
                &format!("{}/api/reports/{critical_id}", hub.url),
                Some(&sr),
                None,
            )
            .await?;
            Ok((r["versions"][0]["critical_acknowledged_by"] == "赵医生").then_some(()))
        },
    )
    .await?;
    Ok(())
}
