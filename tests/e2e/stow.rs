//! STOW-RS straight into the hub: idempotency, conflicts, Chinese text and bad input.

use anyhow::{ensure, Context, Result};
use tests::{
    attr, get_json, multipart, retrieve_parts, sop_uids, stow, testdata, Backend, Env, Hub,
};

use crate::{make_dicom, on_both_backends};

on_both_backends!(
    resend_is_idempotent_and_conflict_keeps_original,
    chinese_names_decode,
    bad_input_is_refused_and_the_rest_stored
);

fn read(rel: &str) -> Result<Vec<u8>> {
    std::fs::read(testdata(rel)).with_context(|| format!("test data {rel}"))
}

pub async fn resend_is_idempotent_and_conflict_keeps_original(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let mr = read("dicom/single/MR_small.dcm")?;
    let (status, body) = stow(&hub.url, None, std::slice::from_ref(&mr)).await?;
    ensure!(status == 200, "first store: {status} {body}");
    let (status, body) = stow(&hub.url, None, std::slice::from_ref(&mr)).await?;
    ensure!(
        status == 200 && sop_uids(&body, "00081199").len() == 1,
        "identical resend: {status} {body}"
    );

    // The same data set in a file written by another sender (its own meta group) is the
    // same instance, not a conflict.
    let rewrapped = with_other_meta(&mr)?;
    ensure!(rewrapped != mr);
    let (status, body) = stow(&hub.url, None, &[rewrapped]).await?;
    ensure!(status == 200, "re-wrapped resend: {status} {body}");

    // Same SOP Instance UID, different bytes (implicit VR encoding of the same image).
    let other = read("dicom/single/MR_small_implicit.dcm")?;
    let (status, body) = stow(&hub.url, None, &[other]).await?;
    ensure!(status == 409, "conflict must be refused: {status} {body}");
    let failed = &body["00081198"]["Value"][0];
    ensure!(
        attr(failed, "00081197").as_deref() == Some("273"),
        "reason 0x0111: {failed}"
    );
    ensure!(
        attr(failed, "00000902").is_some_and(|c| c.contains("different data set")),
        "comment: {failed}"
    );

    let storage = env.storage().await?;
    let sop = "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457";
    let stored = storage::index::find_instance(&storage.db, sop)
        .await?
        .context("stored")?;
    let parts = retrieve_parts(&format!(
        "{}/studies/{}/series/{}/instances/{sop}",
        hub.dicomweb(),
        stored.study_uid,
        stored.series_uid
    ))
    .await?;
    ensure!(parts == vec![mr], "the original must be kept byte for byte");
    let (_, exams) = get_json(&format!("{}/api/exams", hub.url)).await?;
    ensure!(
        exams.as_array().map(Vec::len) == Some(1),
        "one exam: {exams}"
    );
    Ok(())
}

/// The same file with its ImplementationVersionName (0002,0013) changed, as another
/// sender's toolkit would write it.
fn with_other_meta(file: &[u8]) -> Result<Vec<u8>> {
    let mut out = file.to_vec();
    let at = out
        .windows(4)
        .position(|w| w == [0x02, 0x00, 0x13, 0x00])
        .context("ImplementationVersionName in meta group")?;
    let len = u16::from_le_bytes([out[at + 6], out[at + 7]]) as usize;
    for b in &mut out[at + 8..at + 8 + len] {
        *b = if b.is_ascii_alphanumeric() { b'X' } else { *b };
    }
    Ok(out)
}

pub async fn chinese_names_decode(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let files = make_dicom(&["chinese", env.path("zh").to_str().context("path")?]);
    let parts: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let (status, body) = stow(&hub.url, None, &parts).await?;
    ensure!(status == 200, "{status} {body}");
    for (query, ideographic) in [("王*", "王^芳"), ("张^三", "张^三"), ("zhang*", "张^三")]
    {
        let (status, found) =
            get_json(&format!("{}/studies?PatientName={query}", hub.dicomweb())).await?;
        ensure!(status == 200, "{status}");
        let found = found.as_array().context("array")?;
        ensure!(found.len() == 1, "PatientName={query}: {found:?}");
        let pn = &found[0]["00100010"]["Value"][0];
        ensure!(
            pn["Ideographic"] == ideographic,
            "PatientName={query}: {pn}"
        );
        let study = attr(&found[0], "0020000D").context("uid")?;
        let (_, meta) = get_json(&format!("{}/studies/{study}/metadata", hub.dicomweb())).await?;
        ensure!(
            meta[0]["00081030"]["Value"][0] == "胸部CT平扫",
            "StudyDescription decoded: {}",
            meta[0]["00081030"]
        );
    }
    Ok(())
}

/// A tiny file whose header declares a gigabyte element.
fn hostile_lengths() -> Vec<u8> {
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    let ts = b"1.2.840.10008.1.2.1\0";
    f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    f.extend_from_slice(&(ts.len() as u16).to_le_bytes());
    f.extend_from_slice(ts);
    // (0008,0016) UI declaring 60000 bytes... and an OB declaring 1 GiB.
    f.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0]);
    f.extend_from_slice(&(1u32 << 30).to_le_bytes());
    f.extend_from_slice(&[0u8; 64]);
    f
}

