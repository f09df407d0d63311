//! The hub's ingest API beyond STOW-RS: a gateway's "study complete" notice.

use access::policy::{read_scope, store_site};
use access::Caller;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::exams::{Completion, Priority};
use viewer_api::error::parse_uid;
use viewer_api::ApiError;

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
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
    body: web::Json<CompleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let site = store_site(&caller.principal)
        .ok_or_else(|| ApiError::not_found("no such study"))?
        .to_string();
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    let priority = Priority::parse_any(&body.priority).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_priority",
            format!(
                "priority {:?} is not stat, urgent or routine",
                body.priority
            ),
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
        &state.deadlines().await?,
        &caller.event(EventType::PATIENT_RECORD, Action::Update, Outcome::Success),
    )
    .await?
    {
        Completion::Ready(exam) => {
            if exam.kind == storage::exams::ExamKind::Ecg && exam.priority != "stat" {
                crate::ecg::triage_dicom(&state, &caller, exam.id).await;
            }
            Ok(HttpResponse::Ok().json(exam))
        }
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
    caller: Caller,
    state: web::Data<HubState>,
    q: web::Query<ExamQuery>,
) -> Result<HttpResponse, ApiError> {
    let study = q
        .study
        .as_deref()
        .map(|s| parse_uid("study", s))
        .transpose()?;
    let scope = read_scope(&caller.principal);
    let exams = storage::exams::list(&state.storage.db, &scope, study.as_deref(), 500).await?;
    // Reading one exam is recorded against it; a list is recorded as a query.
    let event = match exams.as_slice() {
        [exam] if study.is_some() => NewEvent {
            patient_id: exam.patient_id.clone(),
            study_uid: exam.study_uid.clone(),
            exam_id: Some(exam.id),
            ..caller.event(EventType::PATIENT_RECORD, Action::Read, Outcome::Success)
        },
        _ => NewEvent {
            detail: Some(serde_json::json!({ "study": study, "results": exams.len() })),
            ..caller.event(EventType::QUERY, Action::Execute, Outcome::Success)
        },
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok(HttpResponse::Ok().json(exams))
}
