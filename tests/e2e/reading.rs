//! The reading worklist and signed reports: priorities and deadlines, one claim winner,
//! preliminary by a junior and final by a senior, delivery to the township's gateway with
//! a verifiable signature, amendments, tampering, turnaround figures.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use formats::report::{decode_public_key, verify, ReportPayload, SignedReport, VerifyingKey};
use reqwest::Method;
use serde_json::{json, Value};
use storage::accounts::{Grade, Role, Specialty};
use tests::accounts::{create_user, person, reader};
use tests::{call, stow, Backend, Env, Hub};

use crate::{make_study, on_both_backends};

on_both_backends!(
    read_sign_deliver_amend,
    fifty_claims_one_winner,
    leases_reassignment_templates_and_live_updates
);

/// Store a generated study from a site's gateway and send its complete notice.
pub async fn ready_study(
    env: &Env,
    hub: &Hub,
    site: &str,
    salt: &str,
    priority: &str,
) -> Result<(String, String)> {
    let files = make_study(env, salt, 2, salt, &[]);
    let parts: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let (status, body) = stow(&hub.url, Some(site), &parts).await?;
    ensure!(status == 200, "store {salt}: {status} {body}");
    let study = tests::study_uid_of(&files[0])?;
    let key = env.accounts()?.key(site)?.to_string();
    let (status, exam) = call(
        Method::POST,
        &format!("{}/ingest/studies/{study}/complete", hub.url),
        Some(&key),
        Some(json!({"priority": priority, "instance_count": 2})),
    )
    .await?;
    ensure!(status == 200, "complete {salt}: {status} {exam}");
    Ok((study, exam["id"].to_string()))
}

/// The hub's published verification keys.
pub async fn hub_keys(hub: &Hub) -> Result<Vec<VerifyingKey>> {
    let (status, keys) = call(
        Method::GET,
        &format!("{}/api/signing-keys", hub.url),
        None,
        None,
    )
    .await?;
    ensure!(status == 200, "signing keys: {status}");
    keys.as_array()
        .context("key list")?
        .iter()
        .map(|k| {
            Ok(decode_public_key(
                k["public_key"].as_str().context("public_key")?,
            )?)
        })
        .collect()
}

fn signed_of(v: &Value) -> Result<SignedReport> {
    Ok(serde_json::from_value(
        v.get("signed").context("signed")?.clone(),
    )?)
}

