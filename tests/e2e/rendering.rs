//! Rendered images over DICOMweb (first part of the viewer issue): rendered JPEG/PNG with
//! windowing and viewport, thumbnails, uncompressed frames; access rules as for WADO.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use reqwest::Method;
use serde_json::json;
use tests::{call, stow, testdata, Backend, Env, Hub};

use crate::on_both_backends;

on_both_backends!(
    rendered_thumbnail_and_frames,
    rendered_matches_pydicom,
    series_study_rendered_and_ingest_thumbnails,
    thumbnails_a_crash_left_unmade_are_made_after_restart,
    cors_for_other_origin_viewers
);

/// GET as `token`: (status, Content-Type, the response to read).
async fn request(
    url: &str,
    token: &str,
    accept: Option<&str>,
) -> Result<(u16, String, reqwest::Response)> {
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
    Ok((status, ct, resp))
}

async fn get(url: &str, token: &str, accept: Option<&str>) -> Result<(u16, String, Vec<u8>)> {
    let (status, ct, resp) = request(url, token, accept).await?;
    Ok((status, ct, resp.bytes().await?.to_vec()))
}

/// The value of `tag` in the first answer of a QIDO query, as `token`.
async fn first_of(url: &str, token: &str, tag: &str) -> Result<String> {
    let (status, found) = call(Method::GET, url, Some(token), None).await?;
    ensure!(status == 200, "{url}: {status} {found}");
    tests::attr(&found[0], tag).with_context(|| format!("{tag} in the answer of {url}"))
}

pub async fn rendered_thumbnail_and_frames(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let ct = std::fs::read(testdata("dicom/single/CT_small.dcm"))?;
    let (status, body) = stow(&hub.url, Some("township-a"), &[ct]).await?;
    ensure!(status == 200, "{status} {body}");
    let reader = env.accounts()?.reader.clone();
    let root = hub.dicomweb();
    let study = first_of(&format!("{root}/studies"), &reader, "0020000D").await?;
    let se = first_of(
        &format!("{root}/studies/{study}/series"),
        &reader,
        "0020000E",
    )
    .await?;
    let sop = first_of(
        &format!("{root}/studies/{study}/series/{se}/instances"),
        &reader,
        "00080018",
    )
    .await?;
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
    let tech_b = tests::accounts::create_user(&storage.db, &other_site_technician()).await?;
    let (status, _, _) = get(&format!("{base}/rendered"), &tech_b, None).await?;
    ensure!(status == 404, "another site's rendered image: {status}");
    Ok(())
}

/// JPEG-LS lossless: decoded in pure Rust for one component; colour answers 406.
const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";

/// The generated colour JPEG-LS file (`render_check.py prepare`), which the hub refuses.
const JPEG_LS_COLOUR: &str = "jpegls_rgb";

/// Transfer syntaxes of the shared sample data and the generated files, every one of
/// which the comparison covers.
const SAMPLE_SYNTAXES: [&str; 8] = [
    "1.2.840.10008.1.2",      // implicit VR little endian
    "1.2.840.10008.1.2.1",    // explicit VR little endian
    "1.2.840.10008.1.2.1.99", // deflated
    "1.2.840.10008.1.2.5",    // RLE
    "1.2.840.10008.1.2.4.50", // JPEG baseline
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    JPEG_LS_LOSSLESS,
    "1.2.840.10008.1.2.4.81", // JPEG-LS near-lossless (generated)
];

/// One rendered request of the comparison: (path and query after the instance URL,
/// Accept, frame, window, viewport).
type Variant<'a> = (String, &'a str, u32, Option<&'a str>, Option<[u32; 2]>);

/// One file written by `render_check.py prepare`.
struct Prepared {
    path: PathBuf,
    ts: String,
    study: String,
    series: String,
    sop: String,
    frames: u32,
}

impl Prepared {
    fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn url(&self, root: &str) -> String {
        format!(
            "{root}/studies/{}/series/{}/instances/{}",
            self.study, self.series, self.sop
        )
    }
}

