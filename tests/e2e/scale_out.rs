//! The scale-out topology without containers: two hub processes on one PostgreSQL and
//! one S3 bucket; and the compose file that describes it.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use tests::{attr, get_json, retrieve_parts, sop_uids, stow, Backend, Env, Hub, Viewer};

use crate::make_study;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_share_one_database_and_bucket() -> Result<()> {
    let env = Env::new(Backend::PostgresS3).await?;
    let a = Hub::start(&env, "hub-a", 0)?;
    let b = Hub::start(&env, "hub-b", 0)?;
    let files = make_study(&env, "gen", 20, "two", &[]);
    let parts: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    // Both replicas receive overlapping halves at the same time, as behind a proxy with retries.
    let (ra, rb) = tokio::join!(
        stow(&a.url, Some("township-a"), &parts[..14]),
        stow(&b.url, Some("township-a"), &parts[6..])
    );
    let (ra, rb) = (ra?, rb?);
    ensure!(ra.0 == 200 && rb.0 == 200, "{ra:?} {rb:?}");
    let stored: BTreeSet<String> = sop_uids(&ra.1, "00081199")
        .into_iter()
        .chain(sop_uids(&rb.1, "00081199"))
        .collect();
    ensure!(stored.len() == 20);
    for hub in [&a, &b] {
        let (_, studies) = get_json(&format!("{}/studies", hub.dicomweb())).await?;
        let study = &studies.as_array().context("array")?[0];
        ensure!(
            attr(study, "00201208").as_deref() == Some("20"),
            "each instance once, seen from both: {study}"
        );
    }
    let (_, exams) = get_json(&format!("{}/api/exams", a.url)).await?;
    ensure!(exams.as_array().map(Vec::len) == Some(1), "{exams}");

    // The read side running apart serves the same data from the shared backends.
    let viewer = Viewer::start(&env, "viewer")?;
    let (status, studies) = get_json(&format!("{}/dicomweb/studies", viewer.url)).await?;
    ensure!(status == 200, "{status}");
    let study = attr(&studies[0], "0020000D").context("study uid")?;
    let retrieved = retrieve_parts(&format!("{}/dicomweb/studies/{study}", viewer.url)).await?;
    ensure!(
        retrieved.len() == 20,
        "{} instances retrieved",
        retrieved.len()
    );
    for part in &retrieved {
        ensure!(
            parts.contains(part),
            "a retrieved instance differs from every one sent"
        );
    }
    Ok(())
}

#[test]
fn compose_file_is_valid() -> Result<()> {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose.yaml");
    let out = std::process::Command::new("docker-compose")
        .args(["-f", file, "config", "--quiet"])
        .output()?;
    ensure!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(file)?;
    for service in [
        "postgres",
        "objectstore",
        "hub-1",
        "hub-2",
        "viewer-api",
        "proxy",
        "gateway",
    ] {
        ensure!(
            text.contains(&format!("  {service}:")),
            "compose.yaml lacks service {service}"
        );
    }
    ensure!(text.matches("healthcheck:").count() >= 5, "health checks");
    Ok(())
}

/// A deploy stops replicas one by one: a hub asked to stop (SIGTERM) while a gateway
/// long-polls it ends the poll at once instead of holding the stop for the poll's wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_hub_ends_long_polls_at_once() -> Result<()> {
    let env = Env::new(Backend::SqliteLocal).await?;
    let mut hub = Hub::start(&env, "hub", 0)?;
    let _gw = tests::Gateway::start(&env, "gw", &hub.url, "township-a")?;
    // The gateway's first long-poll (50 s) is under way well within this.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let asked = std::time::Instant::now();
    hub.proc.stop();
    let took = asked.elapsed();
    ensure!(
        took < std::time::Duration::from_secs(5),
        "the hub took {took:?} to stop (killed after 10 s): {}",
        hub.proc.log_tail()
    );
    Ok(())
}
