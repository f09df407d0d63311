//! The reading worklist over HTTP: the ordered list, live change events, claims.

use std::time::Duration;

use access::policy::{claimable_statuses, is_admin, read_scope};
use access::{Caller, Principal};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::exams::{ExamKind, Priority};
use storage::worklist::{self, Claim, DeadlineChange, Filter};
use viewer_api::ApiError;

use crate::HubState;

/// Mount the worklist routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/worklist", web::get().to(list))
        .route("/api/worklist/events", web::get().to(events))
        .route("/api/exams/{id}", web::get().to(one))
        .route("/api/admin/deadlines", web::get().to(deadlines))
        .route("/api/admin/deadlines", web::put().to(set_deadlines))
        .route("/api/exams/{id}/claim", web::post().to(claim))
        .route("/api/exams/{id}/renew", web::post().to(claim))
        .route("/api/exams/{id}/release", web::post().to(release))
        .route("/api/admin/exams/{id}/assign", web::post().to(assign));
}

/// Query of `GET /api/worklist`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    specialty: Option<String>,
    site: Option<String>,
    modality: Option<String>,
    /// Comma-separated statuses (default `ready,preliminary`; `all` for every status).
    status: Option<String>,
    patient: Option<String>,
    priority: Option<String>,
    /// Received from / to, ms since the epoch.
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<i64>,
}

const STATUSES: [&str; 4] = ["receiving", "ready", "preliminary", "final"];

