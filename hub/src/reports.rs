//! Writing and signing reports over HTTP: templates, drafts, the confirmation preview,
//! signing (preliminary by a junior, final by a senior), amendments, published keys.

use std::collections::BTreeMap;

use access::policy::{claimable_statuses, may_amend, read_scope};
use access::{Caller, Principal};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use formats::report::{
    canonical_json, payload_sha256, sign, ExamRef, ReportPayload, ReportStatus, Signer, Supersedes,
    FORMAT,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use storage::accounts::{Grade, User};
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::exams::ExamKind;
use storage::reports::{SignContext, SignMode, Template};
use storage::worklist::{self, Item};
use viewer_api::ApiError;

use crate::HubState;

/// Mount the report-writing routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/templates", web::get().to(templates))
        .route("/api/admin/templates/{id}", web::put().to(put_template))
        .route("/api/exams/{id}/report", web::get().to(get_report))
        .route("/api/exams/{id}/report/draft", web::put().to(save_draft))
        .route("/api/exams/{id}/report/preview", web::get().to(preview))
        .route("/api/exams/{id}/report/sign", web::post().to(sign_draft))
        .route("/api/reports/{report_id}/amend", web::post().to(amend))
        .route("/api/signing-keys", web::get().to(signing_keys));
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message.to_string())
}

fn reader(caller: &Caller) -> Result<&User, ApiError> {
    match &caller.principal {
        Principal::User(u) if u.role == storage::accounts::Role::Reader => Ok(u),
        _ => Err(forbidden("only readers write reports")),
    }
}

/// The exam if the caller may read it (404 otherwise).
async fn exam(state: &HubState, caller: &Caller, id: i64) -> Result<Item, ApiError> {
    worklist::get(&state.storage.db, &read_scope(&caller.principal), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no exam {id}")))
}

#[derive(Deserialize)]
struct TemplateQuery {
    kind: Option<String>,
}

fn parse_kind(s: &str) -> Result<ExamKind, ApiError> {
    ExamKind::parse(s)
        .ok_or_else(|| ApiError::bad_request("invalid_kind", format!("unknown exam kind {s:?}")))
}

async fn templates(
    state: web::Data<HubState>,
    q: web::Query<TemplateQuery>,
) -> Result<HttpResponse, ApiError> {
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    Ok(HttpResponse::Ok().json(storage::reports::templates(&state.storage.db, kind).await?))
}

async fn put_template(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
    body: web::Json<Template>,
) -> Result<HttpResponse, ApiError> {
    let mut t = body.into_inner();
    t.id = path.into_inner();
    let audit = NewEvent {
        detail: Some(serde_json::json!({ "template": t.id })),
        ..caller.event(
            EventType::APPLICATION_ACTIVITY,
            Action::Update,
            Outcome::Success,
        )
    };
    storage::reports::put_template(&state.storage.db, &t, &audit).await?;
    Ok(HttpResponse::Ok().json(t))
}

/// `GET /api/exams/{id}/report`: the draft and every signed version.
async fn get_report(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let item = exam(&state, &caller, path.into_inner()).await?;
    let draft = storage::reports::draft_of_exam(&state.storage.db, item.id).await?;
    let versions = match &draft {
        Some(d) => storage::reports::versions(&state.storage.db, &d.report_id).await?,
        None => Vec::new(),
    };
    let event = NewEvent {
        patient_id: item.patient_id.clone(),
        study_uid: item.study_uid.clone(),
        exam_id: Some(item.id),
        ..caller.event(EventType::PATIENT_RECORD, Action::Read, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "exam": item, "draft": draft, "versions": versions })))
}

/// Body of the draft autosave.
#[derive(Deserialize)]
pub struct DraftBody {
    template: String,
    content: BTreeMap<String, String>,
    #[serde(default)]
    critical: bool,
}

const MAX_FIELD_CHARS: usize = 20_000;