fn render_check(args: &[&std::ffi::OsStr]) -> Result<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/render_check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "render_check.py failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// The sample files (one per transfer syntax and colour model) copied with fresh UIDs,
/// plus the generated multi-frame, palette and YBR cases.
fn prepare_samples(env: &Env) -> Result<Vec<Prepared>> {
    let out = env.path("render-samples");
    let mut args: Vec<std::ffi::OsString> = vec!["prepare".into(), out.into()];
    for rel in [
        "single/CT_small.dcm",
        "single/MR_small.dcm",
        "single/MR_small_implicit.dcm",
        "single/SC_rgb_small_odd.dcm",
        "single/examples_rgb_color.dcm",
        "compressed/JPEG2000.dcm",
        "compressed/MR_small_RLE.dcm",
        "compressed/MR_small_jpeg_ls_lossless.dcm",
        "compressed/SC_rgb_jpeg_dcmtk.dcm",
        "compressed/image_dfl.dcm",
        // MONOCHROME1 with a fractional rescale slope, and a CT with a header window.
        "tree/77654033/CR1/6154",
        "tree/77654033/CT2/17106",
    ] {
        args.push(testdata(&format!("dicom/{rel}")).into());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    render_check(&refs)?
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            ensure!(f.len() == 7, "prepare line: {line}");
            Ok(Prepared {
                path: PathBuf::from(f[0]),
                ts: f[1].to_string(),
                study: f[2].to_string(),
                series: f[3].to_string(),
                sop: f[4].to_string(),
                frames: f[5].parse()?,
            })
        })
        .collect()
}

/// The single part of a `multipart/related` answer of WADO-RS frames.
async fn frame_part(url: &str, token: &str) -> Result<Vec<u8>> {
    let (status, _, got) = parts(url, token, None).await?;
    ensure!(status == 200, "{url}: HTTP {status}");
    got.into_iter()
        .next()
        .map(|(_, _, body)| body)
        .context("no part")
}

/// Every transfer syntax of the sample data, rendered by the hub (PNG and JPEG, header
/// window, explicit windows of every VOI LUT function, viewport, frames of a multi-frame
/// image, MONOCHROME1, RGB, YBR, palette, JPEG-LS lossless and near-lossless), agrees
/// with pydicom + numpy; the raw frames agree with pydicom's pixel arrays (CharLS for
/// JPEG-LS); colour JPEG-LS answers 406 naming the syntax.
pub async fn rendered_matches_pydicom(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let files = prepare_samples(&env)?;
    for ts in SAMPLE_SYNTAXES {
        ensure!(
            files.iter().any(|f| f.ts == ts),
            "no sample in transfer syntax {ts}"
        );
    }
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(&f.path))
        .collect::<Result<_, _>>()?;
    let (status, body) = stow(&hub.url, Some("township-a"), &bytes).await?;
    ensure!(status == 200, "STOW: {status} {body}");
    let reader = env.accounts()?.reader.clone();
    let root = hub.dicomweb();
    let images = env.path("rendered");
    std::fs::create_dir_all(&images)?;
    let mut cases = Vec::new();
    let mut n = 0;
    for f in &files {
        let base = f.url(&root);
        if f.name() == JPEG_LS_COLOUR {
            for url in [format!("{base}/rendered"), format!("{base}/frames/1")] {
                let (status, _, body) = get(&url, &reader, None).await?;
                let text = String::from_utf8_lossy(&body);
                ensure!(
                    status == 406
                        && text.contains(JPEG_LS_LOSSLESS)
                        && text.contains("JPEG-LS")
                        && text.contains("colour"),
                    "{url}: expected 406 naming colour JPEG-LS, got {status} {text}"
                );
            }
            continue;
        }
        let mut variants: Vec<Variant> = vec![
            ("rendered".into(), "image/png", 1, None, None),
            ("rendered".into(), "image/jpeg", 1, None, None),
        ];
        if f.name() == "CT_small" {
            for w in ["40,400", "-100,300,linear_exact", "40,80,sigmoid"] {
                variants.push((
                    format!("rendered?window={w}"),
                    "image/png",
                    1,
                    Some(w),
                    None,
                ));
            }
            variants.push((
                "rendered?viewport=64,64".into(),
                "image/png",
                1,
                None,
                Some([64, 64]),
            ));
        }
        for frame in 2..=f.frames {
            variants.push((
                format!("frames/{frame}/rendered"),
                "image/png",
                frame,
                None,
                None,
            ));
        }
        for (query, accept, frame, window, viewport) in variants {
            let url = format!("{base}/{query}");
            let (status, ct, body) = get(&url, &reader, Some(accept)).await?;
            ensure!(
                status == 200 && ct.starts_with(accept),
                "{url}: {status} {ct} {}",
                String::from_utf8_lossy(&body)
            );
            n += 1;
            let image = images.join(format!("{n}.{}", &accept[6..]));
            std::fs::write(&image, &body)?;
            cases.push(json!({
                "dicom": f.path, "image": image, "kind": "rendered", "frame": frame,
                "window": window, "viewport": viewport,
                "format": if accept == "image/png" { "png" } else { "jpeg" },
            }));
        }
        for frame in 1..=f.frames {
            let raw = frame_part(&format!("{base}/frames/{frame}"), &reader).await?;
            n += 1;
            let image = images.join(format!("{n}.raw"));
            std::fs::write(&image, &raw)?;
            cases.push(json!({"dicom": f.path, "image": image, "kind": "frame", "frame": frame}));
        }
    }
    let manifest = env.path("render-cases.json");
    std::fs::write(&manifest, serde_json::to_vec_pretty(&cases)?)?;
    let report = render_check(&["compare".as_ref(), manifest.as_os_str()])?;
    eprintln!("{report}");
    if !report.contains(" 0 failed") {
        bail!("comparison failed:\n{report}");
    }
    Ok(())
}