pub async fn read_sign_deliver_amend(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let storage = env.storage().await?;
    let db = &storage.db;
    let jr = create_user(db, &reader("jr", &[Specialty::Radiology], Grade::Junior)).await?;
    let sr = create_user(db, &reader("sr", &[Specialty::Radiology], Grade::Senior)).await?;
    let card = create_user(db, &reader("card", &[Specialty::Cardiology], Grade::Senior)).await?;
    let clin_a = create_user(db, &person("clin-a", Role::Clinician, &["township-a"])).await?;
    let clin_b = create_user(db, &person("clin-b", Role::Clinician, &["township-b"])).await?;
    let gw_a = env.accounts()?.key("township-a")?.to_string();
    let gw_b = env.accounts()?.key("township-b")?.to_string();

    let (_, routine) = ready_study(&env, &hub, "township-a", "read-routine", "routine").await?;
    let (_, stat) = ready_study(&env, &hub, "township-a", "read-stat", "stat").await?;

    // The worklist: STAT first, deadlines from the targets, only for the specialty.
    let (status, list) = call(
        Method::GET,
        &format!("{}/api/worklist", hub.url),
        Some(&jr),
        None,
    )
    .await?;
    ensure!(status == 200, "worklist: {status} {list}");
    let rows = list.as_array().context("rows")?;
    ensure!(
        rows.len() == 2 && rows[0]["id"].as_i64().map(|i| i.to_string()).as_ref() == Some(&stat),
        "STAT first: {list}"
    );
    for (row, minutes) in [(&rows[0], 30), (&rows[1], 24 * 60)] {
        let deadline = row["deadline_at"].as_i64().context("deadline")?;
        let ready = row["ready_at"].as_i64().context("ready")?;
        ensure!(deadline - ready == minutes * 60_000, "deadline of {row}");
        ensure!(
            row["overdue"] == false && row["seconds_left"].as_i64() > Some(0),
            "{row}"
        );
    }
    let (_, list) = call(
        Method::GET,
        &format!("{}/api/worklist", hub.url),
        Some(&card),
        None,
    )
    .await?;
    ensure!(
        list.as_array().is_some_and(Vec::is_empty),
        "a cardiologist sees CTs: {list}"
    );

    // Claims: one holder at a time.
    let claim = |exam: &str, token: &str| {
        let url = format!("{}/api/exams/{exam}/claim", hub.url);
        let token = token.to_string();
        async move { call(Method::POST, &url, Some(&token), None).await }
    };
    let (status, held) = claim(&routine, &jr).await?;
    ensure!(
        status == 200 && held["outcome"] == "held",
        "junior claims: {status} {held}"
    );
    let (status, taken) = claim(&routine, &sr).await?;
    ensure!(
        status == 409 && taken["by"] == "jr",
        "second claim: {status} {taken}"
    );
    let (status, _) = claim(&routine, &card).await?;
    ensure!(
        status == 404,
        "another specialty's exam must look absent: {status}"
    );
    let body = json!({"template": "imaging", "content": {"findings": "x"}, "critical": false});
    let (status, _) = call(
        Method::PUT,
        &format!("{}/api/exams/{routine}/report/draft", hub.url),
        Some(&sr),
        Some(body),
    )
    .await?;
    ensure!(status == 409, "a non-holder saves a draft: {status}");

    // Junior: preliminary. A stale confirmation is refused.
    let findings = "双肺纹理清晰，未见明显实质性病变。纵隔居中，心影不大。";
    let content = json!({"findings": findings, "impression": "胸部CT平扫未见明显异常。"});
    let base = format!("{}/api/exams/{routine}/report", hub.url);
    let (status, _) = call(
        Method::PUT,
        &format!("{base}/draft"),
        Some(&jr),
        Some(json!({"template": "imaging", "content": content, "critical": false})),
    )
    .await?;
    ensure!(status == 200);
    let (status, stale) = call(
        Method::POST,
        &format!("{base}/sign"),
        Some(&jr),
        Some(json!({"confirm_sha256": "00"})),
    )
    .await?;
    ensure!(status == 409, "stale confirmation signed: {status} {stale}");
    let v1 = tests::sign_report(&hub.url, &jr, &routine, "imaging", content.clone(), false).await?;
    ensure!(
        v1["status"] == "preliminary" && v1["version"] == 1,
        "junior signs: {v1}"
    );
    let (status, _) = claim(&routine, &jr).await?;
    ensure!(status == 409, "a junior claims a preliminary");

    // Senior: reviews, corrects and signs the final.
    let (status, _) = claim(&routine, &sr).await?;
    ensure!(status == 200, "senior claims the preliminary");
    let corrected =
        json!({"findings": findings, "impression": "胸部CT平扫未见明显异常，建议随访。"});
    let v2 =
        tests::sign_report(&hub.url, &sr, &routine, "imaging", corrected.clone(), false).await?;
    ensure!(
        v2["status"] == "final" && v2["version"] == 2,
        "senior signs: {v2}"
    );

    // The township's gateway fetches it and can check it is authentic and unaltered.
    let keys = hub_keys(&hub).await?;
    let poll = |after: i64, wait: u64, key: &str| {
        let url = format!("{}/api/delivery?after={after}&wait={wait}", hub.url);
        let key = key.to_string();
        async move { call(Method::GET, &url, Some(&key), None).await }
    };
    let (status, got) = poll(0, 0, &gw_a).await?;
    ensure!(status == 200, "poll: {status} {got}");
    let items = got["items"].as_array().context("items")?;
    ensure!(
        items.len() == 1 && items[0]["version"] == 2,
        "only the final goes out: {got}"
    );
    let payload: ReportPayload = verify(&signed_of(&items[0])?, &keys)?;
    ensure!(payload.signer.username == "sr" && payload.exam.site == "township-a");
    ensure!(
        payload.preliminary_by.as_ref().map(|p| p.username.as_str()) == Some("jr"),
        "{payload:?}"
    );
    ensure!(
        payload.content.get("impression").map(String::as_str) == corrected["impression"].as_str()
    );
    let (_, other) = poll(0, 0, &gw_b).await?;
    ensure!(
        other["items"].as_array().is_some_and(Vec::is_empty),
        "township B got A's report: {other}"
    );
    let cursor = items[0]["cursor"].as_i64().context("cursor")?;
    let report_id = items[0]["report_id"]
        .as_str()
        .context("report id")?
        .to_string();
    let (status, _) = call(
        Method::POST,
        &format!("{}/api/delivery/ack", hub.url),
        Some(&gw_a),
        Some(json!({"cursor": cursor, "status": "stored"})),
    )
    .await?;
    ensure!(status == 204, "ack: {status}");

    // Long-poll: a STAT critical report arrives while the gateway waits.
    let waiting = {
        let url = format!("{}/api/delivery?after={cursor}&wait=20", hub.url);
        let key = gw_a.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            call(Method::GET, &url, Some(&key), None)
                .await
                .map(|r| (r, started.elapsed()))
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = claim(&stat, &sr).await?;
    ensure!(status == 200);
    let critical = json!({"findings": "右侧大量气胸。", "impression": "右侧张力性气胸，危急值。"});
    tests::sign_report(&hub.url, &sr, &stat, "imaging", critical, true).await?;
    let ((status, got), waited) = waiting.await??;
    ensure!(
        status == 200 && waited < Duration::from_secs(10),
        "long-poll: {status} after {waited:?}"
    );
    let item = &got["items"][0];
    ensure!(item["critical"] == true, "critical item: {got}");
    let (status, _) = call(
        Method::POST,
        &format!("{}/api/delivery/critical-ack", hub.url),
        Some(&gw_a),
        Some(json!({"report_id": item["report_id"], "version": item["version"], "acknowledged_by": "李医生"})),
    )
    .await?;
    ensure!(status == 204, "critical acknowledgement: {status}");
    let (_, stat_report) = call(
        Method::GET,
        &format!(
            "{}/api/reports/{}",
            hub.url,
            item["report_id"].as_str().context("id")?
        ),
        Some(&clin_a),
        None,
    )
    .await?;
    ensure!(
        stat_report["versions"][0]["critical_acknowledged_by"] == "李医生",
        "{stat_report}"
    );

    // Amendment: a new signed version referencing the final; both stay retrievable.
    let amend_url = format!("{}/api/reports/{report_id}/amend", hub.url);
    let amended = json!({"findings": findings, "impression": "胸部CT平扫：右肺上叶小结节（4mm），建议12个月随访。"});
    let body = json!({"content": amended, "reason": "复阅发现右肺上叶小结节"});
    let (status, _) = call(Method::POST, &amend_url, Some(&jr), Some(body.clone())).await?;
    ensure!(status == 403, "a junior amends: {status}");
    let (status, v3) = call(Method::POST, &amend_url, Some(&sr), Some(body)).await?;
    ensure!(
        status == 200 && v3["status"] == "amended" && v3["version"] == 3,
        "amend: {status} {v3}"
    );
    let v3_payload = verify(&signed_of(&v3)?, &keys)?;
    let v2_signed = signed_of(&v2)?;
    ensure!(
        v3_payload
            .supersedes
            .as_ref()
            .map(|s| (s.version, s.payload_sha256.clone()))
            == Some((2, formats::report::payload_sha256(&v2_signed.payload))),
        "amendment must reference the final: {v3_payload:?}"
    );
    ensure!(v3_payload.reason.as_deref() == Some("复阅发现右肺上叶小结节"));
    let (_, got) = poll(cursor, 0, &gw_a).await?;
    let versions: Vec<i64> = got["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|i| i["version"].as_i64())
        .collect();
    ensure!(
        versions.contains(&3),
        "the amendment goes to the township: {got}"
    );

    // Clinicians: their site's reports, every version verified.
    let (status, report) = call(
        Method::GET,
        &format!("{}/api/reports/{report_id}", hub.url),
        Some(&clin_a),
        None,
    )
    .await?;
    ensure!(status == 200, "clinician reads: {status} {report}");
    let vs = report["versions"].as_array().context("versions")?;
    ensure!(vs.len() == 3, "all versions: {report}");
    ensure!(
        vs.iter().all(|v| v["verification"]["state"] == "valid"),
        "verification: {report}"
    );
    ensure!(
        vs[1]["acknowledged_at"].is_i64(),
        "delivery time recorded: {}",
        vs[1]
    );
    let (status, _) = call(
        Method::GET,
        &format!("{}/api/reports/{report_id}", hub.url),
        Some(&clin_b),
        None,
    )
    .await?;
    ensure!(status == 404, "another site's clinician reads it: {status}");
    let (_, mine) = call(
        Method::GET,
        &format!("{}/api/reports", hub.url),
        Some(&clin_b),
        None,
    )
    .await?;
    ensure!(mine.as_array().is_some_and(Vec::is_empty), "{mine}");

    // FHIR R4 (validated by fhir.resources) and the printable PDF (Chinese text back
    // out with pdftotext) of the amended version.
    let (status, resource) = call(
        Method::GET,
        &format!("{}/api/reports/{report_id}/versions/3/fhir", hub.url),
        Some(&clin_a),
        None,
    )
    .await?;
    ensure!(
        status == 200 && resource["status"] == "amended",
        "FHIR: {status}"
    );
    let fhir_file = env.path("report.fhir.json");
    std::fs::write(&fhir_file, serde_json::to_vec(&resource)?)?;
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/py/fhir_check.py"))
        .arg(&fhir_file)
        .output()?;
    ensure!(
        out.status.success(),
        "FHIR validation failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/reports/{report_id}/versions/3/pdf",
            hub.url
        ))
        .bearer_auth(&clin_a)
        .send()
        .await?;
    ensure!(resp.status() == 200, "PDF: {}", resp.status());
    let pdf_file = env.path("report.pdf");
    std::fs::write(&pdf_file, resp.bytes().await?)?;
    let text = std::process::Command::new("/usr/bin/pdftotext")
        .args(["-enc", "UTF-8"])
        .arg(&pdf_file)
        .arg("-")
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    for expected in [
        "检查所见",
        "诊断意见",
        "右肺上叶小结节",
        "复阅发现右肺上叶小结节",
        "电子签名验证通过",
    ] {
        ensure!(
            text.contains(expected),
            "PDF text lacks {expected}:\n{text}"
        );
    }

    // A version altered in the database no longer verifies, and is shown as such.
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
            format!(
                "UPDATE report_versions SET payload = REPLACE(payload, '建议随访', '无需随访') \
                 WHERE report_id = '{report_id}' AND version = 2"
            ),
        ],
    )
    .await?;
    let (_, report) = call(
        Method::GET,
        &format!("{}/api/reports/{report_id}", hub.url),
        Some(&clin_a),
        None,
    )
    .await?;
    let v2_state = &report["versions"][1]["verification"];
    ensure!(
        v2_state["state"] == "invalid",
        "altered version still verifies: {v2_state}"
    );
    ensure!(report["versions"][2]["verification"]["state"] == "valid");

    // Turnaround on known times: A final after 10 min (deadline 1 h, met), delivered 30 s
    // later; S final after 40 min (deadline 30 min, missed), delivered 10 s later.
    let t0: i64 = 1_800_000_000_000;
    tests::run_sql(
        &env,
        &[
            format!(
                "UPDATE exams SET received_at = {t0}, final_at = {}, delivered_at = {}, deadline_at = {} WHERE id = {routine}",
                t0 + 600_000,
                t0 + 630_000,
                t0 + 3_600_000
            ),
            format!(
                "UPDATE exams SET received_at = {}, final_at = {}, delivered_at = {}, deadline_at = {} WHERE id = {stat}",
                t0 + 60_000,
                t0 + 60_000 + 2_400_000,
                t0 + 60_000 + 2_410_000,
                t0 + 60_000 + 1_800_000
            ),
        ],
    )
    .await?;
    let admin = env.accounts()?.admin.clone();
    let url = |by: &str| {
        format!(
            "{}/api/admin/turnaround?from={t0}&to={}&by={by}",
            hub.url,
            t0 + 86_400_000
        )
    };
    let (status, site) = call(Method::GET, &url("site"), Some(&admin), None).await?;
    ensure!(status == 200, "turnaround: {status} {site}");
    let g = &site["groups"][0];
    ensure!(
        g["key"] == "township-a" && g["exams"] == 2 && g["finals"] == 2,
        "{site}"
    );
    ensure!(
        g["received_to_final_p50_s"] == 600 && g["received_to_final_p90_s"] == 2400,
        "{g}"
    );
    ensure!(
        g["final_to_delivered_p50_s"] == 10 && g["final_to_delivered_p90_s"] == 30,
        "{g}"
    );
    ensure!(
        g["met_deadline"] == 1 && g["deadline_compliance"] == 0.5,
        "{g}"
    );
    let (_, by_priority) = call(Method::GET, &url("priority"), Some(&admin), None).await?;
    let keys: Vec<&str> = by_priority["groups"]
        .as_array()
        .context("groups")?
        .iter()
        .filter_map(|g| g["key"].as_str())
        .collect();
    ensure!(keys == ["routine", "stat"], "{by_priority}");
    let (_, by_reader) = call(Method::GET, &url("reader"), Some(&admin), None).await?;
    ensure!(by_reader["groups"][0]["key"] == "user:sr", "{by_reader}");
    let (status, _) = call(Method::GET, &url("site"), Some(&sr), None).await?;
    ensure!(status == 403, "a reader reads turnaround");
    Ok(())
}

