//! WADO-RS frames (PS3.18 10.4.1.1.2): uncompressed pixel data of chosen frames as
//! `multipart/related; type="application/octet-stream"`, one part per frame.
//!
//! Uncompressed originals give their frames as stored (little endian); compressed ones
//! are decoded with the rendering decoders, so viewers always get native samples in the
//! Explicit VR Little Endian layout.

use access::Caller;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::{instance_uids, ApiError};
use crate::render::{parse_frames, pipeline, with_instance};
use crate::ViewerState;

/// Explicit VR Little Endian: the layout of the parts we send.
const NATIVE_TS: &str = "1.2.840.10008.1.2.1";

/// Frames per request: a cine loop of a few hundred is plausible, more is a mistake.
const MAX_FRAMES: usize = 2000;

/// Accept must allow `application/octet-stream` parts (or anything).
fn check_accept(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let main = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut ty_ok = true;
        let mut ts_ok = true;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "type" => ty_ok = v.eq_ignore_ascii_case("application/octet-stream"),
                    "transfer-syntax" => ts_ok = v == "*" || v == NATIVE_TS,
                    _ => {}
                }
            }
        }
        let ok = match main.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => ty_ok && ts_ok,
            "application/octet-stream" => ts_ok,
            _ => false,
        };
        if ok {
            return Ok(());
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!("frames are served as multipart/related; type=\"application/octet-stream\"; transfer-syntax={NATIVE_TS}, not {accept}"),
    ))
}

/// `GET .../instances/{instance}/frames/{frames}`
pub async fn frames(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    check_accept(&req)?;
    let (study, series, sop) = instance_uids(&path.0, &path.1, &path.2)?;
    let wanted = parse_frames(&path.3, MAX_FRAMES)?;
    let (visible, instances) =
        tokio::try_join!(crate::wado::visible(&caller, &state, &study), async {
            storage::index::instances(&state.storage.db, &study, Some(&series), Some(&sop))
                .await
                .map_err(ApiError::from)
        },)?;
    let inst = instances
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("no such study, series or instance"))?;
    let detail = serde_json::json!({ "frames": path.3, "series": series, "instance": sop });
    // A viewer fetches frames image by image like rendered images: one view event per
    // reader and study (see `Caller::audit_study_view`), written while the frames are
    // decoded; nothing is sent unless the event is durable.
    let audit = async {
        caller
            .audit_study_view(&state.storage.db, &visible, detail)
            .await
            .map_err(ApiError::from)
    };
    let list = wanted.clone();
    let decode = with_instance(&state, &inst, move |obj| {
        list.iter()
            .map(|&n| pipeline::decode_frame(obj, n).map(|px| px.data))
            .collect::<Result<Vec<Vec<u8>>, _>>()
    });
    let ((), data) = tokio::try_join!(audit, decode)?;
    let boundary = uuid::Uuid::new_v4().simple().to_string();
    let mut body = Vec::with_capacity(data.iter().map(|d| d.len() + 256).sum());
    for (n, frame) in wanted.iter().zip(&data) {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/octet-stream; transfer-syntax={NATIVE_TS}\r\nContent-Length: {}\r\nContent-Location: /dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{n}\r\n\r\n",
                frame.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(frame);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(HttpResponse::Ok()
        .content_type(format!(
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax={NATIVE_TS}; boundary={boundary}"
        ))
        .body(body))
}
