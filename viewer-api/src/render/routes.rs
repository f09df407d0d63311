//! HTTP handlers of rendered instances, frames and thumbnails.

use access::Caller;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use storage::audit::EventType;
use storage::index::StoredInstance;

use super::params::{self, RenderParams};
use super::{cache, encode, parse_frames, pipeline, with_instance};
use crate::error::{parse_uid, ApiError};
use crate::ViewerState;

/// Default thumbnail box (PS3.18 leaves the size to the server).
const THUMBNAIL_SIDE: u32 = 128;

/// `GET .../instances/{instance}/rendered`
pub async fn instance_rendered(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (study, series, sop) = uids3(&path)?;
    let p = params::parse(&req, None)?;
    serve(&caller, &state, &study, Some(&series), Some(&sop), 1, p).await
}

/// `GET .../instances/{instance}/frames/{frame}/rendered` (one frame).
pub async fn frame_rendered(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (study, series, sop) = uids3(&(path.0.clone(), path.1.clone(), path.2.clone()))?;
    let frame = parse_frames(&path.3, 1)?[0];
    let p = params::parse(&req, None)?;
    serve(&caller, &state, &study, Some(&series), Some(&sop), frame, p).await
}

/// `GET .../instances/{instance}/thumbnail`
pub async fn instance_thumbnail(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (study, series, sop) = uids3(&path)?;
    let p = params::parse(&req, Some((THUMBNAIL_SIDE, THUMBNAIL_SIDE)))?;
    serve(&caller, &state, &study, Some(&series), Some(&sop), 1, p).await
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
    serve(&caller, &state, &study, Some(&series), None, 1, p).await
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
    serve(&caller, &state, &study, None, None, 1, p).await
}

fn uids3(path: &(String, String, String)) -> Result<(String, String, String), ApiError> {
    Ok((
        parse_uid("StudyInstanceUID in path", &path.0)?,
        parse_uid("SeriesInstanceUID in path", &path.1)?,
        parse_uid("SOPInstanceUID in path", &path.2)?,
    ))
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
fn representative(instances: Vec<StoredInstance>) -> Option<StoredInstance> {
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

async fn serve(
    caller: &Caller,
    state: &ViewerState,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
    frame: u32,
    params: RenderParams,
) -> Result<HttpResponse, ApiError> {
    let visible = crate::wado::visible(caller, state, study).await?;
    let instances = storage::index::instances(&state.storage.db, study, series, sop).await?;
    let inst = if sop.is_some() {
        instances.into_iter().next()
    } else {
        representative(instances)
    }
    .ok_or_else(|| ApiError::not_found("no such study, series or instance (or no image in it)"))?;
    let detail = serde_json::json!({
        "rendered": true, "series": inst.series_uid, "instance": inst.sop_instance_uid, "frame": frame,
    });
    caller
        .audit_study_read(
            &state.storage.db,
            EventType::DICOM_INSTANCES_ACCESSED,
            &visible,
            detail,
        )
        .await?;

    let key = format!("{}#{frame}#{}", inst.blob_key, params.cache_key());
    let format = params.format;
    // A poisoned lock only means another request panicked mid-update of a cache: the
    // map is still consistent enough to use, and serving beats failing.
    let hit = cache::global()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key);
    let body = match hit {
        Some(b) => b,
        None => {
            let encoded = with_instance(state, &inst, move |obj| {
                let img = pipeline::render(obj, frame, &params)?;
                encode::encode(&img, params.format, params.quality)
            })
            .await?;
            let b = Bytes::from(encoded);
            cache::global()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .put(key, b.clone());
            b
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(format.mime())
        // Private: the image is patient data behind authentication.
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .body(body))
}
