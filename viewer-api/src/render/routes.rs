//! HTTP handlers of rendered instances, frames and thumbnails.

use access::Caller;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use storage::index::StoredInstance;

use super::params::{self, RenderParams};
use super::{cache, encode, parse_frames, pipeline, with_instance};
use crate::error::{instance_uids, parse_uid, ApiError};
use crate::ViewerState;

use super::thumbnails::{self, THUMBNAIL_SIDE};

/// `GET .../instances/{instance}/rendered`
pub async fn instance_rendered(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (study, series, sop) = instance_uids(&path.0, &path.1, &path.2)?;
    let p = params::parse(&req, None)?;
    serve(
        &caller,
        &state,
        &study,
        Some(&series),
        Some(&sop),
        1,
        p,
        false,
    )
    .await
}

/// `GET .../instances/{instance}/frames/{frame}/rendered` (one frame).
pub async fn frame_rendered(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (study, series, sop) = instance_uids(&path.0, &path.1, &path.2)?;
    let frame = parse_frames(&path.3, 1)?[0];
    let p = params::parse(&req, None)?;
    serve(
        &caller,
        &state,
        &study,
        Some(&series),
        Some(&sop),
        frame,
        p,
        false,
    )
    .await
}

/// `GET .../instances/{instance}/thumbnail`
pub async fn instance_thumbnail(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (study, series, sop) = instance_uids(&path.0, &path.1, &path.2)?;
    let p = params::parse(&req, Some((THUMBNAIL_SIDE, THUMBNAIL_SIDE)))?;
    serve(
        &caller,
        &state,
        &study,
        Some(&series),
        Some(&sop),
        1,
        p,
        true,
    )
    .await
}

/// `GET .../series/{series}/thumbnail`: the middle image of the series.
pub async fn series_thumbnail(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path.0)?;
    let series = parse_uid("SeriesInstanceUID in path", &path.1)?;
    let p = params::parse(&req, Some((THUMBNAIL_SIDE, THUMBNAIL_SIDE)))?;
    serve(&caller, &state, &study, Some(&series), None, 1, p, true).await
}

/// `GET /studies/{study}/thumbnail`: the middle image of the study's first image series.
pub async fn study_thumbnail(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    let p = params::parse(&req, Some((THUMBNAIL_SIDE, THUMBNAIL_SIDE)))?;
    serve(&caller, &state, &study, None, None, 1, p, true).await
}

/// `Server-Timing` (W3C) of a rendered answer: the handler's time (index lookups, audit,
/// cache, render) and, on a cache miss, the load+decode+window+encode part. Lets a viewer's
/// developer tools and the benchmark see where the server time goes.
pub(crate) fn server_timing(started: Instant, source: &Source) -> (header::HeaderName, String) {
    let total = started.elapsed().as_secs_f64() * 1e3;
    let value = match source {
        Source::Rendered(r) => format!("app;dur={total:.2}, render;dur={r:.2}"),
        Source::Cache => format!("app;dur={total:.2}, cache;desc=hit"),
        Source::Stored => format!("app;dur={total:.2}, thumbnail;desc=stored"),
    };
    (header::HeaderName::from_static("server-timing"), value)
}

/// Rendered images per series or study request: a series of a few hundred slices is
/// normal, more is better asked for instance by instance.
const MAX_RENDERED_PARTS: usize = 2000;

/// Instances rendered at once for a series or study request (decoding is further capped
/// by the decode permits).
const RENDER_AHEAD: usize = 2;

/// `GET /studies/{study}/series/{series}/rendered`
pub async fn series_rendered(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path.0)?;
    let series = parse_uid("SeriesInstanceUID in path", &path.1)?;
    let p = params::parse_multipart(&req)?;
    serve_many(&caller, &state, &study, Some(&series), p).await
}

/// `GET /studies/{study}/rendered`
pub async fn study_rendered(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    let p = params::parse_multipart(&req)?;
    serve_many(&caller, &state, &study, None, p).await
}