/// The parts of a `multipart/related` answer: (Content-Type, Content-Location, body).
async fn parts(
    url: &str,
    token: &str,
    accept: Option<&str>,
) -> Result<(u16, String, Vec<(String, String, Vec<u8>)>)> {
    let (status, ct, resp) = request(url, token, accept).await?;
    if status != 200 {
        return Ok((status, ct, Vec::new()));
    }
    let boundary = tests::boundary_of(&ct)?;
    let mut mp = multer::Multipart::new(resp.bytes_stream(), boundary);
    let mut out = Vec::new();
    while let Some(field) = mp.next_field().await? {
        let header = |name: &str| {
            field
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (part_ct, location) = (header("content-type"), header("content-location"));
        out.push((part_ct, location, field.bytes().await?.to_vec()));
    }
    Ok((status, ct, out))
}

/// Series and study `rendered` answer multipart/related of every frame, each part the
/// same image as the frame's own rendered URL; the series thumbnail is made in the
/// background after STOW-RS, stored in the blob store and served from there.
pub async fn series_study_rendered_and_ingest_thumbnails(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let hub = Hub::start(&env, "hub", 0)?;
    let files = crate::make_study(&env, "gen", 3, "rendered-series", &[]);
    let bytes: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let (status, body) = stow(&hub.url, Some("township-a"), &bytes).await?;
    ensure!(status == 200, "STOW: {status} {body}");
    let study = tests::study_uid_of(&files[0])?;
    let reader = env.accounts()?.reader.clone();
    let root = hub.dicomweb();
    let se = first_of(
        &format!("{root}/studies/{study}/series"),
        &reader,
        "0020000E",
    )
    .await?;

    let (status, ct, got) = parts(
        &format!("{root}/studies/{study}/series/{se}/rendered"),
        &reader,
        Some("multipart/related; type=\"image/png\""),
    )
    .await?;
    ensure!(
        status == 200 && ct.starts_with("multipart/related") && ct.contains("image/png"),
        "series rendered: {status} {ct}"
    );
    ensure!(got.len() == 3, "series rendered: {} parts", got.len());
    for (part_ct, location, png) in &got {
        ensure!(
            part_ct == "image/png" && png.starts_with(b"\x89PNG"),
            "part {part_ct}"
        );
        ensure!(
            location.ends_with("/frames/1/rendered"),
            "location {location}"
        );
        let (status, _, single) = get(
            &format!("{}{location}", hub.url),
            &reader,
            Some("image/png"),
        )
        .await?;
        ensure!(
            status == 200 && &single == png,
            "{location}: differs from its part ({status})"
        );
    }
    let (status, ct, got) =
        parts(&format!("{root}/studies/{study}/rendered"), &reader, None).await?;
    ensure!(
        status == 200 && ct.contains("image/jpeg") && got.len() == 3,
        "study rendered: {status} {ct} {} parts",
        got.len()
    );
    ensure!(got
        .iter()
        .all(|(t, _, b)| t == "image/jpeg" && b.starts_with(&[0xFF, 0xD8])));
    let (status, _, _) = parts(
        &format!("{root}/studies/{study}/rendered"),
        &reader,
        Some("application/dicom"),
    )
    .await?;
    ensure!(
        status == 406,
        "study rendered as application/dicom: {status}"
    );

    // The thumbnail made at ingest: the series' middle instance, under a key derived
    // from its original's content-addressed key.
    let storage = env.storage().await?;
    let instances = storage::index::instances(&storage.db, &study, Some(&se), None).await?;
    let middle = &instances[instances.len() / 2];
    let stem = middle
        .blob_key
        .strip_prefix("dicom/")
        .unwrap_or(&middle.blob_key)
        .trim_end_matches(".dcm");
    let key = format!("thumbnails/{stem}.128.jpg");
    tests::wait_for(
        std::time::Duration::from_secs(20),
        "the series thumbnail in the blob store",
        || async { Ok(storage.blobs.exists(&key).await?.then_some(())) },
    )
    .await?;
    let stored = storage.blobs.get_bytes(&key).await?;
    let resp = reqwest::Client::new()
        .get(format!("{root}/studies/{study}/series/{se}/thumbnail"))
        .bearer_auth(&reader)
        .send()
        .await?;
    let timing = resp
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(resp.status() == 200, "thumbnail: {}", resp.status());
    let body = resp.bytes().await?;
    ensure!(
        timing.contains("thumbnail;desc=stored") && body == stored,
        "series thumbnail not served from the stored one: {timing}"
    );

    // Another site's technician: as if the study did not exist.
    let tech_b = tests::accounts::create_user(&storage.db, &other_site_technician()).await?;
    let (status, _, _) = parts(&format!("{root}/studies/{study}/rendered"), &tech_b, None).await?;
    ensure!(status == 404, "another site's rendered study: {status}");
    Ok(())
}

/// A viewer served from another origin (OHIF-style): its preflights are answered for the
/// configured origins only, and its authenticated QIDO (with includefield), series
/// metadata, frames and rendered requests get the CORS headers that let the page read
/// them. Without the setting, no CORS headers at all.
pub async fn cors_for_other_origin_viewers(backend: Backend) -> Result<()> {
    const VIEWER: &str = "http://viewer.example:3000";
    let env = Env::new(backend).await?;
    let plain = Hub::start(&env, "plain", 0)?;
    let hub = Hub::start_with(
        &env,
        "hub",
        0,
        &[(
            "HUB_CORS_ORIGINS",
            "http://viewer.example:3000, https://other.example",
        )],
    )?;
    let ct = std::fs::read(testdata("dicom/single/CT_small.dcm"))?;
    let (status, body) = stow(&hub.url, Some("township-a"), &[ct]).await?;
    ensure!(status == 200, "{status} {body}");
    let reader = env.accounts()?.reader.clone();
    let client = reqwest::Client::new();
    let header = |resp: &reqwest::Response, name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let preflight = |url: String, origin: &'static str| {
        client
            .request(Method::OPTIONS, url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization, accept")
            .send()
    };

    let resp = preflight(format!("{}/studies", hub.dicomweb()), VIEWER).await?;
    ensure!(resp.status().is_success(), "preflight: {}", resp.status());
    ensure!(
        header(&resp, "access-control-allow-origin").as_deref() == Some(VIEWER)
            && header(&resp, "access-control-allow-credentials").as_deref() == Some("true")
            && header(&resp, "access-control-allow-headers")
                .is_some_and(|h| h.to_ascii_lowercase().contains("authorization")),
        "preflight headers: {:?}",
        resp.headers()
    );
    for (h, origin) in [(&hub, "http://elsewhere.example"), (&plain, VIEWER)] {
        let resp = preflight(format!("{}/studies", h.dicomweb()), origin).await?;
        ensure!(
            header(&resp, "access-control-allow-origin").is_none(),
            "{origin} at {}: {:?}",
            h.url,
            resp.headers()
        );
    }

    // What an OHIF-style viewer asks, cross-origin, with the reader's token.
    let get = |url: String, accept: &'static str| {
        client
            .get(url)
            .bearer_auth(&reader)
            .header("Origin", VIEWER)
            .header("Accept", accept)
            .send()
    };
    let root = hub.dicomweb();
    let resp = get(
        format!("{root}/studies?includefield=00081030,00080060&limit=10"),
        "application/dicom+json",
    )
    .await?;
    ensure!(
        resp.status() == 200
            && header(&resp, "access-control-allow-origin").as_deref() == Some(VIEWER),
        "QIDO: {} {:?}",
        resp.status(),
        resp.headers()
    );
    let found: serde_json::Value = resp.json().await?;
    let study = tests::attr(&found[0], "0020000D").context("study")?;
    let resp = get(
        format!("{root}/studies/{study}/series"),
        "application/dicom+json",
    )
    .await?;
    let series: serde_json::Value = resp.json().await?;
    let se = tests::attr(&series[0], "0020000E").context("series")?;
    let resp = get(
        format!("{root}/studies/{study}/series/{se}/metadata"),
        "application/dicom+json",
    )
    .await?;
    ensure!(
        resp.status() == 200
            && header(&resp, "access-control-allow-origin").as_deref() == Some(VIEWER),
        "metadata: {}",
        resp.status()
    );
    let meta: serde_json::Value = resp.json().await?;
    let sop = tests::attr(&meta[0], "00080018").context("sop")?;
    let base = format!("{root}/studies/{study}/series/{se}/instances/{sop}");
    for (url, accept) in [
        (
            format!("{base}/frames/1"),
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
        ),
        (format!("{base}/rendered"), "image/jpeg"),
        (format!("{base}/thumbnail"), "image/jpeg"),
    ] {
        let resp = get(url.clone(), accept).await?;
        ensure!(
            resp.status() == 200
                && header(&resp, "access-control-allow-origin").as_deref() == Some(VIEWER)
                && header(&resp, "access-control-allow-credentials").as_deref() == Some("true"),
            "{url}: {} {:?}",
            resp.status(),
            resp.headers()
        );
    }
    // Without credentials the guard still refuses, and the browser may read why.
    let resp = client
        .get(format!("{root}/studies"))
        .header("Origin", VIEWER)
        .send()
        .await?;
    ensure!(
        resp.status() == 401
            && header(&resp, "access-control-allow-origin").as_deref() == Some(VIEWER),
        "unauthenticated: {}",
        resp.status()
    );
    Ok(())
}

