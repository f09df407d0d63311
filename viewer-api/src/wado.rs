//! WADO-RS (PS3.18 10.4): retrieve originals as `multipart/related` and metadata as
//! DICOM JSON from the stored headers (never by re-reading the files).

use access::policy::read_scope;
use access::Caller;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use storage::audit::EventType;
use storage::index::StoredInstance;
use storage::scope::VisibleStudy;

use crate::error::{instance_uids, parse_uid, ApiError};
use crate::ViewerState;

/// `GET /studies/{study}`
pub async fn study(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    retrieve(&req, &caller, &state, &study, None, None).await
}

/// `GET /studies/{study}/series/{series}`
pub async fn series(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path.0)?;
    let series = parse_uid("SeriesInstanceUID in path", &path.1)?;
    retrieve(&req, &caller, &state, &study, Some(&series), None).await
}

/// `GET /studies/{study}/series/{series}/instances/{instance}`
pub async fn instance(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (study, series, sop) = instance_uids(&path.0, &path.1, &path.2)?;
    retrieve(&req, &caller, &state, &study, Some(&series), Some(&sop)).await
}

/// `GET /studies/{study}/metadata`
pub async fn study_metadata(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    metadata(&caller, &state, &study, None, None).await
}

/// `GET /studies/{study}/series/{series}/metadata`
pub async fn series_metadata(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path.0)?;
    let series = parse_uid("SeriesInstanceUID in path", &path.1)?;
    metadata(&caller, &state, &study, Some(&series), None).await
}

/// `GET /studies/{study}/series/{series}/instances/{instance}/metadata`
pub async fn instance_metadata(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (study, series, sop) = instance_uids(&path.0, &path.1, &path.2)?;
    metadata(&caller, &state, &study, Some(&series), Some(&sop)).await
}

async fn metadata(
    caller: &Caller,
    state: &ViewerState,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let visible = visible(caller, state, study).await?;
    let items = storage::index::metadata(&state.storage.db, study, series, sop).await?;
    if items.is_empty() {
        return Err(ApiError::not_found("no such study, series or instance"));
    }
    let detail = serde_json::json!({ "metadata": true, "series": series, "instance": sop });
    caller
        .audit_study_read(
            &state.storage.db,
            EventType::DICOM_INSTANCES_ACCESSED,
            &visible,
            detail,
        )
        .await?;
    // The stored texts are already DICOM JSON objects: join them without re-parsing.
    let mut body = String::with_capacity(items.iter().map(|s| s.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push(']');
    Ok(HttpResponse::Ok()
        .content_type("application/dicom+json")
        .body(body))
}

/// What transfer syntax the client accepts for `application/dicom` parts.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// As stored (`transfer-syntax=*`, or no preference stated).
    AsStored,
    /// Only these.
    Only(Vec<String>),
}

/// Read the Accept header of a retrieve. We never transcode, so a request for a
/// transfer syntax other than the stored one is answered 406 (PS3.18 8.7.3.5).
fn wanted(req: &HttpRequest) -> Result<Wanted, ApiError> {
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Wanted::AsStored);
    };
    let mut syntaxes = Vec::new();
    let mut any = false;
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let main = parts.next().unwrap_or_default().to_ascii_lowercase();
        if main == "*/*" || main == "multipart/*" {
            any = true;
            continue;
        }
        if main != "multipart/related" && main != "application/dicom" {
            continue;
        }
        let mut media_type_ok = main == "application/dicom";
        let mut ts = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "type" => media_type_ok = v.eq_ignore_ascii_case("application/dicom"),
                    "transfer-syntax" => ts = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        if main == "multipart/related" && !media_type_ok {
            continue;
        }
        match ts.as_deref() {
            None | Some("*") => any = true,
            Some(t) => syntaxes.push(t.to_string()),
        }
    }
    if any {
        Ok(Wanted::AsStored)
    } else if syntaxes.is_empty() {
        Err(ApiError::new(
            actix_web::http::StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!("instances are served as multipart/related; type=\"application/dicom\", not {accept}"),
        ))
    } else {
        Ok(Wanted::Only(syntaxes))
    }
}

