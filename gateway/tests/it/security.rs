//! The gateway's key and TLS towards the hub, and DICOM TLS on its listener.
//!
//! Towards the hub: an untrusted certificate, a pin mismatch, a wrong host name or a
//! refused key never costs an instance: nothing is quarantined, everything stays
//! pending with a message that says what to fix, and once the configuration is fixed
//! and the gateway restarted everything is delivered.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::*;
use crate::tls_support::*;

const KEY: &str = "gk_township7_0123456789abcdef";

/// Send the 7 instances of one study and return their SOP Instance UIDs.
async fn send_study(app: &TestApp) -> BTreeSet<String> {
    let run = app
        .storescu(&["+sd", "+r"], &[testdata("tree/98892001")])
        .await;
    assert_eq!(run.stored(), 7, "{}", run.output);
    app.items()
        .await
        .into_iter()
        .map(|i| i.sop_instance_uid)
        .collect()
}

/// Wait until every item has failed at least once with an error containing `needle`,
/// then check that nothing was lost or quarantined.
async fn wait_for_error_everywhere(app: &TestApp, needle: &str) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("every item failed with {needle:?}"),
        || async {
            let items = app.items().await;
            !items.is_empty()
                && items.iter().all(|i| {
                    i.attempts > 0 && i.last_error.as_deref().is_some_and(|e| e.contains(needle))
                })
        },
    )
    .await;
    let items = app.items().await;
    assert!(
        items.iter().all(|i| i.state == "pending"),
        "nothing may be settled: {items:#?}"
    );
    assert!(app.quarantine().await.is_empty(), "nothing quarantined");
    assert_eq!(app.spool_files().len(), items.len(), "nothing lost");
    items[0].last_error.clone().unwrap_or_default()
}

async fn wait_until_delivered(app: &TestApp) {
    eventually(Duration::from_secs(30), "all delivered", || async {
        let items = app.items().await;
        !items.is_empty() && items.iter().all(|i| i.state == "delivered")
    })
    .await;
}