/// PS3.18 10.4.1.1.3 for a series or a study: `multipart/related; type="image/jpeg"` (or
/// png), one part per frame of every image instance, in series and instance order, each
/// with the Content-Location of its frame.
async fn serve_many(
    caller: &Caller,
    state: &ViewerState,
    study: &str,
    series: Option<&str>,
    params: RenderParams,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (visible, instances) =
        tokio::try_join!(crate::wado::visible(caller, state, study), async {
            storage::index::instances(&state.storage.db, study, series, None)
                .await
                .map_err(ApiError::from)
        },)?;
    let images: Vec<StoredInstance> = instances
        .into_iter()
        .filter(|i| is_image_class(&i.sop_class_uid))
        .collect();
    if images.is_empty() {
        return Err(ApiError::not_found(
            "no such study or series (or no image in it)",
        ));
    }
    if images.len() > MAX_RENDERED_PARTS {
        return Err(too_many(images.len()));
    }
    let detail =
        serde_json::json!({ "rendered": true, "series": series, "instances": images.len() });
    caller
        .audit_study_view(&state.storage.db, &visible, detail)
        .await?;
    let format = params.format;
    let rendered: Vec<Vec<Bytes>> = futures_util::stream::iter(images.iter())
        .map(|inst| render_all_frames(state, inst, params.clone()))
        .buffered(RENDER_AHEAD)
        .try_collect()
        .await?;
    let parts: usize = rendered.iter().map(Vec::len).sum();
    if parts > MAX_RENDERED_PARTS {
        return Err(too_many(parts));
    }
    let boundary = uuid::Uuid::new_v4().simple().to_string();
    let mut body = Vec::with_capacity(rendered.iter().flatten().map(|b| b.len() + 256).sum());
    for (inst, frames) in images.iter().zip(&rendered) {
        for (n, image) in frames.iter().enumerate() {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Type: {}\r\nContent-Length: {}\r\nContent-Location: /dicomweb/studies/{}/series/{}/instances/{}/frames/{}/rendered\r\n\r\n",
                    format.mime(),
                    image.len(),
                    inst.study_uid,
                    inst.series_uid,
                    inst.sop_instance_uid,
                    n + 1
                )
                .as_bytes(),
            );
            body.extend_from_slice(image);
            body.extend_from_slice(b"\r\n");
        }
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(HttpResponse::Ok()
        .content_type(format!(
            "multipart/related; type=\"{}\"; boundary={boundary}",
            format.mime()
        ))
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .insert_header(server_timing(
            started,
            &Source::Rendered(started.elapsed().as_secs_f64() * 1e3),
        ))
        .body(body))
}

fn too_many(n: usize) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_images",
        format!("{n} images; a rendered series or study answers at most {MAX_RENDERED_PARTS}: ask per instance"),
    )
}

/// Every frame of `inst` rendered and encoded (one decode of the file for all of them);
/// single-frame images come from and go to the cache like instance requests.
async fn render_all_frames(
    state: &ViewerState,
    inst: &StoredInstance,
    params: RenderParams,
) -> Result<Vec<Bytes>, ApiError> {
    let key = format!("{}#1#{}", inst.blob_key, params.cache_key());
    let hit = cache::global()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key);
    if let Some(b) = hit {
        return Ok(vec![b]);
    }
    let frames = with_instance(state, inst, move |obj| {
        let n = pipeline::number_of_frames(obj) as usize;
        if n > MAX_RENDERED_PARTS {
            return Err(pipeline::RenderError::Unsupported(format!(
                "{n} frames; ask for them with .../frames/{{list}}/rendered"
            )));
        }
        (1..=n as u32)
            .map(|f| {
                let img = pipeline::render(obj, f, &params)?;
                encode::encode(&img, params.format, params.quality).map(Bytes::from)
            })
            .collect::<Result<Vec<Bytes>, _>>()
    })
    .await?;
    if let [one] = frames.as_slice() {
        cache::global()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .put(key, one.clone());
    }
    Ok(frames)
}

/// SOP classes without pixel data, skipped when choosing a series or study thumbnail:
/// structured reports, waveforms (ECG), encapsulated documents, presentation states.
fn is_image_class(uid: &str) -> bool {
    const NOT_IMAGES: [&str; 4] = [
        "1.2.840.10008.5.1.4.1.1.88.",
        "1.2.840.10008.5.1.4.1.1.9.",
        "1.2.840.10008.5.1.4.1.1.104.",
        "1.2.840.10008.5.1.4.1.1.11.",
    ];
    !NOT_IMAGES.iter().any(|p| uid.starts_with(p))
}

