//! The hub's ingest API beyond STOW-RS: a gateway's "study complete" notice.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use storage::exams::{Completion, Priority};
use viewer_api::error::parse_uid;
use viewer_api::ApiError;

use crate::stow::site_of;
use crate::HubState;

/// Body of `POST /ingest/studies/{study}/complete`.
#[derive(Debug, Deserialize)]
pub struct CompleteRequest {
    /// `stat` or `routine`.
    pub priority: String,
    /// Instances of the study the gateway delivered.
    pub instance_count: i64,
}

/// `POST /ingest/studies/{study}/complete`: the gateway's association closed and its
/// quiet period passed; the exam goes on the worklist.
pub async fn complete(
    req: HttpRequest,
    state: web::Data<HubState>,
    path: web::Path<String>,
    body: web::Json<CompleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let site = site_of(&req)?;
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    let priority = Priority::parse(&body.priority).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_priority",
            format!("priority {:?} is not stat or routine", body.priority),
        )
    })?;
    if body.instance_count < 0 {
        return Err(ApiError::bad_request(
            "invalid_count",
            "instance_count must not be negative",
        ));
    }
    match storage::exams::complete_study(
        &state.storage.db,
        &site,
        &study,
        priority,
        body.instance_count,
    )
    .await?
    {
        Completion::Ready(exam) => Ok(HttpResponse::Ok().json(exam)),
        Completion::Incomplete { stored, expected } => Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "incomplete",
            format!("hub holds {stored} of the {expected} instances delivered for this study"),
        )),
        Completion::NotFound => Err(ApiError::not_found(format!(
            "no study {study} from site {site}"
        ))),
    }
}

/// Query of `GET /api/exams`.
#[derive(Debug, Deserialize)]
pub struct ExamQuery {
    /// Only the exam of this study.
    pub study: Option<String>,
}

/// `GET /api/exams`: exams, newest first (the worklist proper comes later).
pub async fn list_exams(
    state: web::Data<HubState>,
    q: web::Query<ExamQuery>,
) -> Result<HttpResponse, ApiError> {
    let exams = match &q.study {
        Some(study) => {
            let study = parse_uid("study", study)?;
            storage::exams::by_study(&state.storage.db, &study)
                .await?
                .into_iter()
                .collect()
        }
        None => storage::exams::list(&state.storage.db, 500).await?,
    };
    Ok(HttpResponse::Ok().json(exams))
}