/// A technician of township-b: rendered images of township-a's studies must not exist
/// for them.
fn other_site_technician() -> storage::accounts::NewUser {
    tests::accounts::person(
        "tech-b",
        storage::accounts::Role::Technician,
        &["township-b"],
    )
}

/// The thumbnail queue lives in memory: a hub killed before it made a series' thumbnail
/// finds the series again when it starts, from the index, and makes it.
pub async fn thumbnails_a_crash_left_unmade_are_made_after_restart(backend: Backend) -> Result<()> {
    let env = Env::new(backend).await?;
    let mut hub = Hub::start(&env, "hub", 0)?;
    let files = crate::make_study(&env, "gen", 3, "thumbnail-crash", &[]);
    let bytes: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let (status, body) = stow(&hub.url, Some("township-a"), &bytes).await?;
    // Killed within the queue's quiet period: the thumbnail was never made.
    hub.proc.kill();
    ensure!(status == 200, "STOW: {status} {body}");
    let study = tests::study_uid_of(&files[0])?;
    let storage = env.storage().await?;
    let instances = storage::index::instances(&storage.db, &study, None, None).await?;
    let middle = &instances[instances.len() / 2];
    let key = format!(
        "thumbnails/{}.128.jpg",
        middle
            .blob_key
            .strip_prefix("dicom/")
            .unwrap_or(&middle.blob_key)
            .trim_end_matches(".dcm")
    );
    ensure!(
        !storage.blobs.exists(&key).await?,
        "the thumbnail was made before the kill: the test proves nothing"
    );
    let due = storage::index::thumbnails_due(&storage.db, 10).await?;
    ensure!(due.len() == 1 && due[0].study_uid == study, "due: {due:?}");

    let _hub = Hub::start(&env, "hub-again", 0)?;
    tests::wait_for(
        std::time::Duration::from_secs(20),
        "the thumbnail made after the restart",
        || async { Ok(storage.blobs.exists(&key).await?.then_some(())) },
    )
    .await?;
    tests::wait_for(
        std::time::Duration::from_secs(10),
        "the series recorded as done",
        || async {
            Ok(storage::index::thumbnails_due(&storage.db, 10)
                .await?
                .is_empty()
                .then_some(()))
        },
    )
    .await?;
    Ok(())
}