pub async fn fifty_claims_one_winner(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let first = Hub::start(&env, "hub-1", 0)?;
    // With PostgreSQL, claims race through two hub processes on one database.
    let second = match backend {
        Backend::PostgresS3 => Some(Hub::start(&env, "hub-2", 0)?),
        Backend::SqliteLocal => None,
    };
    let (_, exam) = ready_study(&env, &first, "township-a", "claims", "routine").await?;
    let storage = env.storage().await?;
    let mut tokens = Vec::new();
    for n in 0..50 {
        tokens.push(
            create_user(
                &storage.db,
                &reader(&format!("r{n}"), &[Specialty::Radiology], Grade::Junior),
            )
            .await?,
        );
    }
    let attempts = tokens.into_iter().enumerate().map(|(n, token)| {
        let hub = match (&second, n % 2) {
            (Some(h), 1) => h.url.clone(),
            _ => first.url.clone(),
        };
        let url = format!("{hub}/api/exams/{exam}/claim");
        tokio::spawn(async move { call(Method::POST, &url, Some(&token), None).await })
    });
    let mut winners = 0;
    let mut losers = 0;
    for a in attempts.collect::<Vec<_>>() {
        let (status, body) = a.await??;
        match status.as_u16() {
            200 => winners += 1,
            409 => losers += 1,
            other => anyhow::bail!("claim answered {other}: {body}"),
        }
    }
    ensure!(
        winners == 1 && losers == 49,
        "{winners} winners, {losers} refused"
    );
    Ok(())
}

