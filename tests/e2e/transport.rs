//! The township-to-county link over HTTPS: the hub serves its certificate, the gateway
//! trusts only the configured CA, and a wrong CA holds everything back until it is fixed.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tests::{wait_for, Backend, Env, Gateway, Hub};

use crate::{make_study, on_both_backends};

on_both_backends!(gateway_to_hub_over_https_needs_the_right_ca);

/// A CA whose certificate is written to `<dir>/<name>.pem`.
fn make_ca(dir: &Path, name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} county CA"));
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    std::fs::write(dir.join(format!("{name}.pem")), ca.pem())?;
    Ok(ca)
}

/// Number of instances the hub's index holds for a study.
async fn stored(env: &Env, study: &str) -> Result<usize> {
    let storage = env.storage().await?;
    let n = storage::index::instances(&storage.db, study, None, None)
        .await?
        .len();
    storage.db.close().await;
    Ok(n)
}

pub async fn gateway_to_hub_over_https_needs_the_right_ca(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let dir = env.path("pki");
    std::fs::create_dir_all(&dir)?;
    let county = make_ca(&dir, "county")?;
    make_ca(&dir, "stranger")?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
        .signed_by(&key, &county)?;
    let (cert_file, key_file) = (dir.join("hub.pem"), dir.join("hub.key"));
    std::fs::write(&cert_file, leaf.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;

    let hub = Hub::start_with(
        &env,
        "hub",
        0,
        &[
            ("HUB_TLS_CERT_FILE", cert_file.to_str().context("path")?),
            ("HUB_TLS_KEY_FILE", key_file.to_str().context("path")?),
        ],
    )?;
    ensure!(
        hub.url.starts_with("https://"),
        "hub not on HTTPS: {}",
        hub.url
    );

    // Plain HTTP to the HTTPS port gets nowhere.
    let plain = hub.url.replacen("https://", "http://", 1);
    let refused = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    ensure!(
        refused.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP answered"
    );

    // A gateway that trusts another CA delivers nothing and says why.
    let ca_line = |name: &str| {
        format!(
            "hub_ca_file = \"{}\"",
            dir.join(format!("{name}.pem")).display()
        )
    };
    let mut gw = Gateway::start_with(&env, "gw", &hub.url, "township-a", &ca_line("stranger"))?;
    let files = make_study(&env, "ct", 3, "https-ct", &[]);
    gw.storescu(&[], &files)?;
    let study = tests::study_uid_of(&files[0])?;
    let status = wait_for(
        Duration::from_secs(30),
        "the certificate error in gateway status",
        || async {
            let s = gw.status()?;
            Ok(s.contains("certificate not trusted").then_some(s))
        },
    )
    .await?;
    ensure!(
        status.contains("rejected by hub: 0; quarantined: 0"),
        "refused or quarantined on a TLS error:\n{status}"
    );
    ensure!(
        stored(&env, &study).await? == 0,
        "delivered through an untrusted certificate"
    );

    // With the county CA configured, everything held back arrives, once.
    gw.proc.stop();
    let config =
        std::fs::read_to_string(&gw.config)?.replace(&ca_line("stranger"), &ca_line("county"));
    std::fs::write(&gw.config, config)?;
    gw = Gateway::restart(&env, "gw", &gw.config)?;
    wait_for(
        Duration::from_secs(60),
        "all instances over HTTPS",
        || async { Ok((stored(&env, &study).await? == 3).then_some(())) },
    )
    .await?;

    // A client trusting the county CA reads over HTTPS with its token.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("county.pem"))?)?;
    let client = reqwest::Client::builder().tls_certs_only([ca]).build()?;
    let resp = client
        .get(format!("{}/api/exams?study={study}", hub.url))
        .bearer_auth(&env.accounts()?.reader)
        .send()
        .await?;
    ensure!(resp.status() == 200, "HTTPS read: {}", resp.status());
    drop(gw);
    Ok(())
}