fn check_content(content: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in content {
        if k.is_empty()
            || k.len() > 64
            || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("field name {k:?} is not a-z, 0-9, _"),
            ));
        }
        if v.chars().count() > MAX_FIELD_CHARS {
            return Err(ApiError::bad_request(
                "too_long",
                format!("field {k} is over {MAX_FIELD_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

async fn save_draft(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
    body: web::Json<DraftBody>,
) -> Result<HttpResponse, ApiError> {
    let user = reader(&caller)?.clone();
    let item = exam(&state, &caller, path.into_inner()).await?;
    check_content(&body.content)?;
    let audit = NewEvent {
        patient_id: item.patient_id.clone(),
        study_uid: item.study_uid.clone(),
        ..caller.event(EventType::PATIENT_RECORD, Action::Update, Outcome::Success)
    };
    let new_id = uuid::Uuid::new_v4().to_string();
    let saved = storage::reports::save_draft(
        &state.storage.db,
        item.id,
        user.id,
        &new_id,
        &body.template,
        &body.content,
        body.critical,
        &audit,
    )
    .await?;
    Ok(HttpResponse::Ok().json(saved))
}

fn exam_ref(
    exam_id: i64,
    kind: ExamKind,
    site: &str,
    patient: (&Option<String>, &Option<String>),
    study_uid: &Option<String>,
    accession: &Option<String>,
    modality: &Option<String>,
) -> ExamRef {
    ExamRef {
        exam_id,
        kind: kind.as_str().to_string(),
        site: site.to_string(),
        patient_id: patient.0.clone(),
        patient_name: patient.1.clone(),
        study_uid: study_uid.clone(),
        accession_number: accession.clone(),
        modality: modality.clone(),
    }
}

/// What a reader confirms before signing: SHA-256 of the canonical JSON of the exam's
/// identifiers, the template, the text and the critical flag.
fn confirmation(
    exam: &ExamRef,
    template: &str,
    content: &BTreeMap<String, String>,
    critical: bool,
) -> Result<String, ApiError> {
    let value = serde_json::json!({ "exam": exam, "template": template, "content": content, "critical": critical });
    let text =
        canonical_json(&value).map_err(|e| ApiError::bad_request("invalid", e.to_string()))?;
    Ok(hex::encode(Sha256::digest(text.as_bytes())))
}

/// `GET /api/exams/{id}/report/preview`: exactly what signing will cover, and the digest
/// to send back with the signature request.
async fn preview(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let item = exam(&state, &caller, path.into_inner()).await?;
    let mut draft = storage::reports::draft_of_exam(&state.storage.db, item.id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "no_draft", "nothing written yet"))?;
    if let Some(results) = lab_results(&state, &caller, &item).await? {
        draft.content.insert("results".into(), results);
    }
    let exam = exam_ref(
        item.id,
        item.kind,
        &item.site,
        (&item.patient_id, &item.patient_name),
        &item.study_uid,
        &item.accession_number,
        &item.modality,
    );
    let confirm = confirmation(&exam, &draft.template_id, &draft.content, draft.critical)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "exam": exam, "template": draft.template_id, "content": draft.content, "critical": draft.critical,
        "confirm_sha256": confirm,
    })))
}

fn signer_of(user: &User, at: i64) -> Signer {
    Signer {
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        grade: user
            .grade
            .map(|g| g.as_str())
            .unwrap_or("junior")
            .to_string(),
        signed_at_ms: at,
    }
}

/// Build and sign the payload of the next version from what the transaction read.
fn build(
    ctx: &SignContext,
    state: &HubState,
    user: &User,
    status: ReportStatus,
    reason: Option<String>,
) -> Result<(formats::report::SignedReport, ReportStatus), String> {
    let previous = match &ctx.previous {
        Some(v) => Some((
            v,
            serde_json::from_str::<ReportPayload>(&v.signed.payload)
                .map_err(|e| format!("stored version: {e}"))?,
        )),
        None => None,
    };
    let preliminary_by = match (&previous, status) {
        (Some((_, p)), ReportStatus::Final) if p.status == ReportStatus::Preliminary => {
            Some(p.signer.clone())
        }
        (Some((_, p)), ReportStatus::Amended) => p.preliminary_by.clone(),
        _ => None,
    };
    let payload = ReportPayload {
        format: FORMAT.to_string(),
        report_id: ctx.draft.report_id.clone(),
        version: ctx.next_version,
        status,
        supersedes: previous.as_ref().map(|(v, _)| Supersedes {
            version: v.version,
            payload_sha256: payload_sha256(&v.signed.payload),
        }),
        reason,
        exam: exam_ref(
            ctx.draft.exam_id,
            ctx.kind,
            &ctx.site,
            (&ctx.patient_id, &ctx.patient_name),
            &ctx.study_uid,
            &ctx.accession_number,
            &ctx.modality,
        ),
        template: ctx.draft.template_id.clone(),
        content: ctx.draft.content.clone(),
        critical: ctx.draft.critical,
        preliminary_by,
        signer: signer_of(user, ctx.now),
        key_id: state.signer.key_id.clone(),
    };
    let signed = sign(&payload, &state.signer.key).map_err(|e| e.to_string())?;
    Ok((signed, status))
}

/// The current results of a lab exam as the report's `results` text (`None` for other
/// kinds).
async fn lab_results(
    state: &HubState,
    caller: &Caller,
    item: &Item,
) -> Result<Option<String>, ApiError> {
    if item.kind != ExamKind::Lab {
        return Ok(None);
    }
    let order =
        storage::lab::order_of_exam(&state.storage.db, &read_scope(&caller.principal), item.id)
            .await?;
    Ok(order.as_ref().map(crate::lab::results_text))
}

