//! The township page: a technician sees what the gateway sent, what the county refused
//! and why, and the report that came back for the sent study, in Chinese by default and
//! in English by the switch; the same as JSON (`/api/outbox`, `/api/reports`).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use storage::accounts::{Grade, Specialty};
use tests::accounts::{create_user, reader};
use tests::{call, wait_for, Backend, Env, Gateway, Hub};

use crate::{make_study, on_both_backends};

on_both_backends!(township_page_shows_sent_rejected_and_read);

/// As the page escapes text (the reason comes from the hub).
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page's HTML in a language (`None`: the default).
async fn page_html(page: &str, lang: Option<&str>) -> Result<String> {
    let url = match lang {
        Some(lang) => format!("{page}/?lang={lang}"),
        None => format!("{page}/"),
    };
    let r = reqwest::get(&url).await?;
    ensure!(r.status() == 200, "{url}: {}", r.status());
    Ok(r.text().await?)
}

/// The imaging lane's entry for a study once the hub has stored `count` instances of it.
fn sent_study<'a>(outbox: &'a Value, study: &str, count: i64) -> Option<&'a Value> {
    outbox["imaging"]["recent_sent"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == study && s["sent"] == count)
}

pub async fn township_page_shows_sent_rejected_and_read(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let gw = Gateway::start(&env, "gw", &hub.url, "township-a")?;
    let page = gw.reports.clone().context("the township page")?;
    let storage = env.storage().await?;
    let sr = create_user(
        &storage.db,
        &reader("sr", &[Specialty::Radiology], Grade::Senior),
    )
    .await?;

    // A CT of two instances goes through the gateway.
    let files = make_study(&env, "ct", 2, "township-sent", &[]);
    gw.storescu(&[], &files)?;
    let study = tests::study_uid_of(&files[0])?;
    // Another file under a SOP Instance UID the county already holds with other content
    // (same UIDs, another modality): the hub refuses it and the gateway quarantines it.
    let original = make_study(&env, "conflict-a", 1, "township-conflict", &[]);
    let (status, _) = tests::stow(
        &hub.url,
        Some("township-a"),
        &[std::fs::read(&original[0])?],
    )
    .await?;
    ensure!(status == 200, "direct STOW: {status}");
    let conflicting = make_study(
        &env,
        "conflict-b",
        1,
        "township-conflict",
        &["--modality", "MR"],
    );
    gw.storescu(&[], &conflicting)?;
    let conflict_study = tests::study_uid_of(&conflicting[0])?;

    // The outbox shows the study sent and the refused instance with the hub's reason.
    let outbox_url = format!("{page}/api/outbox");
    let outbox = wait_for(
        Duration::from_secs(60),
        "the sent study and the rejected instance in /api/outbox",
        || async {
            let (_, outbox) = call(Method::GET, &outbox_url, None, None).await?;
            let rejected = outbox["imaging"]["rejected_items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["study_uid"] == conflict_study));
            Ok((sent_study(&outbox, &study, 2).is_some() && rejected).then_some(outbox))
        },
    )
    .await?;
    let lane = &outbox["imaging"];
    ensure!(lane["unit"] == "instance", "{lane}");
    ensure!(
        lane["sent"].as_i64() >= Some(2) && lane["rejected"].as_i64() >= Some(1),
        "{lane}"
    );
    let sent = sent_study(&outbox, &study, 2).context("sent study")?;
    ensure!(
        sent["patient_id"].as_str().is_some(),
        "patient kept: {sent}"
    );
    ensure!(sent["report"].is_null(), "not read yet: {sent}");
    let rejected = lane["rejected_items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["study_uid"] == conflict_study))
        .context("rejected item")?
        .clone();
    ensure!(rejected["source"] == "hub", "{rejected}");
    let reason = rejected["reason"]
        .as_str()
        .filter(|r| !r.is_empty())
        .context("a reason")?
        .to_string();
    for lane in ["lab", "ecg"] {
        ensure!(outbox[lane]["waiting"] == 0, "{lane}: {outbox}");
    }

    // The county reads the study; the report comes back and the study shows as read.
    let exam = wait_for(
        Duration::from_secs(60),
        "the exam on the worklist",
        || async {
            let (_, list) = call(
                Method::GET,
                &format!("{}/api/worklist", hub.url),
                Some(&sr),
                None,
            )
            .await?;
            Ok(list
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["study_uid"] == study.as_str()))
                .map(|r| r["id"].to_string()))
        },
    )
    .await?;
    let (status, claim) = call(
        Method::POST,
        &format!("{}/api/exams/{exam}/claim", hub.url),
        Some(&sr),
        None,
    )
    .await?;
    ensure!(status == 200, "claim: {status} {claim}");
    let signed = tests::sign_report(
        &hub.url,
        &sr,
        &exam,
        "imaging",
        json!({"findings": "双肺纹理清晰。", "impression": "胸部CT未见异常。"}),
        false,
    )
    .await?;
    let report_id = signed["report_id"]
        .as_str()
        .context("report id")?
        .to_string();
    let outbox = wait_for(
        Duration::from_secs(60),
        "the report on the sent study",
        || async {
            let (_, outbox) = call(Method::GET, &outbox_url, None, None).await?;
            let read = sent_study(&outbox, &study, 2)
                .is_some_and(|s| s["report"]["report_id"] == report_id.as_str());
            Ok(read.then_some(outbox))
        },
    )
    .await?;
    let read = &sent_study(&outbox, &study, 2).context("sent study")?["report"];
    ensure!(read["status"] == "final", "{read}");
    ensure!(
        read["view_url"] == format!("/reports/{report_id}").as_str(),
        "{read}"
    );
    let (_, reports) = call(Method::GET, &format!("{page}/api/reports"), None, None).await?;
    ensure!(
        reports["reports"][0]["report_id"] == report_id.as_str(),
        "{reports}"
    );

    // The page, Chinese by default: the sections, the sent study, the reason, the report.
    let zh = page_html(&page, None).await?;
    for needle in [
        "<html lang=\"zh-CN\">".to_string(),
        "id=\"alerts\"".into(),
        "id=\"outbox\"".into(),
        "id=\"reports\"".into(),
        format!("data-report-id=\"{report_id}\""),
        format!("data-item-id=\"{study}\""),
        esc(&reason),
        "发送队列".into(),
        "已发送".into(),
        "被拒收".into(),
        "县级平台拒收".into(),
        "收到的报告".into(),
        "正式报告".into(),
    ] {
        ensure!(zh.contains(&needle), "{needle} missing from the page: {zh}");
    }
    // English by the switch, with the same data.
    let en = page_html(&page, Some("en")).await?;
    for needle in [
        "<html lang=\"en\">".to_string(),
        format!("data-report-id=\"{report_id}\""),
        format!("data-item-id=\"{study}\""),
        esc(&reason),
        "Outbox".into(),
        "Sent".into(),
        "Rejected".into(),
        "rejected by the county".into(),
        "Received reports".into(),
        "Final".into(),
    ] {
        ensure!(en.contains(&needle), "{needle} missing from the page: {en}");
    }
    ensure!(
        !en.contains("发送队列"),
        "a Chinese label on the English page"
    );
    Ok(())
}
