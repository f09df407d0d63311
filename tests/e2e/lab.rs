//! Laboratory results: HL7 v2 over MLLP from a real client (`mllp_send`, PyPI `hl7`) into
//! the township gateway, to the county lab worklist; a critical potassium raised at
//! once to the township and acknowledged there, another escalating unacknowledged; a
//! corrected result keeping its history; the signed lab report with FHIR Observations.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use storage::accounts::{Grade, Specialty};
use tests::accounts::{create_user, reader};
use tests::{call, testdata, wait_for, Backend, Env, Gateway, Hub};

use crate::on_both_backends;

on_both_backends!(lab_results_critical_values_and_report);

/// Send a file of plain HL7 (CR or LF separated; `--loose`: `mllp_send` frames it) with
/// `mllp_send`; returns what it printed (the ACK).
pub fn mllp_send(gw: &Gateway, file: &Path) -> Result<String> {
    let addr = gw.hl7.as_deref().context("the gateway's HL7 listener")?;
    let (host, port) = addr.rsplit_once(':').context("host:port")?;
    let mut cmd = std::process::Command::new("mllp_send");
    cmd.args(["--loose", "--port", port, "--file"]).arg(file);
    let out = cmd
        .arg(host)
        .output()
        .context("mllp_send (pip install hl7)")?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// An ORU^R01 with one potassium result, CR-separated, UTF-8 with a Chinese name.
pub fn potassium(
    control_id: &str,
    patient: &str,
    filler: &str,
    value: &str,
    status: &str,
) -> String {
    [
        format!("MSH|^~\\&|LIS|WEIXIN_TOWNSHIP|HUB|COUNTY|20261123081500||ORU^R01^ORU_R01|{control_id}|P|2.5.1|||AL|NE||UNICODE UTF-8"),
        format!("PID|1||{patient}^^^WX^MR||王^芳||19580312|F"),
        format!("ORC|RE|P{filler}|{filler}"),
        format!("OBR|1|P{filler}|{filler}|2823-3^钾^LN|S||20261123080000|||||||||||||||20261123081000|||{status}"),
        format!("OBX|1|NM|2823-3^钾^LN||{value}|mmol/L|3.5-5.3|H|||{status}|||20261123081000"),
    ]
    .join("\r")
        + "\r"
}

pub async fn lab_exam_of(hub: &Hub, token: &str, patient: &str) -> Result<Value> {
    wait_for(
        Duration::from_secs(30),
        "the lab exam on the worklist",
        || async {
            let (_, list) = call(
                Method::GET,
                &format!("{}/api/worklist?specialty=laboratory", hub.url),
                Some(token),
                None,
            )
            .await?;
            Ok(list
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["patient_id"] == patient).cloned()))
        },
    )
    .await
}