fn status_has_no_key(text: &str) {
    assert!(!text.contains(KEY), "the key must never be shown: {text}");
    assert!(
        !text.contains("gk_wrong"),
        "the key must never be shown: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_over_tls_with_the_configured_ca_gets_everything_with_the_key() {
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(pki.path(), "county");
    let hub_cert = ca.issue(pki.path(), "hub", &["localhost", "127.0.0.1"]);
    let hub = TestHub::tls(&hub_cert, KEY).await;
    let (url, ca_file) = (hub.url("localhost"), ca.pem_path.clone());
    let app = TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = KEY.into();
        c.hub_ca_file = Some(ca_file);
    })
    .await;
    let sent = send_study(&app).await;
    wait_until_delivered(&app).await;
    assert_eq!(hub.stored(), sent, "every instance acknowledged by the hub");
    assert_eq!(hub.refused(), 0, "every request carried the key");
    // The completion notice goes the same way, with the key.
    let study = app.items().await[0].study_uid.clone();
    eventually(
        Duration::from_secs(10),
        "study reported complete",
        || async { hub.completed().contains(&study) },
    )
    .await;
    eventually(Duration::from_secs(5), "notice recorded", || async {
        matches!(app.study(&study).await, Some((_, Some(_), _)))
    })
    .await;
    assert_eq!(
        hub.authorized(),
        hub.stow_requests() + hub.completed().len(),
        "every request carried the key"
    );
    status_has_no_key(&app.status_cli(false).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_hub_certificate_keeps_everything_until_the_right_ca_is_configured() {
    let pki = tempfile::tempdir().expect("tempdir");
    let county = TestCa::new(pki.path(), "county");
    let stranger = TestCa::new(pki.path(), "stranger");
    let hub_cert = county.issue(pki.path(), "hub", &["localhost", "127.0.0.1"]);
    let hub = TestHub::tls(&hub_cert, KEY).await;
    let (url, wrong_ca) = (hub.url("127.0.0.1"), stranger.pem_path.clone());
    let mut app = TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = KEY.into();
        c.hub_ca_file = Some(wrong_ca);
    })
    .await;
    let sent = send_study(&app).await;
    let error = wait_for_error_everywhere(&app, "hub certificate not trusted").await;
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(
        error.contains("check hub_ca_file / hub_cert_sha256"),
        "{error}"
    );
    assert!(hub.stored().is_empty(), "nothing reached the hub");
    assert_eq!(hub.stow_requests(), 0);

    let text = app.status_cli(false).await;
    assert!(text.contains("queue: 7 pending"), "{text}");
    assert!(text.contains("hub certificate not trusted"), "{text}");
    assert!(text.contains("quarantined: 0"), "{text}");
    status_has_no_key(&text);
    status_has_no_key(&app.status_cli(true).await);

    // The operator installs the county CA and restarts: everything goes.
    let right_ca = county.pem_path.clone();
    app.restart(move |c| c.hub_ca_file = Some(right_ca)).await;
    wait_until_delivered(&app).await;
    assert_eq!(hub.stored(), sent);
    assert!(app.quarantine().await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_not_trusted() {
    let pki = tempfile::tempdir().expect("tempdir");
    let county = TestCa::new(pki.path(), "county");
    let other = county.issue(pki.path(), "other", &["other.county.invalid"]);
    let hub = TestHub::tls(&other, KEY).await;
    let (url, ca_file) = (hub.url("127.0.0.1"), county.pem_path.clone());
    let app = TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = KEY.into();
        c.hub_ca_file = Some(ca_file);
    })
    .await;
    send_study(&app).await;
    let error = wait_for_error_everywhere(&app, "hub certificate not trusted").await;
    assert!(error.contains("not valid for name"), "{error}");
    assert!(hub.stored().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_self_signed_hub_certificate_is_trusted_only_when_it_matches() {
    let pki = tempfile::tempdir().expect("tempdir");
    // Self-signed and for a name the URL does not use: the pin alone identifies it.
    let hub_cert = self_signed(pki.path(), "hub", &["hub.county.invalid"]);
    let unrelated = self_signed(pki.path(), "unrelated", &["127.0.0.1"]);
    let hub = TestHub::tls(&hub_cert, KEY).await;
    let (url, wrong_pin) = (hub.url("127.0.0.1"), unrelated.sha256_hex());
    let mut app = TestApp::start(move |c| {
        c.hub_url = url;
        c.hub_key = KEY.into();
        c.hub_cert_sha256 = Some(wrong_pin);
    })
    .await;
    let sent = send_study(&app).await;
    let error = wait_for_error_everywhere(&app, "hub certificate not trusted").await;
    assert!(
        error.contains(&format!(
            "certificate SHA-256 {} does not match the pinned {}",
            hub_cert.sha256_hex(),
            unrelated.sha256_hex()
        )),
        "{error}"
    );
    assert!(hub.stored().is_empty());

    // Pinned as `openssl x509 -fingerprint -sha256` prints it: upper case with colons.
    let right_pin = hub_cert
        .sha256_hex()
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    app.restart(move |c| c.hub_cert_sha256 = Some(right_pin))
        .await;
    wait_until_delivered(&app).await;
    assert_eq!(hub.stored(), sent);
    assert!(app.quarantine().await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_key_is_reported_and_nothing_is_quarantined() {
    // A hub that needs a key, reached without one (plain http: test set-ups only).
    let plain = TestHub::plain(KEY).await;
    let url = plain.url("127.0.0.1");
    let mut app = TestApp::start(move |c| c.hub_url = url).await;
    let sent = send_study(&app).await;
    let error = wait_for_error_everywhere(&app, "hub requires a gateway key (401)").await;
    assert!(error.contains("set hub_key or hub_key_file"), "{error}");
    assert!(plain.refused() > 0);
    assert!(plain.stored().is_empty());

    // Over TLS with the wrong key.
    let pki = tempfile::tempdir().expect("tempdir");
    let county = TestCa::new(pki.path(), "county");
    let hub_cert = county.issue(pki.path(), "hub", &["127.0.0.1"]);
    let hub = TestHub::tls(&hub_cert, KEY).await;
    let (url, ca_file) = (hub.url("127.0.0.1"), county.pem_path.clone());
    app.restart(move |c| {
        c.hub_url = url;
        c.hub_key = "gk_wrong".into();
        c.hub_ca_file = Some(ca_file);
    })
    .await;
    eventually(Duration::from_secs(20), "the refusal recorded", || async {
        app.items().await.iter().all(|i| {
            i.last_error
                .as_deref()
                .is_some_and(|e| e.contains("hub refused the gateway key (401)"))
        })
    })
    .await;
    let items = app.items().await;
    assert!(items.iter().all(|i| i.state == "pending"));
    assert!(app.quarantine().await.is_empty());
    assert!(hub.refused() > 0);
    assert!(hub.stored().is_empty());
    let text = app.status_cli(false).await;
    assert!(
        text.contains("hub refused the gateway key (401): check hub_key"),
        "{text}"
    );
    status_has_no_key(&text);
    status_has_no_key(&app.status_cli(true).await);

    // The right key, from a key file, after a restart.
    let key_file: PathBuf = pki.path().join("hub.key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write key file");
    app.restart(move |c| {
        c.hub_key = "".into();
        c.hub_key_file = Some(key_file);
    })
    .await;
    wait_until_delivered(&app).await;
    assert_eq!(hub.stored(), sent);
    assert!(app.quarantine().await.is_empty());
    app.stop().await;
}

/// A TLS-only DICOM listener: `dicom_tls_ca_file` decides whether clients need a
/// certificate of their own.
async fn tls_gateway(pki: &std::path::Path, require_client_cert: bool) -> (TestApp, TestCa) {
    let ca = TestCa::new(pki, "township");
    let server = ca.issue(pki, "gateway", &["localhost", "127.0.0.1"]);
    let ca_file = ca.pem_path.clone();
    let app = TestApp::start(move |c| {
        c.dicom_tls_cert_file = Some(server.cert_path);
        c.dicom_tls_key_file = Some(server.key_path);
        if require_client_cert {
            c.dicom_tls_ca_file = Some(ca_file);
        }
    })
    .await;
    (app, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicom_tls_works_with_dcmtk_and_plain_associations_are_refused() {
    let pki = tempfile::tempdir().expect("tempdir");
    let (app, ca) = tls_gateway(pki.path(), false).await;
    let ca_file = ca.pem_path.to_str().expect("utf8 path").to_string();
    // dcmtk checks our certificate against the CA (`+cf`), without one of its own.
    let echo = app.echoscu(&["+tla", "+cf", &ca_file]).await;
    assert!(echo.success, "{}", echo.output);
    let run = app
        .storescu(
            &["+tla", "+cf", &ca_file],
            &[testdata("single/CT_small.dcm")],
        )
        .await;
    assert_eq!(run.stored(), 1, "{}", run.output);

    let plain = app.storescu(&[], &[testdata("single/MR_small.dcm")]).await;
    assert!(
        !plain.success,
        "plain association accepted: {}",
        plain.output
    );
    assert_eq!(plain.stored(), 0, "{}", plain.output);
    let echo = app.echoscu(&[]).await;
    assert!(!echo.success, "plain C-ECHO accepted: {}", echo.output);

    // A client that does not trust our certificate gets nowhere either.
    let stranger = TestCa::new(pki.path(), "stranger");
    let stranger_file = stranger.pem_path.to_str().expect("utf8 path").to_string();
    let run = app
        .storescu(
            &["+tla", "+cf", &stranger_file],
            &[testdata("single/MR_small.dcm")],
        )
        .await;
    assert_eq!(run.stored(), 0, "{}", run.output);

    let items = app.items().await;
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(
        items[0].sop_instance_uid,
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicom_tls_with_a_client_ca_requires_a_client_certificate() {
    let pki = tempfile::tempdir().expect("tempdir");
    let (app, ca) = tls_gateway(pki.path(), true).await;
    let modality = ca.issue(pki.path(), "modality", &["ct1.township.invalid"]);
    let ca_file = ca.pem_path.to_str().expect("utf8 path").to_string();
    let key = modality.key_path.to_str().expect("utf8 path").to_string();
    let cert = modality.cert_path.to_str().expect("utf8 path").to_string();

    let run = app
        .storescu(
            &["+tls", &key, &cert, "-pw", "+cf", &ca_file],
            &[testdata("single/CT_small.dcm")],
        )
        .await;
    assert_eq!(run.stored(), 1, "{}", run.output);

    // Without a client certificate: refused.
    let run = app
        .storescu(
            &["+tla", "+cf", &ca_file],
            &[testdata("single/MR_small.dcm")],
        )
        .await;
    assert_eq!(run.stored(), 0, "{}", run.output);
    assert!(!run.success, "{}", run.output);

    // With a certificate from another CA: refused.
    let stranger = TestCa::new(pki.path(), "stranger");
    let impostor = stranger.issue(pki.path(), "impostor", &["ct1.township.invalid"]);
    let run = app
        .storescu(
            &[
                "+tls",
                impostor.key_path.to_str().expect("utf8 path"),
                impostor.cert_path.to_str().expect("utf8 path"),
                "-pw",
                "+cf",
                &ca_file,
            ],
            &[testdata("single/MR_small.dcm")],
        )
        .await;
    assert_eq!(run.stored(), 0, "{}", run.output);
    assert_eq!(app.items().await.len(), 1);
    app.stop().await;
}