pub async fn leases_reassignment_templates_and_live_updates(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let storage = env.storage().await?;
    let a = create_user(
        &storage.db,
        &reader("a", &[Specialty::Radiology], Grade::Junior),
    )
    .await?;
    let b = create_user(
        &storage.db,
        &reader("b", &[Specialty::Radiology], Grade::Senior),
    )
    .await?;
    let admin = env.accounts()?.admin.clone();

    // Live updates: a worklist screen hears about a change within seconds.
    let resp = reqwest::Client::new()
        .get(format!("{}/api/worklist/events", hub.url))
        .bearer_auth(&a)
        .send()
        .await?;
    ensure!(resp.status() == 200, "events: {}", resp.status());
    let mut stream = resp.bytes_stream();
    let (_, exam) = ready_study(&env, &hub, "township-a", "lease", "urgent").await?;
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        let mut seen = String::new();
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk?));
            if seen.contains("event: worklist") {
                return Ok::<_, anyhow::Error>(seen);
            }
        }
        anyhow::bail!("stream ended: {seen}")
    })
    .await
    .context("no worklist event within 10 s")??;
    ensure!(heard.contains("changed_at"), "{heard}");

    // Urgent: a 2-hour deadline.
    let (_, list) = call(
        Method::GET,
        &format!("{}/api/worklist?priority=urgent", hub.url),
        Some(&a),
        None,
    )
    .await?;
    let row = &list[0];
    ensure!(row["priority"] == "urgent", "{list}");
    ensure!(
        row["deadline_at"]
            .as_i64()
            .zip(row["ready_at"].as_i64())
            .map(|(d, r)| d - r)
            == Some(7_200_000)
    );

    // An expired lease frees the exam.
    let claim_url = format!("{}/api/exams/{exam}/claim", hub.url);
    ensure!(call(Method::POST, &claim_url, Some(&a), None).await?.0 == 200);
    ensure!(call(Method::POST, &claim_url, Some(&b), None).await?.0 == 409);
    ensure!(
        call(
            Method::POST,
            &format!("{}/api/exams/{exam}/renew", hub.url),
            Some(&a),
            None
        )
        .await?
        .0 == 200
    );
    tests::run_sql(
        &env,
        &[format!(
            "UPDATE exams SET claimed_until = 1 WHERE id = {exam}"
        )],
    )
    .await?;
    ensure!(
        call(Method::POST, &claim_url, Some(&b), None).await?.0 == 200,
        "expired lease still holds"
    );
    // The holder releases it; an admin reassigns it.
    ensure!(
        call(
            Method::POST,
            &format!("{}/api/exams/{exam}/release", hub.url),
            Some(&b),
            None
        )
        .await?
        .0 == 204
    );
    let (status, body) = call(
        Method::POST,
        &format!("{}/api/admin/exams/{exam}/assign", hub.url),
        Some(&admin),
        Some(json!({"username": "a"})),
    )
    .await?;
    ensure!(
        status == 200 && body["outcome"] == "held",
        "assign: {status} {body}"
    );
    let (_, list) = call(
        Method::GET,
        &format!("{}/api/worklist", hub.url),
        Some(&b),
        None,
    )
    .await?;
    ensure!(list[0]["claimed_by"] == "a", "{list}");

    // Admins edit templates; readers see them.
    let template = json!({
        "id": "ignored", "kind": "imaging", "modality": "CT", "name": "CT 胸部",
        "fields": [{"key": "findings", "label_zh": "检查所见", "label_en": "Findings", "multiline": true},
                   {"key": "impression", "label_zh": "诊断意见", "label_en": "Impression", "multiline": true},
                   {"key": "advice", "label_zh": "建议", "label_en": "Advice", "multiline": false}]
    });
    let url = format!("{}/api/admin/templates/ct-chest", hub.url);
    ensure!(
        call(Method::PUT, &url, Some(&b), Some(template.clone()))
            .await?
            .0
            == 403,
        "a reader edits templates"
    );
    let (status, body) = call(Method::PUT, &url, Some(&admin), Some(template)).await?;
    ensure!(status == 200, "template: {status} {body}");
    let (_, templates) = call(
        Method::GET,
        &format!("{}/api/templates?kind=imaging", hub.url),
        Some(&a),
        None,
    )
    .await?;
    ensure!(
        templates[0]["id"] == "ct-chest" && templates[0]["fields"][2]["label_zh"] == "建议",
        "{templates}"
    );

    // Admins change the deadlines at run time; exams ready afterwards get the new ones.
    let url = format!("{}/api/admin/deadlines", hub.url);
    let targets = json!({"stat_minutes": 15, "urgent_minutes": 60, "routine_minutes": 480,
                         "by_kind": {"imaging": {"urgent_minutes": 45}}});
    ensure!(
        call(Method::PUT, &url, Some(&b), Some(targets.clone()))
            .await?
            .0
            == 403,
        "a reader changes deadlines"
    );
    for bad in [
        json!({"stat_minutes": 0, "urgent_minutes": 60, "routine_minutes": 480}),
        json!({"stat_minutes": 15, "urgent_minutes": 60, "routine_minutes": 480,
               "by_kind": {"xray": {"stat_minutes": 5}}}),
    ] {
        let (status, body) = call(Method::PUT, &url, Some(&admin), Some(bad)).await?;
        ensure!(
            status == 400 && body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "bad deadlines: {status} {body}"
        );
    }
    let (status, body) = call(Method::PUT, &url, Some(&admin), Some(targets)).await?;
    ensure!(status == 200, "deadlines: {status} {body}");
    let (_, now) = call(Method::GET, &url, Some(&admin), None).await?;
    ensure!(
        now["stat_minutes"] == 15 && now["by_kind"]["imaging"]["urgent_minutes"] == 45,
        "{now}"
    );
    for (salt, priority, minutes) in [("dl-stat", "stat", 15), ("dl-urgent", "urgent", 45)] {
        let (_, id) = ready_study(&env, &hub, "township-a", salt, priority).await?;
        let (_, exam) = call(
            Method::GET,
            &format!("{}/api/exams/{id}", hub.url),
            Some(&a),
            None,
        )
        .await?;
        let span = exam["deadline_at"]
            .as_i64()
            .with_context(|| format!("deadline: {exam}"))?
            - exam["ready_at"].as_i64().context("ready")?;
        ensure!(span == minutes * 60_000, "{priority}: {exam}");
    }
    Ok(())
}