pub async fn lab_results_critical_values_and_report(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start_with(&env, "hub", 0, &[("HUB_CRITICAL_ACK_SECS", "8")])?;
    // The township's HIS, receiving the signed lab report as HL7 from the gateway.
    let his_port = tests::free_port();
    let his_log = env.path("his.jsonl");
    let mut his = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/py/his_listener.py"))
        .arg(his_port.to_string())
        .arg(&his_log)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let _his_guard = KillOnDrop(&mut his);
    wait_for(Duration::from_secs(20), "the HIS stand-in", || async {
        Ok(std::net::TcpStream::connect(("127.0.0.1", his_port))
            .ok()
            .map(|_| ()))
    })
    .await?;
    let his_line = format!("his_mllp_addr = \"127.0.0.1:{his_port}\"");
    let gw = Gateway::start_with(&env, "gw", &hub.url, "township-a", &his_line)?;
    let page = gw.reports.clone().context("report page")?;
    let storage = env.storage().await?;
    let labdoc = create_user(
        &storage.db,
        &reader("labdoc", &[Specialty::Laboratory], Grade::Senior),
    )
    .await?;
    let rad = create_user(
        &storage.db,
        &reader("rad", &[Specialty::Radiology], Grade::Senior),
    )
    .await?;
    let admin = env.accounts()?.admin.clone();

    // Real sample messages from other projects are acknowledged AA and stored.
    for file in [
        "hl7/sample_oru_r01_generic.hl7",
        "hl7/ORU_R01_GHH_LAB_glucose.hl7",
    ] {
        let ack = mllp_send(&gw, &testdata(file))?;
        ensure!(ack.contains("MSA|AA"), "{file}: {ack}");
    }
    let cbc = lab_exam_of(&hub, &labdoc, "12345").await?;
    let (status, results) = call(
        Method::GET,
        &format!("{}/api/exams/{}/lab", hub.url, cbc["id"]),
        Some(&labdoc),
        None,
    )
    .await?;
    ensure!(status == 200, "lab results: {status} {results}");
    let wbc = results["order"]["results"]
        .as_array()
        .context("results")?
        .iter()
        .find(|o| o["loinc"] == "6690-2")
        .context("WBC")?
        .clone();
    ensure!(
        wbc["value_num"] == 7.0 && wbc["units"] == "/nl" && wbc["reference_range"] == "3.8-11.0",
        "{wbc}"
    );
    let (_, radlist) = call(
        Method::GET,
        &format!("{}/api/worklist", hub.url),
        Some(&rad),
        None,
    )
    .await?;
    ensure!(
        radlist.as_array().is_some_and(Vec::is_empty),
        "radiology sees lab exams: {radlist}"
    );

    // An ADT message is not a result: refused AR, nothing else lost.
    let ack = mllp_send(&gw, &testdata("hl7/sample_adt_a01.hl7"))?;
    ensure!(
        ack.contains("MSA|AR") || ack.contains("MSA|AE"),
        "ADT: {ack}"
    );

    // A critical potassium: STAT at the county at once, alert at the township.
    let k1 = env.path("k1.hl7");
    std::fs::write(&k1, potassium("K-0001", "WX-77", "F900", "6.8", "F"))?;
    ensure!(mllp_send(&gw, &k1)?.contains("MSA|AA"));
    let exam = lab_exam_of(&hub, &labdoc, "WX-77").await?;
    ensure!(
        exam["priority"] == "stat",
        "critical result not STAT: {exam}"
    );
    let (_, list) = call(
        Method::GET,
        &format!("{}/api/worklist?specialty=laboratory", hub.url),
        Some(&labdoc),
        None,
    )
    .await?;
    ensure!(list[0]["patient_id"] == "WX-77", "STAT first: {list}");
    let alert = wait_for(
        Duration::from_secs(30),
        "the critical alert at the township",
        || async {
            let (_, body) = call(Method::GET, &format!("{page}/api/reports"), None, None).await?;
            Ok(body["reports"].as_array().and_then(|rs| {
                rs.iter()
                    .find(|r| r["exam"]["patient_id"] == "WX-77" && r["critical"] == true)
                    .cloned()
            }))
        },
    )
    .await?;
    ensure!(
        alert["verified"] == true && alert["critical_waiting"] == true,
        "{alert}"
    );
    let alert_id = alert["report_id"].as_str().context("alert id")?;
    let (status, _) = call(
        Method::POST,
        &format!("{page}/api/reports/{alert_id}/versions/1/acknowledge"),
        None,
        Some(json!({"name": "刘医生"})),
    )
    .await?;
    ensure!(status.is_success(), "acknowledge: {status}");
    // The alert prints at the township too (the hub renders it like a report).
    wait_for(
        Duration::from_secs(30),
        "the alert's PDF at the township",
        || async {
            let (_, body) = call(
                Method::GET,
                &format!("{page}/api/reports/{alert_id}"),
                None,
                None,
            )
            .await?;
            Ok(body["versions"][0]["pdf_url"].as_str().map(|_| ()))
        },
    )
    .await?;

    // A second critical value nobody acknowledges escalates to the county.
    let k2 = env.path("k2.hl7");
    std::fs::write(&k2, potassium("K-0002", "WX-88", "F901", "2.1", "F"))?;
    ensure!(mllp_send(&gw, &k2)?.contains("MSA|AA"));
    let alerts = wait_for(
        Duration::from_secs(40),
        "acknowledgement and escalation on record",
        || async {
            let (_, body) = call(
                Method::GET,
                &format!("{}/api/admin/critical-alerts", hub.url),
                Some(&admin),
                None,
            )
            .await?;
            let list = body["alerts"].as_array().cloned().unwrap_or_default();
            let acked = list
                .iter()
                .any(|a| a["patient_id"] == "WX-77" && a["acknowledged_by"] == "刘医生");
            let escalated = list
                .iter()
                .any(|a| a["patient_id"] == "WX-88" && a["escalated_at"].is_i64());
            Ok((acked && escalated).then_some(body))
        },
    )
    .await?;
    let first = alerts["alerts"]
        .as_array()
        .context("alerts")?
        .iter()
        .find(|a| a["patient_id"] == "WX-77")
        .context("WX-77")?;
    for stage in [
        "created_at",
        "delivered_at",
        "received_at",
        "acknowledged_at",
    ] {
        ensure!(first[stage].is_i64(), "{stage} not on record: {first}");
    }
    ensure!(
        first["escalated_at"].is_null(),
        "an acknowledged alert escalated: {first}"
    );
    ensure!(
        alerts["sites"][0]["result_to_ack_p50_s"].is_i64(),
        "{alerts}"
    );

    // A corrected result replaces the shown value and keeps the earlier one.
    let k3 = env.path("k3.hl7");
    std::fs::write(&k3, potassium("K-0003", "WX-77", "F900", "5.9", "C"))?;
    ensure!(mllp_send(&gw, &k3)?.contains("MSA|AA"));
    let lab = wait_for(Duration::from_secs(30), "the corrected result", || async {
        let (_, lab) = call(
            Method::GET,
            &format!("{}/api/exams/{}/lab", hub.url, exam["id"]),
            Some(&labdoc),
            None,
        )
        .await?;
        Ok((lab["order"]["results"][0]["value_text"] == "5.9").then_some(lab))
    })
    .await?;
    ensure!(
        lab["order"]["history"][0]["value_text"] == "6.8",
        "history: {lab}"
    );

    // The laboratory physician verifies and signs; the township receives the report.
    let id = exam["id"].to_string();
    let (status, _) = call(
        Method::POST,
        &format!("{}/api/exams/{id}/claim", hub.url),
        Some(&labdoc),
        None,
    )
    .await?;
    ensure!(status == 200, "claim lab exam: {status}");
    let base = format!("{}/api/exams/{id}/report", hub.url);
    let draft = json!({"template": "lab", "content": {"comment": "复查后血钾 5.9 mmol/L，仍偏高。", "conclusion": "高钾血症，已通知临床。"}, "critical": true});
    ensure!(
        call(
            Method::PUT,
            &format!("{base}/draft"),
            Some(&labdoc),
            Some(draft)
        )
        .await?
        .0 == 200
    );
    let (_, preview) = call(Method::GET, &format!("{base}/preview"), Some(&labdoc), None).await?;
    ensure!(
        preview["content"]["results"]
            .as_str()
            .is_some_and(|r| r.contains("5.9")),
        "{preview}"
    );
    let (status, signed) = call(
        Method::POST,
        &format!("{base}/sign"),
        Some(&labdoc),
        Some(json!({"confirm_sha256": preview["confirm_sha256"]})),
    )
    .await?;
    ensure!(
        status == 200 && signed["status"] == "final",
        "sign: {status} {signed}"
    );
    let report_id = signed["report_id"]
        .as_str()
        .context("report id")?
        .to_string();
    wait_for(
        Duration::from_secs(30),
        "the lab report at the township",
        || async {
            let (status, body) = call(
                Method::GET,
                &format!("{page}/api/reports/{report_id}"),
                None,
                None,
            )
            .await?;
            Ok((status == 200 && body["versions"][0]["verified"] == true).then_some(()))
        },
    )
    .await?;
    // FHIR DiagnosticReport with Observations, validated by fhir.resources.
    let (status, fhir) = call(
        Method::GET,
        &format!("{}/api/reports/{report_id}/versions/1/fhir", hub.url),
        Some(&labdoc),
        None,
    )
    .await?;
    ensure!(status == 200, "FHIR: {status}");
    let observations: Vec<&Value> = fhir["contained"]
        .as_array()
        .context("contained")?
        .iter()
        .filter(|c| c["resourceType"] == "Observation")
        .collect();
    ensure!(
        observations
            .iter()
            .any(|o| o["code"]["coding"][0]["code"] == "2823-3"
                && o["valueQuantity"]["value"] == 5.9),
        "potassium observation: {fhir}"
    );
    // The township HIS got the signed report as ORU^R01, and the `hl7` package parses it.
    let received = wait_for(
        Duration::from_secs(30),
        "the ORU^R01 at the HIS",
        || async {
            let text = std::fs::read_to_string(&his_log).unwrap_or_default();
            Ok(text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|m| {
                    m["patient_id"] == "WX-77"
                        && m["obr_status"] == "F"
                        && m["type"].as_str().is_some_and(|t| t.starts_with("ORU^R01"))
                }))
        },
    )
    .await?;
    ensure!(
        received["ok"] == true,
        "the hl7 package refused our ORU: {received}"
    );
    let file = env.path("lab.fhir.json");
    std::fs::write(&file, serde_json::to_vec(&fhir)?)?;
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/py/fhir_check.py"))
        .arg(&file)
        .output()?;
    ensure!(
        out.status.success(),
        "FHIR validation: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Kills a helper process when the test ends, however it ends.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Idle TCP connections from `count` loopback addresses starting at 127.0.0.`first`,
/// `each` from every address: they connect and never send a byte.
async fn idle_connections(
    target: &str,
    first: u8,
    count: u8,
    each: usize,
) -> Result<Vec<tokio::net::TcpStream>> {
    let target: std::net::SocketAddr = target.parse()?;
    let mut held = Vec::new();
    for n in first..first + count {
        for _ in 0..each {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::from(([127, 0, 0, n], 0)))?;
            held.push(socket.connect(target).await?);
        }
    }
    Ok(held)
}