pub async fn bad_input_is_refused_and_the_rest_stored(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let good = read("dicom/single/CT_small.dcm")?;
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 3);
    let truncated_pixels = read("dicom/edge/MR_truncated.dcm")?;
    let no_uids = read("dicom/edge/empty_charset_LEI.dcm")?;
    let bad_uid =
        std::fs::read(&make_dicom(&["bad-uid", env.path("bad").to_str().context("path")?])[0])?;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not DICOM", b"this is not a DICOM file at all, just text".to_vec(), "not a DICOM Part 10 file"),
        ("truncated", truncated, "truncated"),
        ("no UIDs", no_uids, "missing required attribute"),
        ("malformed UID", bad_uid, "invalid MediaStorageSOPInstanceUID: UID \"1.2.3.4.abc\" contains a character other than digits and dots"),
        ("gigabyte lengths", hostile_lengths(), "declares 1073741824 bytes"),
        ("pixel data cut short", truncated_pixels, "element (7FE0,0010) declares"),
    ];
    let mut parts: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
    parts.push(good);
    let (status, body) = stow(&hub.url, Some("township-a"), &parts).await?;
    ensure!(status == 202, "mixed request must be 202: {status} {body}");
    let failed = body["00081198"]["Value"].as_array().context("failures")?;
    for (name, _, expected) in &cases {
        ensure!(
            failed
                .iter()
                .any(|f| attr(f, "00000902").is_some_and(|c| c.contains(expected))),
            "{name}: no failure mentioning {expected:?} in {failed:?}"
        );
    }
    let stored = sop_uids(&body, "00081199");
    ensure!(
        stored.contains(&"1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322".to_string()),
        "good CT stored: {body}"
    );
    // The hostile file must not have made the hub allocate what it declared.
    let peak = hub.proc.peak_rss_kib().context("rss")?;
    ensure!(
        peak < 300 * 1024,
        "hub peak RSS {peak} KiB after hostile input"
    );

    // Wrong media types.
    let client = reqwest::Client::new();
    let key = env.accounts()?.key("local")?.to_string();
    for ct in [
        "application/json",
        "multipart/related; type=\"application/dicom+json\"; boundary=X",
        "multipart/form-data; boundary=X",
    ] {
        let resp = client
            .post(format!("{}/studies", hub.dicomweb()))
            .bearer_auth(&key)
            .header("Content-Type", ct)
            .body(multipart(
                "X",
                &[("application/dicom", read("dicom/single/CT_small.dcm")?)],
            ))
            .send()
            .await?;
        ensure!(resp.status().as_u16() == 415, "{ct}: {}", resp.status());
    }
    // A study URL that disagrees with the instance, and a malformed one.
    let resp = client
        .post(format!("{}/studies/1.2.3.4", hub.dicomweb()))
        .bearer_auth(&key)
        .header(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=X",
        )
        .body(multipart(
            "X",
            &[("application/dicom", read("dicom/single/MR_small.dcm")?)],
        ))
        .send()
        .await?;
    ensure!(
        resp.status().as_u16() == 409,
        "study mismatch: {}",
        resp.status()
    );
    let resp = client
        .post(format!("{}/studies/1.2.x", hub.dicomweb()))
        .bearer_auth(&key)
        .header(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=X",
        )
        .body(multipart("X", &[]))
        .send()
        .await?;
    ensure!(
        resp.status().as_u16() == 400,
        "malformed study UID: {}",
        resp.status()
    );
    Ok(())
}

/// An instance over the configured size is refused whole, at STOW (413 when nothing
/// else was sent, the reason in the failed SOP sequence beside stored ones) and at the
/// gateway's C-STORE (0xA700), and nothing of it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_over_the_size_limit_are_refused() -> Result<()> {
    let env = Env::new(Backend::SqliteLocal).await?;
    // Two real instances of different sizes; the limit lies between them.
    let ct = testdata("dicom/single/CT_small.dcm");
    let generated = crate::make_study(&env, "gen", 1, "too-large", &[]).remove(0);
    let (mut small_file, mut large_file) = (generated, ct);
    if std::fs::metadata(&small_file)?.len() > std::fs::metadata(&large_file)?.len() {
        std::mem::swap(&mut small_file, &mut large_file);
    }
    let (small, large) = (std::fs::read(&small_file)?, std::fs::read(&large_file)?);
    let limit = (small.len() + large.len()) / 2;
    ensure!(
        small.len() < limit && limit < large.len(),
        "sizes {} and {}",
        small.len(),
        large.len()
    );
    let hub = Hub::start_with(
        &env,
        "hub",
        0,
        &[("HUB_MAX_INSTANCE_BYTES", &limit.to_string())],
    )?;
    let (status, body) = stow(&hub.url, Some("township-a"), std::slice::from_ref(&large)).await?;
    ensure!(status == 413, "only a too-large instance: {status} {body}");
    ensure!(
        body.to_string().contains("bytes accepted per instance"),
        "the reason is named: {body}"
    );
    let (status, body) = stow(&hub.url, Some("township-a"), &[large.clone(), small]).await?;
    ensure!(status == 202, "one too large, one stored: {status} {body}");

    // The gateway refuses it at C-STORE; a real storescu sees the failure status.
    let gw = tests::Gateway::start_with(
        &env,
        "gw",
        &hub.url,
        "township-a",
        &format!("max_instance_bytes = {limit}"),
    )?;
    let (host, port) = gw.dicom.rsplit_once(':').context("host:port")?;
    let out = std::process::Command::new("/usr/bin/storescu")
        .args(["-v", "-aec", &gw.ae, "-nh", host, port])
        .arg(&large_file)
        .output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        said.contains("0xa700")
            || said.contains("OutOfResources")
            || said.contains("Out of Resources"),
        "storescu sees the refusal: {said}"
    );
    let status = gw.status()?;
    ensure!(
        status.contains("queue: 0 pending"),
        "nothing of it was queued: {status}"
    );
    Ok(())
}
