//! Rendered images over DICOMweb (first part of the viewer issue): rendered JPEG/PNG with
//! windowing and viewport, thumbnails, uncompressed frames; access rules as for WADO.

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use tests::{call, stow, testdata, Backend, Env, Hub};

use crate::on_both_backends;

on_both_backends!(rendered_thumbnail_and_frames);

async fn get(url: &str, token: &str, accept: Option<&str>) -> Result<(u16, String, Vec<u8>)> {
    let mut req = reqwest::Client::new().get(url).bearer_auth(token);
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((status, ct, resp.bytes().await?.to_vec()))
}

pub async fn rendered_thumbnail_and_frames(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let ct = std::fs::read(testdata("dicom/single/CT_small.dcm"))?;
    let (status, body) = stow(&hub.url, Some("township-a"), &[ct]).await?;
    ensure!(status == 200, "{status} {body}");
    let reader = env.accounts()?.reader.clone();
    let (_, found) = call(
        Method::GET,
        &format!("{}/studies?includefield=0020000E", hub.dicomweb()),
        Some(&reader),
        None,
    )
    .await?;
    let study = tests::attr(&found[0], "0020000D").context("study")?;
    let (_, series) = call(
        Method::GET,
        &format!("{}/studies/{study}/series", hub.dicomweb()),
        Some(&reader),
        None,
    )
    .await?;
    let se = tests::attr(&series[0], "0020000E").context("series")?;
    let (_, inst) = call(
        Method::GET,
        &format!("{}/studies/{study}/series/{se}/instances", hub.dicomweb()),
        Some(&reader),
        None,
    )
    .await?;
    let sop = tests::attr(&inst[0], "00080018").context("sop")?;
    let base = format!(
        "{}/studies/{study}/series/{se}/instances/{sop}",
        hub.dicomweb()
    );

    let (status, ct, jpeg) = get(
        &format!("{base}/rendered?window=40,400&viewport=64,64"),
        &reader,
        None,
    )
    .await?;
    ensure!(
        status == 200 && ct.starts_with("image/jpeg") && jpeg.starts_with(&[0xFF, 0xD8]),
        "rendered: {status} {ct}"
    );
    let (status, ct, png) = get(&format!("{base}/rendered"), &reader, Some("image/png")).await?;
    ensure!(
        status == 200 && ct.starts_with("image/png") && png.starts_with(b"\x89PNG"),
        "png: {status} {ct}"
    );
    let (status, _, thumb) = get(
        &format!("{}/studies/{study}/thumbnail", hub.dicomweb()),
        &reader,
        None,
    )
    .await?;
    ensure!(
        status == 200 && thumb.starts_with(&[0xFF, 0xD8]),
        "thumbnail: {status}"
    );
    let (status, ct, _) = get(&format!("{base}/frames/1"), &reader, None).await?;
    ensure!(
        status == 200 && ct.contains("multipart/related"),
        "frames: {status} {ct}"
    );
    let (status, _, body) = get(&format!("{base}/rendered?window=abc"), &reader, None).await?;
    ensure!(
        status == 400 && String::from_utf8_lossy(&body).contains("window"),
        "bad window: {status}"
    );
    // Another site's technician: as if it did not exist.
    let storage = env.storage().await?;
    let tech_b = tests::accounts::create_user(
        &storage.db,
        &tests::accounts::person(
            "tech-b",
            storage::accounts::Role::Technician,
            &["township-b"],
        ),
    )
    .await?;
    let (status, _, _) = get(&format!("{base}/rendered"), &tech_b, None).await?;
    ensure!(status == 404, "another site's rendered image: {status}");
    Ok(())
}
