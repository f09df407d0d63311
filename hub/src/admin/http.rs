//! The admin API under `/api/admin` (the guard lets only admins in).

use access::Caller;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use storage::accounts::{Grade, NewUser, Role, SiteKind, Specialty};
use storage::audit::{Action, EventType, Filter, NewEvent, Outcome};
use viewer_api::ApiError;

use super::AdminError;
use crate::HubState;

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Storage(e) => e.into(),
            AdminError::Password(e) => ApiError::bad_request("weak_password", e.to_string()),
            AdminError::Blocking(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
        }
    }
}

/// Mount the admin routes. Plain routes, not a scope: other modules add their own
/// admin routes (templates, turnaround, reassignment) under the same prefix.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/admin/sites", web::get().to(list_sites))
        .route("/api/admin/sites", web::post().to(add_site))
        .route("/api/admin/users", web::get().to(list_users))
        .route("/api/admin/users", web::post().to(add_user))
        .route(
            "/api/admin/users/{username}/password",
            web::post().to(reset_password),
        )
        .route(
            "/api/admin/users/{username}/disable",
            web::post().to(disable),
        )
        .route("/api/admin/users/{username}/enable", web::post().to(enable))
        .route(
            "/api/admin/users/{username}/sessions",
            web::delete().to(revoke_sessions),
        )
        .route("/api/admin/gateway-keys", web::get().to(list_keys))
        .route("/api/admin/gateway-keys", web::post().to(create_key))
        .route("/api/admin/gateway-keys/{id}", web::delete().to(revoke_key))
        .route("/api/admin/audit", web::get().to(audit_list))
        .route("/api/admin/audit/verify", web::get().to(audit_verify));
}

fn by(caller: &Caller) -> NewEvent {
    caller.event(
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Update,
        Outcome::Success,
    )
}

fn parse_enum<T>(what: &str, value: &str, parse: fn(&str) -> Option<T>) -> Result<T, ApiError> {
    parse(value)
        .ok_or_else(|| ApiError::bad_request("invalid", format!("unknown {what} {value:?}")))
}

async fn list_sites(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(storage::accounts::list_sites(&state.storage.db).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteBody {
    id: String,
    name: String,
    kind: String,
}

async fn add_site(
    caller: Caller,
    state: web::Data<HubState>,
    body: web::Json<SiteBody>,
) -> Result<HttpResponse, ApiError> {
    let kind = parse_enum("site kind", &body.kind, SiteKind::parse)?;
    let site = super::add_site(&state.storage.db, &by(&caller), &body.id, &body.name, kind).await?;
    Ok(HttpResponse::Created().json(site))
}

async fn list_users(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(storage::accounts::list_users(&state.storage.db).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    username: String,
    display_name: String,
    role: String,
    #[serde(default)]
    specialties: Vec<String>,
    grade: Option<String>,
    #[serde(default)]
    sites: Vec<String>,
    password: Option<String>,
}

async fn add_user(
    caller: Caller,
    state: web::Data<HubState>,
    body: web::Json<UserBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = NewUser {
        username: body.username,
        display_name: body.display_name,
        role: parse_enum("role", &body.role, Role::parse)?,
        specialties: body
            .specialties
            .iter()
            .map(|s| parse_enum("specialty", s, Specialty::parse))
            .collect::<Result<_, _>>()?,
        grade: body
            .grade
            .as_deref()
            .map(|g| parse_enum("grade", g, Grade::parse))
            .transpose()?,
        sites: body.sites,
    };
    let (user, generated) =
        super::add_user(&state.storage.db, &by(&caller), &new, body.password).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "user": user, "password": generated })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: Option<String>,
}

/// `POST /api/admin/users/{name}/password`: with no body (or `{}`) a password is
/// generated; a body that does not parse is refused, never read as "generate one".
async fn reset_password(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let password = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<PasswordBody>(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))?
            .password
    };
    let generated = super::reset_password(&state.storage.db, &by(&caller), &path, password).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "password": generated })))
}

async fn disable(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::set_disabled(&state.storage.db, &by(&caller), &path, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn enable(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::set_disabled(&state.storage.db, &by(&caller), &path, false).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke_sessions(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let n = super::revoke_sessions(&state.storage.db, &by(&caller), &path).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "revoked": n })))
}

async fn list_keys(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(storage::sessions::list_gateway_keys(&state.storage.db).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    site: String,
    #[serde(default)]
    label: String,
}

async fn create_key(
    caller: Caller,
    state: web::Data<HubState>,
    body: web::Json<KeyBody>,
) -> Result<HttpResponse, ApiError> {
    let (stored, key) =
        super::create_gateway_key(&state.storage.db, &by(&caller), &body.site, &body.label).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "gateway_key": stored, "key": key })))
}

async fn revoke_key(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::revoke_gateway_key(&state.storage.db, &by(&caller), &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Query of `GET /api/admin/audit`.
#[derive(Deserialize)]
struct AuditQuery {
    patient: Option<String>,
    study: Option<String>,
    exam: Option<i64>,
    actor: Option<String>,
    /// ms since the epoch, inclusive.
    from: Option<i64>,
    /// ms since the epoch, exclusive.
    to: Option<i64>,
    /// Events after this seq (paging).
    after: Option<i64>,
    limit: Option<i64>,
    /// `json` (default) or `jsonl` (one event per line, for export).
    format: Option<String>,
}

async fn audit_list(
    caller: Caller,
    state: web::Data<HubState>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let jsonl = match q.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("format must be json or jsonl, not {other:?}"),
            ))
        }
    };
    let limit = q.limit.unwrap_or(1000);
    if !(1..=storage::audit::MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1..={}", storage::audit::MAX_LIST_LIMIT),
        ));
    }
    let filter = Filter {
        patient_id: q.patient.clone(),
        study_uid: q.study.clone(),
        exam_id: q.exam,
        actor: q.actor.clone(),
        from_ms: q.from,
        to_ms: q.to,
        after_seq: q.after,
        limit,
    };
    let events = storage::audit::list(&state.storage.db, &filter).await?;
    let used = NewEvent {
        patient_id: q.patient,
        study_uid: q.study,
        exam_id: q.exam,
        detail: Some(
            serde_json::json!({ "actor": q.actor, "from": q.from, "to": q.to, "results": events.len() }),
        ),
        ..caller.event(EventType::AUDIT_LOG_USED, Action::Read, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &used).await?;
    if jsonl {
        let mut body = String::new();
        for e in &events {
            body.push_str(&serde_json::to_string(e).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?);
            body.push('\n');
        }
        Ok(HttpResponse::Ok()
            .content_type("application/x-ndjson")
            .body(body))
    } else {
        Ok(HttpResponse::Ok().json(events))
    }
}

async fn audit_verify(
    caller: Caller,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let report = storage::audit::verify(&state.storage.db).await?;
    let used = NewEvent {
        detail: Some(
            serde_json::json!({ "verify": report.is_intact(), "checked": report.checked }),
        ),
        ..caller.event(EventType::AUDIT_LOG_USED, Action::Execute, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &used).await?;
    Ok(HttpResponse::Ok().json(report))
}