async fn list(
    caller: Caller,
    state: web::Data<HubState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let kinds = match &q.specialty {
        Some(s) => {
            let specialty = storage::accounts::Specialty::parse(s).ok_or_else(|| {
                ApiError::bad_request("invalid_specialty", format!("unknown specialty {s:?}"))
            })?;
            Some(vec![access::policy::kinds_of(specialty)])
        }
        None => None,
    };
    let statuses = match q.status.as_deref() {
        None => None,
        Some("all") => Some(STATUSES.iter().map(|s| s.to_string()).collect()),
        Some(list) => Some(
            list.split(',')
                .map(|s| {
                    let s = s.trim();
                    STATUSES.contains(&s).then(|| s.to_string()).ok_or_else(|| {
                        ApiError::bad_request("invalid_status", format!("unknown status {s:?}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let priority = q
        .priority
        .as_deref()
        .map(|p| {
            Priority::parse_any(p).ok_or_else(|| {
                ApiError::bad_request("invalid_priority", format!("unknown priority {p:?}"))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1..=1000",
        ));
    }
    let filter = Filter {
        kinds,
        site: q.site.clone(),
        modality: q.modality.clone(),
        statuses,
        priority,
        patient: q.patient.clone(),
        from_ms: q.from,
        to_ms: q.to,
        limit,
    };
    let items = worklist::list(&state.storage.db, &read_scope(&caller.principal), &filter).await?;
    let event = NewEvent {
        patient_id: q.patient.clone(),
        detail: Some(serde_json::json!({ "worklist": true, "results": items.len() })),
        ..caller.event(EventType::QUERY, Action::Execute, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok(HttpResponse::Ok().json(items))
}

/// `GET /api/worklist/events`: server-sent events. An event `worklist` is sent whenever
/// an exam changed, in this process (at once) or another one on the same database
/// (within a second); a comment every 15 s keeps proxies from closing the stream.
async fn events(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let db = state.storage.db.clone();
    let changed = state.changes.clone();
    let start = worklist::last_change(&db).await?;
    let stream = futures_util::stream::unfold((start, 0u32), move |(seen, quiet)| {
        let db = db.clone();
        let changed = changed.clone();
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), changed.notified()).await;
            let now = worklist::last_change(&db).await.unwrap_or(seen);
            let (chunk, quiet) = if now > seen {
                (
                    format!("event: worklist\ndata: {{\"changed_at\":{now}}}\n\n"),
                    0,
                )
            } else if quiet >= 14 {
                (": keep-alive\n\n".to_string(), 0)
            } else {
                (String::new(), quiet + 1)
            };
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(chunk)),
                (now.max(seen), quiet),
            ))
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

/// `GET /api/exams/{id}`: one worklist row (its claim and deadline), for the exam page.
async fn one(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let item = worklist::get(&state.storage.db, &read_scope(&caller.principal), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no exam {id}")))?;
    let event = NewEvent {
        patient_id: item.patient_id.clone(),
        study_uid: item.study_uid.clone(),
        exam_id: Some(item.id),
        ..caller.event(EventType::PATIENT_RECORD, Action::Read, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok(HttpResponse::Ok().json(item))
}

/// `GET /api/admin/deadlines`: the reading-time targets in force.
async fn deadlines(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.deadlines().await?))
}

/// `PUT /api/admin/deadlines`: change the targets for exams that become ready from now on;
/// targets the body does not name keep their value.
async fn set_deadlines(
    caller: Caller,
    state: web::Data<HubState>,
    body: web::Json<DeadlineChange>,
) -> Result<HttpResponse, ApiError> {
    let targets = body.apply(&state.deadlines().await?);
    let audit = NewEvent {
        detail: Some(serde_json::json!({ "deadlines": &targets })),
        ..caller.event(
            EventType::APPLICATION_ACTIVITY,
            Action::Update,
            Outcome::Success,
        )
    };
    storage::worklist::set_deadline_targets(&state.storage.db, &targets, &audit).await?;
    Ok(HttpResponse::Ok().json(targets))
}

fn claim_answer(c: Claim) -> HttpResponse {
    match c {
        Claim::Held { .. } => HttpResponse::Ok().json(c),
        Claim::Taken { .. } | Claim::NotClaimable { .. } => HttpResponse::Conflict().json(c),
    }
}

/// The exam's kind if the caller may see it at all (404 otherwise).
async fn exam_kind(state: &HubState, caller: &Caller, id: i64) -> Result<ExamKind, ApiError> {
    worklist::get(&state.storage.db, &read_scope(&caller.principal), id)
        .await?
        .map(|i| i.kind)
        .ok_or_else(|| ApiError::not_found(format!("no exam {id}")))
}

fn user_id(caller: &Caller) -> Result<i64, ApiError> {
    match &caller.principal {
        Principal::User(u) => Ok(u.id),
        Principal::Gateway { .. } => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "not a user",
        )),
    }
}

/// `POST /api/exams/{id}/claim` (and `/renew`: the same, for the holder).
async fn claim(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let kind = exam_kind(&state, &caller, id).await?;
    let statuses = claimable_statuses(&caller.principal, kind);
    if statuses.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only readers of this specialty claim it",
        ));
    }
    let audit = caller.event(EventType::PATIENT_RECORD, Action::Update, Outcome::Success);
    let outcome = worklist::claim(
        &state.storage.db,
        id,
        user_id(&caller)?,
        state.lease_ms,
        statuses,
        false,
        &audit,
    )
    .await?;
    state.changes.notify_waiters();
    Ok(claim_answer(outcome))
}

/// `POST /api/exams/{id}/release`.
async fn release(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    exam_kind(&state, &caller, id).await?;
    let audit = caller.event(EventType::PATIENT_RECORD, Action::Update, Outcome::Success);
    if worklist::release(&state.storage.db, id, user_id(&caller)?, &audit).await? {
        state.changes.notify_waiters();
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_holder",
            format!("you do not hold exam {id}"),
        ))
    }
}

/// Body of `POST /api/admin/exams/{id}/assign`.
#[derive(Deserialize)]
pub struct AssignBody {
    username: String,
}

/// An admin gives the claim to a reader of the exam's specialty.
async fn assign(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
    body: web::Json<AssignBody>,
) -> Result<HttpResponse, ApiError> {
    if !is_admin(&caller.principal) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admins reassign",
        ));
    }
    let id = path.into_inner();
    let kind = worklist::get(
        &state.storage.db,
        &storage::scope::ReadScope::everything(),
        id,
    )
    .await?
    .map(|i| i.kind)
    .ok_or_else(|| ApiError::not_found(format!("no exam {id}")))?;
    let reader = storage::accounts::login_record_by_name(&state.storage.db, &body.username)
        .await?
        .map(|r| r.user)
        .ok_or_else(|| {
            ApiError::bad_request("unknown_user", format!("no user {}", body.username))
        })?;
    let statuses = claimable_statuses(&Principal::User(reader.clone()), kind);
    if statuses.is_empty() {
        return Err(ApiError::bad_request(
            "not_a_reader",
            format!("{} does not read {kind} exams", reader.username),
        ));
    }
    let audit = NewEvent {
        detail: Some(serde_json::json!({ "assign_to": reader.username })),
        ..caller.event(EventType::PATIENT_RECORD, Action::Update, Outcome::Success)
    };
    let outcome = worklist::claim(
        &state.storage.db,
        id,
        reader.id,
        state.lease_ms,
        statuses,
        true,
        &audit,
    )
    .await?;
    state.changes.notify_waiters();
    Ok(claim_answer(outcome))
}
