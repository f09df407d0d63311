//! Reports from the county: pulled from a stand-in of the hub's delivery feed, verified,
//! kept, acknowledged and shown on the local page; critical findings acknowledged and
//! relayed.

use std::time::Duration;

use formats::report::{self, ExamRef, ReportPayload, ReportStatus, Signer, SigningKey, Supersedes};
use serde_json::Value;
use sqlx::Row;

use crate::helpers::*;
use crate::report_hub::*;
use crate::tls_support::{TestCa, TestHub};

const SITE: &str = "township-a";

fn payload(k: &SigningKey, report_id: &str, version: i64) -> ReportPayload {
    ReportPayload {
        format: report::FORMAT.into(),
        report_id: report_id.into(),
        version,
        status: ReportStatus::Final,
        supersedes: None,
        reason: None,
        exam: ExamRef {
            exam_id: 42,
            kind: "imaging".into(),
            site: SITE.into(),
            patient_id: Some("PID-0042".into()),
            patient_name: Some("张三<script>alert(1)</script>".into()),
            study_uid: Some("1.2.826.0.1.3680043.2.1125.1".into()),
            accession_number: Some("ACC-7".into()),
            modality: Some("CT".into()),
        },
        template: "imaging".into(),
        content: [
            (
                "findings".to_string(),
                "双肺纹理清晰，未见实质性病变。".to_string(),
            ),
            ("impression".to_string(), "胸部CT未见异常。".to_string()),
        ]
        .into(),
        critical: false,
        preliminary_by: None,
        signer: Signer {
            username: "wang".into(),
            display_name: "王医生".into(),
            grade: "senior".into(),
            signed_at_ms: 1_717_000_000_000,
        },
        key_id: report::key_id(&k.verifying_key()),
    }
}

fn amendment(k: &SigningKey, previous: &ReportPayload, reason: &str) -> ReportPayload {
    let previous_text = report::canonical_payload(previous).expect("canonical");
    let mut p = previous.clone();
    p.version = previous.version + 1;
    p.status = ReportStatus::Amended;
    p.supersedes = Some(Supersedes {
        version: previous.version,
        payload_sha256: report::payload_sha256(&previous_text),
    });
    p.reason = Some(reason.into());
    p.content
        .insert("impression".into(), "右肺下叶小结节，建议随访。".into());
    p.signer.signed_at_ms += 3_600_000;
    p.key_id = report::key_id(&k.verifying_key());
    p
}

async fn start_gateway(hub: &ReportHub) -> TestApp {
    let url = hub.url();
    TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = REPORT_HUB_KEY.into();
        c.site = SITE.into();
    })
    .await
}

fn page_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    page_client()
        .get(format!("{}{path}", app.reports_url()))
        .send()
        .await
        .expect("page answers")
}

async fn get_text(app: &TestApp, path: &str) -> (u16, String) {
    let r = get(app, path).await;
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let r = get(app, path).await;
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().await.expect("json")
}