/// The representative image of a series or study: instances come ordered by series and
/// instance number, so the middle of the first image series is a mid-volume slice.
pub(crate) fn representative(instances: Vec<StoredInstance>) -> Option<StoredInstance> {
    let images: Vec<StoredInstance> = instances
        .into_iter()
        .filter(|i| is_image_class(&i.sop_class_uid))
        .collect();
    let series = images.first()?.series_uid.clone();
    let mut first_series: Vec<StoredInstance> = images
        .into_iter()
        .filter(|i| i.series_uid == series)
        .collect();
    let mid = first_series.len() / 2;
    Some(first_series.swap_remove(mid))
}

/// Where the bytes of an answer came from (reported in `Server-Timing`).
pub(crate) enum Source {
    /// Rendered now, in this many ms.
    Rendered(f64),
    /// The in-memory cache.
    Cache,
    /// The thumbnail stored at ingest.
    Stored,
}

#[allow(clippy::too_many_arguments)] // one handler body for six routes
async fn serve(
    caller: &Caller,
    state: &ViewerState,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
    frame: u32,
    params: RenderParams,
    thumbnail: bool,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let format = params.format;
    // Authorization and the instance lookup are independent reads: run them together.
    let (visible, instances) =
        tokio::try_join!(crate::wado::visible(caller, state, study), async {
            storage::index::instances(&state.storage.db, study, series, sop)
                .await
                .map_err(ApiError::from)
        },)?;
    let inst = if sop.is_some() {
        instances.into_iter().next()
    } else {
        representative(instances)
    }
    .ok_or_else(|| ApiError::not_found("no such study, series or instance (or no image in it)"))?;
    let detail = serde_json::json!({
        "rendered": true, "series": inst.series_uid, "instance": inst.sop_instance_uid, "frame": frame,
    });
    // The audit write (a durable commit) and the render run at once; the image is sent
    // only when both succeeded, so no image leaves without its event.
    let audit = async {
        caller
            .audit_study_view(&state.storage.db, &visible, detail)
            .await
            .map_err(ApiError::from)
    };
    let image = async {
        if thumbnail && frame == 1 && params == thumbnails::default_params() {
            if let Some(b) = stored_thumbnail(state, &inst).await {
                return Ok((b, Source::Stored));
            }
        }
        render_cached(state, &inst, frame, params).await
    };
    let ((), (body, source)) = tokio::try_join!(audit, image)?;
    Ok(HttpResponse::Ok()
        .content_type(format.mime())
        // Private: the image is patient data behind authentication.
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .insert_header(server_timing(started, &source))
        .body(body))
}

/// The thumbnail made at ingest, if it is there (any failure: render instead).
async fn stored_thumbnail(state: &ViewerState, inst: &StoredInstance) -> Option<Bytes> {
    match state
        .storage
        .blobs
        .get_bytes(&thumbnails::thumbnail_key(&inst.blob_key))
        .await
    {
        Ok(b) => Some(b),
        Err(storage::StorageError::BlobNotFound(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, "stored thumbnail unreadable; rendering it");
            None
        }
    }
}

/// The encoded image of `frame` of `inst` from the cache, or rendered and cached; with
/// the render time in ms on a miss.
async fn render_cached(
    state: &ViewerState,
    inst: &StoredInstance,
    frame: u32,
    params: RenderParams,
) -> Result<(Bytes, Source), ApiError> {
    let key = format!("{}#{frame}#{}", inst.blob_key, params.cache_key());
    // A poisoned lock only means another request panicked mid-update of a cache: the
    // map is still consistent enough to use, and serving beats failing.
    let hit = cache::global()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key);
    Ok(match hit {
        Some(b) => (b, Source::Cache),
        None => {
            let t = Instant::now();
            let encoded = super::render_encoded(&state.storage.blobs, inst, frame, params)
                .await
                .map_err(|e| super::blob_error(inst, e))?;
            let b = Bytes::from(encoded);
            cache::global()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .put(key, b.clone());
            (b, Source::Rendered(t.elapsed().as_secs_f64() * 1e3))
        }
    })
}