/// Body of the signing request.
#[derive(Deserialize)]
pub struct SignBody {
    /// `confirm_sha256` of the preview the reader confirmed.
    confirm_sha256: String,
}

/// `POST /api/exams/{id}/report/sign`: junior → preliminary; senior → final.
async fn sign_draft(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<i64>,
    body: web::Json<SignBody>,
) -> Result<HttpResponse, ApiError> {
    let user = reader(&caller)?.clone();
    let item = exam(&state, &caller, path.into_inner()).await?;
    if claimable_statuses(&caller.principal, item.kind).is_empty() {
        return Err(forbidden("only readers of this specialty sign it"));
    }
    let audit = NewEvent {
        patient_id: item.patient_id.clone(),
        study_uid: item.study_uid.clone(),
        ..caller.event(EventType::PATIENT_RECORD, Action::Create, Outcome::Success)
    };
    let senior = user.grade == Some(Grade::Senior);
    let confirm = body.confirm_sha256.to_ascii_lowercase();
    let results = lab_results(&state, &caller, &item).await?;
    let st = state.clone();
    let version = storage::reports::sign(
        &state.storage.db,
        SignMode::Draft {
            exam_id: item.id,
            user_id: user.id,
        },
        |ctx| {
            // Lab reports carry the results they verify: what is signed includes them.
            let mut ctx = ctx.clone();
            if let Some(results) = results {
                ctx.draft.content.insert("results".into(), results);
            }
            let ctx = &ctx;
            let exam = exam_ref(
                ctx.draft.exam_id,
                ctx.kind,
                &ctx.site,
                (&ctx.patient_id, &ctx.patient_name),
                &ctx.study_uid,
                &ctx.accession_number,
                &ctx.modality,
            );
            let expected = confirmation(
                &exam,
                &ctx.draft.template_id,
                &ctx.draft.content,
                ctx.draft.critical,
            )
            .map_err(|e| e.message)?;
            if expected != confirm {
                return Err(
                    "the report changed since it was confirmed: review the preview again".into(),
                );
            }
            let status = match (ctx.exam_status.as_str(), senior) {
                ("ready", false) => ReportStatus::Preliminary,
                ("ready", true) | ("preliminary", true) => ReportStatus::Final,
                ("preliminary", false) => {
                    return Err("a preliminary report waits for a senior reader".into())
                }
                ("final", _) => return Err("the report is final: amend it instead".into()),
                (other, _) => return Err(format!("the exam is {other}, not ready for reporting")),
            };
            build(ctx, &st, &user, status, None)
        },
        &audit,
    )
    .await?;
    state.changes.notify_waiters();
    Ok(HttpResponse::Ok().json(version))
}

/// Body of an amendment.
#[derive(Deserialize)]
pub struct AmendBody {
    content: BTreeMap<String, String>,
    #[serde(default)]
    critical: bool,
    reason: String,
}

/// `POST /api/reports/{report_id}/amend`: a senior replaces a final with a new signed
/// version that states why.
async fn amend(
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
    body: web::Json<AmendBody>,
) -> Result<HttpResponse, ApiError> {
    let user = reader(&caller)?.clone();
    let body = body.into_inner();
    check_content(&body.content)?;
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "an amendment needs a reason (1-1000 characters)",
        ));
    }
    let report_id = path.into_inner();
    let draft = storage::reports::draft(&state.storage.db, &report_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no report {report_id}")))?;
    let item = exam(&state, &caller, draft.exam_id).await?;
    if !may_amend(&caller.principal, item.kind) {
        return Err(forbidden(
            "only senior readers of this specialty amend reports",
        ));
    }
    let audit = NewEvent {
        patient_id: item.patient_id.clone(),
        study_uid: item.study_uid.clone(),
        ..caller.event(EventType::PATIENT_RECORD, Action::Update, Outcome::Success)
    };
    let st = state.clone();
    let version = storage::reports::sign(
        &state.storage.db,
        SignMode::Amend {
            report_id,
            content: body.content,
            critical: body.critical,
        },
        |ctx| {
            if ctx.exam_status != "final" {
                return Err("only a final report is amended; sign it first".into());
            }
            build(ctx, &st, &user, ReportStatus::Amended, Some(reason))
        },
        &audit,
    )
    .await?;
    state.changes.notify_waiters();
    Ok(HttpResponse::Ok().json(version))
}

/// `GET /api/signing-keys`: the verification keys of every signature the hub made.
async fn signing_keys(state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let keys: Vec<serde_json::Value> = storage::reports::signing_keys(&state.storage.db)
        .await?
        .into_iter()
        .map(|(key_id, public_key, created_at)| {
            serde_json::json!({ "key_id": key_id, "algorithm": "Ed25519", "public_key": public_key, "created_at": created_at })
        })
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}