async fn wait_for_ack(hub: &ReportHub, cursor: i64) -> Value {
    eventually(Duration::from_secs(20), "the hub got the ack", || async {
        !hub.acks_for(cursor).is_empty()
    })
    .await;
    hub.acks_for(cursor).remove(0)
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(app.gateway().outbox().pool())
        .await
        .expect("query")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_is_pulled_verified_stored_acked_and_shown() {
    let hub = ReportHub::start().await;
    let k = signing_key(21);
    hub.publish(&k.verifying_key());
    let app = start_gateway(&hub).await;
    let p = payload(&k, "RPT-1", 1);
    let cursor = hub.deliver(&report::sign(&p, &k).expect("sign"), &p);

    let ack = wait_for_ack(&hub, cursor).await;
    assert_eq!(
        ack,
        serde_json::json!({"cursor": cursor, "status": "stored"})
    );
    // Acked only once durable: the row is there, verified, with the text as signed.
    let row = sqlx::query(
        "SELECT verified, payload, patient_name, study_uid, accession_number, modality, exam_kind
         FROM report_versions WHERE report_id = 'RPT-1' AND version = 1",
    )
    .fetch_one(app.gateway().outbox().pool())
    .await
    .expect("stored row");
    assert_eq!(row.get::<i64, _>(0), 1);
    assert_eq!(
        row.get::<String, _>(1),
        report::canonical_payload(&p).expect("canonical")
    );
    assert_eq!(row.get::<String, _>(2), "张三<script>alert(1)</script>");
    assert_eq!(row.get::<String, _>(3), "1.2.826.0.1.3680043.2.1125.1");
    assert_eq!(row.get::<String, _>(4), "ACC-7");
    assert_eq!(row.get::<String, _>(5), "CT");
    assert_eq!(row.get::<String, _>(6), "imaging");
    assert_eq!(
        hub.key_requests(),
        1,
        "keys fetched once, for the first unknown key id"
    );
    assert_eq!(
        hub.unauthorized(),
        0,
        "every request carried the gateway key"
    );

    // The PDF was fetched and kept under reports/.
    let pdf_file = app.data_dir().join("reports/RPT-1-v1.pdf");
    eventually(Duration::from_secs(10), "PDF on disk", || async {
        pdf_file.exists()
    })
    .await;

    // The list page: Chinese, UTF-8, escaped, with links.
    let r = get(&app, "/").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("ascii"),
        "text/html; charset=utf-8"
    );
    assert!(r.headers().contains_key("content-security-policy"));
    let html = r.text().await.expect("body");
    assert!(html.contains("<html lang=\"zh-CN\">"), "{html}");
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(
        html.contains("张三&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "nothing from the hub is markup");
    assert!(html.contains("签名有效"));
    assert!(html.contains("href=\"/reports/RPT-1\""));
    assert!(html.contains("href=\"/reports/RPT-1/versions/1/pdf\""));
    // The township page's hooks, the outbox beside the reports, the refresh script.
    for hook in [
        "id=\"alerts\"",
        "id=\"outbox\"",
        "id=\"reports\"",
        "data-report-id=\"RPT-1\"",
        "data-lane=\"imaging\"",
        "src=\"/township.js\"",
    ] {
        assert!(html.contains(hook), "{hook}: {html}");
    }
    assert!(html.contains("发送队列") && html.contains("收到的报告"));
    assert!(html.contains("正式报告"), "status in Chinese");
    let r = get(&app, "/township.js").await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.expect("js").contains("setInterval"));
    // English by the switch, remembered in a cookie; Chinese again by the other switch.
    let r = get(&app, "/?lang=en").await;
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(cookie.starts_with("lang=en"), "{cookie}");
    let english = r.text().await.expect("body");
    assert!(english.contains("<html lang=\"en\">"));
    assert!(english.contains("Outbox") && english.contains("Received reports"));
    assert!(
        english.contains(">Final<") || english.contains("Final ·"),
        "{english}"
    );
    assert!(
        !english.contains("发送队列"),
        "no Chinese label left: {english}"
    );
    assert!(english.contains("href=\"?lang=zh\""));
    let remembered = page_client()
        .get(format!("{}/", app.reports_url()))
        .header("cookie", "lang=en")
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(remembered.contains("<html lang=\"en\">"));
    let outbox = get_json(&app, "/api/outbox").await;
    for lane in ["imaging", "lab", "ecg"] {
        for field in [
            "waiting",
            "sent",
            "rejected",
            "recent_sent",
            "rejected_items",
        ] {
            assert!(!outbox[lane][field].is_null(), "{lane}.{field}: {outbox}");
        }
    }

    let (status, view) = get_text(&app, "/reports/RPT-1").await;
    assert_eq!(status, 200);
    assert!(view.contains("双肺纹理清晰，未见实质性病变。"), "{view}");
    assert!(view.contains("当前有效版本：第1版"), "{view}");
    assert!(view.contains("王医生"));
    assert!(!view.contains("<script>"));

    let r = get(&app, "/reports/RPT-1/versions/1/pdf").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert!(r.bytes().await.expect("pdf").starts_with(b"%PDF-"));
    let (status, _) = get_text(&app, "/reports/RPT-1/versions/7/pdf").await;
    assert_eq!(status, 404);
    let (status, _) = get_text(&app, "/reports/NOPE").await;
    assert_eq!(status, 404);

    let list = get_json(&app, "/api/reports").await;
    let reports = list["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["report_id"], "RPT-1");
    assert_eq!(reports[0]["verified"], true);
    assert_eq!(reports[0]["current_version"], 1);
    assert_eq!(reports[0]["exam"]["patient_id"], "PID-0042");
    assert_eq!(reports[0]["pdf_url"], "/reports/RPT-1/versions/1/pdf");
    let detail = get_json(&app, "/api/reports/RPT-1").await;
    assert_eq!(detail["current_version"], 1);
    assert_eq!(
        detail["versions"][0]["content"]["impression"],
        "胸部CT未见异常。"
    );
    assert_eq!(detail["versions"][0]["verified"], true);

    let status = app.status_cli(false).await;
    assert!(
        status.contains("reports: 1 received (1 reports)"),
        "{status}"
    );
    assert!(status.contains(&format!("cursor {cursor}")), "{status}");
    assert!(status.contains("rejected: 0"), "{status}");
    assert!(status.contains("last delivery error: none"), "{status}");
    assert!(
        status.contains(&format!("local page: {}", app.reports_url())),
        "{status}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_and_unknown_key_reports_are_rejected_kept_aside_and_never_shown_as_valid() {
    let hub = ReportHub::start().await;
    let k = signing_key(22);
    hub.publish(&k.verifying_key());
    let app = start_gateway(&hub).await;

    // One character of the signed text changed on the way.
    let p = payload(&k, "ALTERED", 1);
    let mut altered = report::sign(&p, &k).expect("sign");
    altered.payload = altered.payload.replacen("双肺", "左肺", 1);
    let c_altered = hub.deliver(&altered, &p);
    // Signed with a key the hub never published.
    let stranger = signing_key(99);
    let q = payload(&stranger, "STRANGER", 1);
    let c_stranger = hub.deliver(&report::sign(&q, &stranger).expect("sign"), &q);
    // A good one after them.
    let g = payload(&k, "GOOD", 1);
    let c_good = hub.deliver(&report::sign(&g, &k).expect("sign"), &g);

    let a = wait_for_ack(&hub, c_altered).await;
    assert_eq!(a["status"], "rejected");
    assert!(
        a["reason"]
            .as_str()
            .unwrap_or("")
            .contains("signature does not match"),
        "{a}"
    );
    let a = wait_for_ack(&hub, c_stranger).await;
    assert_eq!(a["status"], "rejected");
    assert!(
        a["reason"]
            .as_str()
            .unwrap_or("")
            .contains("unknown signing key"),
        "{a}"
    );
    assert_eq!(wait_for_ack(&hub, c_good).await["status"], "stored");
    // The unknown key made the gateway look at the published keys again, no more.
    assert_eq!(hub.key_requests(), 2);

    // Kept aside: stored with the reason, never verified, never fetched as PDF.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM report_versions WHERE verified = 0 AND verify_error IS NOT NULL"
        )
        .await,
        2
    );
    eventually(Duration::from_secs(10), "good PDF fetched", || async {
        hub.pdf_requests().iter().any(|(id, _)| id == "GOOD")
    })
    .await;
    assert!(hub
        .pdf_requests()
        .iter()
        .all(|(id, _)| id != "ALTERED" && id != "STRANGER"));

    let list = get_json(&app, "/api/reports").await;
    let by_id = |id: &str| {
        list["reports"]
            .as_array()
            .expect("reports")
            .iter()
            .find(|r| r["report_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed"))
    };
    for id in ["ALTERED", "STRANGER"] {
        let r = by_id(id);
        assert_eq!(r["verified"], false, "{r}");
        assert_eq!(r["current_version"], Value::Null, "{r}");
        assert_eq!(r["pdf_url"], Value::Null, "{r}");
    }
    assert_eq!(by_id("GOOD")["verified"], true);
    let detail = get_json(&app, "/api/reports/ALTERED").await;
    assert_eq!(detail["current_version"], Value::Null);
    assert_eq!(
        detail["versions"][0]["content"],
        Value::Null,
        "no unverified content"
    );
    assert_eq!(detail["versions"][0]["pdf_url"], Value::Null);

    let (_, html) = get_text(&app, "/").await;
    assert_eq!(html.matches("签名验证失败").count(), 2, "{html}");
    let (status, view) = get_text(&app, "/reports/ALTERED").await;
    assert_eq!(status, 200);
    assert!(view.contains("class=\"warn\""), "red warning: {view}");
    assert!(view.contains("没有任何通过签名验证的版本"), "{view}");
    assert!(
        !view.contains("左肺"),
        "the altered text is not shown: {view}"
    );
    assert!(!view.contains("当前有效版本"));
    let (status, body) = get_text(&app, "/reports/ALTERED/versions/1/pdf").await;
    assert_eq!(status, 409);
    assert!(body.contains("未通过签名验证"), "{body}");
    let r = page_client()
        .post(format!(
            "{}/api/reports/STRANGER/versions/1/acknowledge",
            app.reports_url()
        ))
        .json(&serde_json::json!({"name": "李医生"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 409);

    let status = app.status_cli(false).await;
    assert!(status.contains("reports: 1 received"), "{status}");
    assert!(status.contains("rejected: 2 (last:"), "{status}");
    assert!(status.contains("unknown signing key"), "{status}");
    let json: Value = serde_json::from_str(&app.status_cli(true).await).expect("json");
    assert_eq!(json["reports"]["rejected"], 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_keys_are_the_only_ones_trusted() {
    let hub = ReportHub::start().await;
    let county = signing_key(23);
    let other = signing_key(24);
    // The hub publishes both, but the township pinned only the county key.
    hub.publish(&county.verifying_key());
    hub.publish(&other.verifying_key());
    let url = hub.url();
    let pinned = report::encode_public_key(&county.verifying_key());
    let app = TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = REPORT_HUB_KEY.into();
        c.site = SITE.into();
        c.report_keys = vec![pinned];
    })
    .await;
    let p = payload(&other, "OTHER", 1);
    let c1 = hub.deliver(&report::sign(&p, &other).expect("sign"), &p);
    let mut wrong_site = payload(&county, "ELSEWHERE", 1);
    wrong_site.exam.site = "township-b".into();
    let c2 = hub.deliver(
        &report::sign(&wrong_site, &county).expect("sign"),
        &wrong_site,
    );
    let a = wait_for_ack(&hub, c1).await;
    assert_eq!(a["status"], "rejected");
    let a = wait_for_ack(&hub, c2).await;
    assert_eq!(a["status"], "rejected");
    assert!(
        a["reason"].as_str().unwrap_or("").contains("township-b"),
        "{a}"
    );
    assert_eq!(hub.key_requests(), 0, "pinned keys: nothing fetched");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amendment_is_stored_beside_the_original_and_becomes_current() {
    let hub = ReportHub::start().await;
    let k = signing_key(25);
    hub.publish(&k.verifying_key());
    // The PDF renderer fails twice: the reports are stored and acked regardless.
    hub.state
        .pdf_failures
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let app = start_gateway(&hub).await;
    let v1 = payload(&k, "RPT-A", 1);
    let c1 = hub.deliver(&report::sign(&v1, &k).expect("sign"), &v1);
    assert_eq!(wait_for_ack(&hub, c1).await["status"], "stored");
    let v2 = amendment(&k, &v1, "更正：补充右肺下叶结节");
    let c2 = hub.deliver(&report::sign(&v2, &k).expect("sign"), &v2);
    assert_eq!(wait_for_ack(&hub, c2).await["status"], "stored");

    eventually(
        Duration::from_secs(20),
        "both PDFs fetched after retries",
        || async {
            app.data_dir().join("reports/RPT-A-v1.pdf").exists()
                && app.data_dir().join("reports/RPT-A-v2.pdf").exists()
        },
    )
    .await;
    assert!(hub.pdf_requests().len() >= 4, "{:?}", hub.pdf_requests());

    let detail = get_json(&app, "/api/reports/RPT-A").await;
    assert_eq!(detail["current_version"], 2);
    let versions = detail["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(versions[0]["status"], "amended");
    assert_eq!(versions[0]["reason"], "更正：补充右肺下叶结节");
    assert_eq!(
        versions[0]["content"]["impression"],
        "右肺下叶小结节，建议随访。"
    );
    assert_eq!(versions[1]["version"], 1);
    assert_eq!(versions[1]["content"]["impression"], "胸部CT未见异常。");
    for v in [1, 2] {
        let r = get(&app, &format!("/reports/RPT-A/versions/{v}/pdf")).await;
        assert_eq!(r.status().as_u16(), 200, "version {v}");
        let body = r.text().await.expect("pdf");
        assert!(body.contains(&format!("RPT-A v{v}")), "{body}");
    }
    let list = get_json(&app, "/api/reports").await;
    assert_eq!(list["reports"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["reports"][0]["current_version"], 2);
    assert_eq!(list["reports"][0]["versions"], 2);
    let (_, view) = get_text(&app, "/reports/RPT-A").await;
    assert!(view.contains("当前有效版本：第2版（修订报告）"), "{view}");
    assert!(view.contains("修订原因"));
    assert!(view.contains("更正：补充右肺下叶结节"));
    assert!(view.contains("右肺下叶小结节，建议随访。"));
    assert!(view.contains("第1版"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_survives_a_restart_and_nothing_is_stored_twice() {
    let hub = ReportHub::start().await;
    let k = signing_key(26);
    hub.publish(&k.verifying_key());
    let mut app = start_gateway(&hub).await;
    for id in ["C-1", "C-2"] {
        let p = payload(&k, id, 1);
        let c = hub.deliver(&report::sign(&p, &k).expect("sign"), &p);
        wait_for_ack(&hub, c).await;
    }
    eventually(Duration::from_secs(10), "cursor saved", || async {
        count(&app, "SELECT cursor FROM report_state").await == 2
    })
    .await;

    let before = hub.polls().len();
    app.restart(|_| {}).await;
    eventually(
        Duration::from_secs(10),
        "polls from the saved cursor",
        || async { hub.polls().len() > before },
    )
    .await;
    assert_eq!(
        hub.polls()[before],
        2,
        "the first poll after a restart starts at the saved cursor"
    );
    let p = payload(&k, "C-3", 1);
    let c3 = hub.deliver(&report::sign(&p, &k).expect("sign"), &p);
    wait_for_ack(&hub, c3).await;

    // As if the gateway had died after storing but before saving the cursor: the hub
    // hands the same items out again.
    app.restart(|_| {}).await;
    sqlx::query("UPDATE report_state SET cursor = 0")
        .execute(app.gateway().outbox().pool())
        .await
        .expect("rewind");
    let before = hub.polls().len();
    app.restart(|_| {}).await;
    eventually(
        Duration::from_secs(10),
        "re-polled from 0 and moved on",
        || async {
            hub.polls()[before..].contains(&0)
                && count(&app, "SELECT cursor FROM report_state").await == 3
        },
    )
    .await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM report_versions").await, 3);
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM report_deliveries").await,
        3
    );
    for cursor in 1..=3 {
        assert_eq!(hub.acks_for(cursor).len(), 1, "cursor {cursor} acked once");
    }
    let list = get_json(&app, "/api/reports").await;
    assert_eq!(list["reports"].as_array().map(Vec::len), Some(3));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_finding_is_acknowledged_and_relayed_even_across_a_restart_while_the_hub_is_down(
) {
    let mut hub = ReportHub::start().await;
    let k = signing_key(27);
    hub.publish(&k.verifying_key());
    let mut app = start_gateway(&hub).await;
    let mut crit = payload(&k, "CRIT-1", 1);
    crit.critical = true;
    crit.content
        .insert("impression".into(), "主动脉夹层，请立即处理！".into());
    let c1 = hub.deliver(&report::sign(&crit, &k).expect("sign"), &crit);
    wait_for_ack(&hub, c1).await;
    // A newer routine report: the unacknowledged critical one still comes first.
    let routine = payload(&k, "ROUTINE-1", 1);
    let c2 = hub.deliver(&report::sign(&routine, &k).expect("sign"), &routine);
    wait_for_ack(&hub, c2).await;

    let list = get_json(&app, "/api/reports").await;
    assert_eq!(list["reports"][0]["report_id"], "CRIT-1");
    assert_eq!(list["reports"][0]["critical_waiting"], true);
    let (_, html) = get_text(&app, "/").await;
    // The alert to acknowledge heads the page; the reports below are newest first,
    // the critical row still marked red.
    let alert = html
        .find("<div class=\"alert\" data-report-id=\"CRIT-1\"")
        .expect("alert");
    let routine_link = html.find("/reports/ROUTINE-1").expect("routine listed");
    assert!(alert < routine_link, "critical on top: {html}");
    assert!(html.contains("<tr class=\"critical\" data-report-id=\"CRIT-1\""));
    assert!(html.contains("危急值 · 待确认"));
    let (_, view) = get_text(&app, "/reports/CRIT-1").await;
    assert!(
        view.contains("action=\"/api/reports/CRIT-1/versions/1/acknowledge\""),
        "{view}"
    );
    let status = app.status_cli(false).await;
    assert!(
        status.contains("critical awaiting acknowledgement: 1"),
        "{status}"
    );

    // The hub goes down; the clinician acknowledges on the page anyway.
    hub.stop().await;
    let ack_url = format!(
        "{}/api/reports/CRIT-1/versions/1/acknowledge",
        app.reports_url()
    );
    // A page elsewhere cannot acknowledge through the clinician's browser.
    let r = page_client()
        .post(&ack_url)
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=mallory")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let r = page_client()
        .post(&ack_url)
        .header("origin", app.reports_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=%E6%9D%8E%E5%8C%BB%E7%94%9F") // 李医生
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/reports/CRIT-1");
    let detail = get_json(&app, "/api/reports/CRIT-1").await;
    assert_eq!(detail["versions"][0]["acknowledged_by"], "李医生");
    assert_eq!(
        detail["versions"][0]["acknowledgement_relayed_at"],
        Value::Null
    );
    // A second acknowledgement does not replace the first.
    let r = page_client()
        .post(&ack_url)
        .json(&serde_json::json!({"name": "别人"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["acknowledged_by"], "李医生");
    let r = page_client()
        .post(&ack_url)
        .json(&serde_json::json!({"name": "  "}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);

    // Restart while the hub is still down: the relay is pending in the database.
    app.restart(|_| {}).await;
    eventually(Duration::from_secs(20), "relay failure shown", || async {
        let text = app.status_cli(false).await;
        text.contains(
            "acknowledgements not yet relayed to the hub: 1 (last error: cannot reach the hub",
        ) && text.contains("last delivery error: ")
            && !text.contains("last delivery error: none")
    })
    .await;
    let text = app.status_cli(false).await;
    assert!(
        text.contains("critical awaiting acknowledgement: 0"),
        "{text}"
    );
    assert!(hub.critical_acks().is_empty());

    // The hub comes back on the same address: the acknowledgement arrives.
    let hub = ReportHub::start_with(std::sync::Arc::clone(&hub.state), hub.port).await;
    eventually(
        Duration::from_secs(30),
        "acknowledgement relayed",
        || async { !hub.critical_acks().is_empty() },
    )
    .await;
    assert_eq!(
        hub.critical_acks(),
        vec![serde_json::json!({"report_id": "CRIT-1", "version": 1, "acknowledged_by": "李医生"})]
    );
    eventually(Duration::from_secs(10), "relay recorded", || async {
        count(
            &app,
            "SELECT COUNT(*) FROM report_versions WHERE relayed_at IS NOT NULL",
        )
        .await
            == 1
    })
    .await;
    let (_, view) = get_text(&app, "/reports/CRIT-1").await;
    assert!(view.contains("已由 李医生"), "{view}");
    assert!(view.contains("已通知县级平台"), "{view}");
    assert!(!view.contains("<form"), "no second form: {view}");
    let text = app.status_cli(false).await;
    assert!(
        text.contains("acknowledgements not yet relayed to the hub: 0"),
        "{text}"
    );
    // A poll may have met the hub while it restarted; the next good one clears the error.
    eventually(
        Duration::from_secs(20),
        "the delivery error cleared",
        || async {
            app.status_cli(false)
                .await
                .contains("last delivery error: none")
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_errors_are_shown_in_status_and_the_page_port_can_be_busy() {
    // A wrong key (401).
    let hub = ReportHub::start().await;
    let url = hub.url();
    let app = TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = "gk_wrong".into();
    })
    .await;
    eventually(Duration::from_secs(20), "401 shown", || async {
        app.status_cli(false)
            .await
            .contains("last delivery error: ")
            && app
                .status_cli(false)
                .await
                .contains("hub refused the gateway key (401)")
    })
    .await;
    let polls = hub.polls().len();
    assert_eq!(polls, 0, "refused before any poll was recorded");
    assert!(hub.unauthorized() >= 1);

    // The report page's port is taken: the gateway still runs (DICOM matters more), and
    // status says why there is no page.
    let busy = app.gateway().reports_addr().expect("page").to_string();
    let other = TestApp::start(move |c| c.report_listen = busy).await;
    assert_eq!(other.gateway().reports_addr(), None);
    let text = other.status_cli(false).await;
    assert!(text.contains("local page: not listening"), "{text}");
    assert!(other.echoscu(&[]).await.success);
    other.stop().await;
    app.stop().await;

    // An untrusted hub certificate.
    let pki = tempfile::tempdir().expect("tempdir");
    let county = TestCa::new(pki.path(), "county");
    let stranger = TestCa::new(pki.path(), "stranger");
    let cert = county.issue(pki.path(), "hub", &["127.0.0.1"]);
    let tls_hub = TestHub::tls(&cert, REPORT_HUB_KEY).await;
    let (url, ca) = (tls_hub.url("127.0.0.1"), stranger.pem_path.clone());
    let app = TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = REPORT_HUB_KEY.into();
        c.hub_ca_file = Some(ca);
    })
    .await;
    eventually(Duration::from_secs(20), "TLS error shown", || async {
        app.status_cli(false)
            .await
            .contains("hub certificate not trusted")
    })
    .await;
    let text = app.status_cli(false).await;
    let line = text
        .lines()
        .find(|l| l.contains("last delivery error"))
        .expect("line");
    assert!(line.contains("hub certificate not trusted"), "{text}");
    app.stop().await;
}

/// A minimal HIS: an MLLP listener that answers each message with an ACK; the first
/// `errors` messages get AE (a passing error), the rest AA.
struct TestHis {
    port: u16,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestHis {
    async fn start(errors: usize) -> TestHis {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (acc, rec) = (accepted.clone(), received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                let mut frame = Vec::new();
                let mut buf = [0u8; 4096];
                while !frame.ends_with(&[0x1c, b'\r']) {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => frame.extend_from_slice(&buf[..n]),
                    }
                }
                assert_eq!(frame.first(), Some(&0x0b), "MLLP start block");
                let message = String::from_utf8_lossy(&frame[1..frame.len() - 2]).into_owned();
                let control = message
                    .split('\r')
                    .next()
                    .and_then(|msh| msh.split('|').nth(9))
                    .unwrap_or("")
                    .to_string();
                let n = rec.fetch_add(1, Ordering::SeqCst);
                let code = if n < errors { "AE" } else { "AA" };
                if code == "AA" {
                    acc.lock().expect("lock").push(message);
                }
                let ack = format!(
                    "\u{b}MSH|^~\\&|HIS|T|COUNTY_HUB|COUNTY|20240101000000||ACK^R01|A{n}|P|2.5.1\rMSA|{code}|{control}|test\u{1c}\r"
                );
                let _ = socket.write_all(ack.as_bytes()).await;
            }
        });
        TestHis {
            port,
            accepted,
            received,
            task,
        }
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().expect("lock").clone()
    }
}

impl Drop for TestHis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_reports_go_to_the_his_as_hl7_and_forgeries_do_not() {
    let hub = ReportHub::start().await;
    let k = signing_key(28);
    hub.publish(&k.verifying_key());
    // The HIS answers the first message with an error: it is sent again.
    let his = TestHis::start(1).await;
    let (url, his_addr) = (hub.url(), format!("127.0.0.1:{}", his.port));
    let app = TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = REPORT_HUB_KEY.into();
        c.site = SITE.into();
        c.his_mllp_addr = his_addr;
    })
    .await;
    let v1 = payload(&k, "HIS-1", 1);
    let c1 = hub.deliver(&report::sign(&v1, &k).expect("sign"), &v1);
    wait_for_ack(&hub, c1).await;
    let mut forged = report::sign(&payload(&k, "FORGED", 1), &k).expect("sign");
    forged.payload = forged.payload.replacen("张三", "李四", 1);
    let c2 = hub.deliver(&forged, &payload(&k, "FORGED", 1));
    assert_eq!(wait_for_ack(&hub, c2).await["status"], "rejected");
    let v2 = amendment(&k, &v1, "更正：补充|结节");
    let c3 = hub.deliver(&report::sign(&v2, &k).expect("sign"), &v2);
    wait_for_ack(&hub, c3).await;

    // In order, although the first attempt failed: an amendment never overtakes.
    eventually(
        Duration::from_secs(20),
        "both versions accepted by the HIS",
        || async { his.accepted().len() == 2 },
    )
    .await;
    let messages = his.accepted();
    assert!(messages[0].contains("ORU^R01"), "{}", messages[0]);
    assert!(
        messages[0].contains("\rOBR|1|ACC-7|HIS-1-1|"),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("PID|1||PID-0042^^^township-a||张三<script>alert(1)</script>"));
    assert!(
        messages[1].contains("\rOBR|1|ACC-7|HIS-1-2|"),
        "{}",
        messages[1]
    );
    assert!(
        messages[1].contains("修订原因：更正：补充\\F\\结节"),
        "{}",
        messages[1]
    );
    assert!(
        messages.iter().all(|m| !m.contains("FORGED")),
        "no forged report"
    );
    assert_eq!(
        his.received.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one retry after the AE"
    );
    eventually(Duration::from_secs(10), "status shows it", || async {
        app.status_cli(false)
            .await
            .contains("HIS (HL7): 2 sent, 0 waiting, 0 refused")
    })
    .await;
    app.stop().await;
}
