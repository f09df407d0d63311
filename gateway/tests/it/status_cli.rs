//! `gateway status`, run as the technician runs it, while the gateway is running.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_queue_stat_oldest_last_error_and_quarantine() {
    let app = TestApp::start(|c| c.stat_ae_titles = vec!["ER_GW".into()]).await;
    let run = app.storescu(&[], &[testdata("single/CT_small.dcm")]).await;
    assert_eq!(run.stored(), 1, "{}", run.output);
    let run = app
        .storescu(&["-aec", "ER_GW"], &[testdata("single/MR_small.dcm")])
        .await;
    assert_eq!(run.stored(), 1, "{}", run.output);
    let mut scu = RawScu::connect(
        app.port(),
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.1.2.1",
    )
    .await;
    let truncated = std::fs::read(testdata("edge/MR_truncated.dcm")).expect("read");
    let (status, _) = scu
        .store(
            "1.2.840.10008.5.1.4.1.1.4",
            "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
            dataset_of(&truncated),
        )
        .await;
    assert_eq!(status, 0xC000);
    scu.release().await;
    eventually(
        Duration::from_secs(10),
        "a delivery error recorded",
        || async { app.items().await.iter().any(|i| i.last_error.is_some()) },
    )
    .await;

    let text = app.status_cli(false).await;
    assert!(text.contains("queue: 2 pending"), "{text}");
    assert!(text.contains("of which 1 STAT"), "{text}");
    assert!(text.contains("oldest waiting:"), "{text}");
    assert!(
        text.contains("1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"),
        "oldest is the CT: {text}"
    );
    assert!(text.contains("cannot reach the hub"), "{text}");
    assert!(text.contains("delivered: 0"), "{text}");
    assert!(text.contains("quarantined: 1"), "{text}");
    assert!(text.contains("[receive]"), "{text}");
    assert!(text.contains("RAWSCU"), "{text}");

    let json: serde_json::Value = serde_json::from_str(&app.status_cli(true).await).expect("json");
    assert_eq!(json["pending"]["count"], 2);
    assert_eq!(json["pending_stat"]["count"], 1);
    assert!(json["pending"]["bytes"].as_i64().unwrap_or(0) > 40_000);
    assert_eq!(json["quarantined"], 1);
    let reason = json["quarantine"][0]["reason"].as_str().unwrap_or("");
    assert!(!reason.is_empty());
    assert!(json["last_error"]["error"]
        .as_str()
        .unwrap_or("")
        .contains("cannot reach"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_a_database_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("status")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no gateway database"));
}