/// Connections that never speak cannot lock a township's CT and LIS out: with every
/// slot open to strangers taken (and one address trying to take many), the trusted
/// modality's storescu and the LIS's mllp_send still get through at once, and the idle
/// connections are closed after `connection_open_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_out_the_modality_and_the_lis() -> Result<()> {
    let env = Env::new(Backend::SqliteLocal).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let gw = Gateway::start_with(
        &env,
        "gw",
        &hub.url,
        "township-a",
        "connection_open_secs = 8\nmax_connections_per_address = 4\n\
         reserved_connections = 4\ntrusted_addresses = [\"127.0.0.1\"]",
    )?;
    let hl7 = gw.hl7.clone().context("HL7 listener")?;
    // One stranger tries 20 connections; 40 more take one each: more than the 28
    // shared DICOM slots and the 60 shared MLLP ones.
    let mut idle = idle_connections(&gw.dicom, 2, 1, 20).await?;
    idle.extend(idle_connections(&gw.dicom, 3, 40, 1).await?);
    idle.extend(idle_connections(&hl7, 2, 1, 20).await?);
    idle.extend(idle_connections(&hl7, 3, 70, 1).await?);
    let opened = std::time::Instant::now();

    let files = crate::make_study(&env, "gen", 2, "locked-out", &[]);
    gw.storescu(&[], &files)
        .context("the CT's C-STORE while strangers hold the shared slots")?;
    let file = env.path("k.hl7");
    std::fs::write(&file, potassium("K-IDLE", "WX-90", "F990", "4.1", "F"))?;
    let ack = mllp_send(&gw, &file)?;
    ensure!(ack.contains("MSA|AA"), "the LIS's message: {ack}");
    ensure!(
        opened.elapsed() < Duration::from_secs(8),
        "the sends finished before the idle connections' deadline, so the reserve let them in"
    );

    // The idle connections are closed by the gateway once their deadline passes: the
    // first MLLP one from 127.0.0.3 (admitted; refused ones are closed at once).
    let last = idle.get_mut(80).context("an admitted idle connection")?;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(last, &mut byte),
    )
    .await;
    ensure!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle MLLP connection is still open after its deadline: {read:?}"
    );
    Ok(())
}