/// The study, if the caller may read it; otherwise the same 404 as for a missing one.
pub(crate) async fn visible(
    caller: &Caller,
    state: &ViewerState,
    study: &str,
) -> Result<VisibleStudy, ApiError> {
    storage::scope::visible_study(&state.storage.db, &read_scope(&caller.principal), study)
        .await?
        .ok_or_else(|| ApiError::not_found("no such study, series or instance"))
}

async fn retrieve(
    req: &HttpRequest,
    caller: &Caller,
    state: &ViewerState,
    study: &str,
    series: Option<&str>,
    sop: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let wanted = wanted(req)?;
    let visible = visible(caller, state, study).await?;
    let instances = storage::index::instances(&state.storage.db, study, series, sop).await?;
    if instances.is_empty() {
        return Err(ApiError::not_found("no such study, series or instance"));
    }
    if let Wanted::Only(list) = &wanted {
        if let Some(i) = instances
            .iter()
            .find(|i| !list.contains(&i.transfer_syntax_uid))
        {
            return Err(ApiError::new(
                actix_web::http::StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!(
                    "instance {} is stored in transfer syntax {} and is not transcoded; request transfer-syntax=*",
                    i.sop_instance_uid, i.transfer_syntax_uid
                ),
            ));
        }
    }
    let detail =
        serde_json::json!({ "retrieve": instances.len(), "series": series, "instance": sop });
    caller
        .audit_study_read(
            &state.storage.db,
            EventType::DICOM_INSTANCES_TRANSFERRED,
            &visible,
            detail,
        )
        .await?;
    let boundary = uuid::Uuid::new_v4().simple().to_string();
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let blobs = state.storage.blobs.clone();
    let closing = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    // One instance at a time from the blob store: memory stays at a chunk, whatever the
    // study's size.
    let parts = stream::iter(instances.into_iter().enumerate()).then(move |(n, inst)| {
        let blobs = blobs.clone();
        let boundary = boundary.clone();
        async move {
            let head = Bytes::from(part_head(n, &boundary, &inst));
            let body = blobs.get_stream(&inst.blob_key).await.map_err(|e| {
                tracing::error!(error = %e, sop = %inst.sop_instance_uid, "retrieve: stored original unreadable");
                std::io::Error::other(e.to_string())
            })?;
            let body = body.map_err(|e| std::io::Error::other(e.to_string()));
            Ok::<_, std::io::Error>(stream::once(async move { Ok(head) }).chain(body))
        }
    });
    let body = parts
        .try_flatten()
        .chain(stream::once(async move { Ok(closing) }));
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .streaming(body))
}

fn part_head(n: usize, boundary: &str, inst: &StoredInstance) -> String {
    let lead = if n == 0 { "" } else { "\r\n" };
    format!(
        "{lead}--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\nContent-Length: {}\r\nContent-Location: /dicomweb/studies/{}/series/{}/instances/{}\r\n\r\n",
        inst.transfer_syntax_uid, inst.size_bytes, inst.study_uid, inst.series_uid, inst.sop_instance_uid
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn accept(v: &str) -> Result<Wanted, ApiError> {
        wanted(
            &TestRequest::default()
                .insert_header((header::ACCEPT, v))
                .to_http_request(),
        )
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(
            accept("multipart/related; type=\"application/dicom\"").unwrap(),
            Wanted::AsStored
        );
        assert_eq!(
            accept("multipart/related; type=\"application/dicom\"; transfer-syntax=*").unwrap(),
            Wanted::AsStored
        );
        assert_eq!(
            accept("multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1").unwrap(),
            Wanted::Only(vec!["1.2.840.10008.1.2.1".into()])
        );
        assert!(accept("application/json").is_err());
        assert!(accept("multipart/related; type=\"image/jpeg\"").is_err());
    }
}
