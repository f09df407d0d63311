//! The clinicians' report API: signed reports as JSON, FHIR R4 and printable PDF, each
//! version checked against the hub's published keys every time it is shown.

use access::policy::report_scope;
use access::Caller;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use formats::report::{decode_public_key, verify, ReportPayload, VerifyingKey};
use serde::Deserialize;
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::reports::{ListFilter, Summary, Version};

use crate::error::ApiError;
use crate::printout::{Printout, VerificationState};
use crate::ViewerState;

/// Mount the report routes. The caller registers `web::Data<ViewerState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/reports", web::get().to(list))
        .route("/api/reports/{report_id}", web::get().to(get))
        .route(
            "/api/reports/{report_id}/versions/{version}/fhir",
            web::get().to(fhir),
        )
        .route(
            "/api/reports/{report_id}/versions/{version}/pdf",
            web::get().to(pdf),
        );
}

/// Query of `GET /api/reports`.
#[derive(Deserialize)]
pub struct ListQuery {
    patient: Option<String>,
    exam: Option<i64>,
    site: Option<String>,
    /// Signed from / before, ms since the epoch.
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<i64>,
}

async fn list(
    caller: Caller,
    state: web::Data<ViewerState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1..=1000",
        ));
    }
    let filter = ListFilter {
        patient_id: q.patient.clone(),
        exam_id: q.exam,
        report_id: None,
        site: q.site,
        from_ms: q.from,
        to_ms: q.to,
        limit,
    };
    let reports =
        storage::reports::list(&state.storage.db, &report_scope(&caller.principal), &filter)
            .await?;
    let event = NewEvent {
        patient_id: q.patient,
        exam_id: q.exam,
        detail: Some(serde_json::json!({ "reports": reports.len() })),
        ..caller.event(EventType::QUERY, Action::Execute, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok(HttpResponse::Ok().json(reports))
}

/// A report the caller may read, with its versions; 404 otherwise. A critical lab
/// alert (`alert-...`) is shown as the report it travels as (raised, then replaced or
/// withdrawn by corrections).
async fn visible(
    caller: &Caller,
    state: &ViewerState,
    report_id: &str,
) -> Result<(Summary, Vec<Version>), ApiError> {
    if report_id.starts_with("alert-") {
        let scope = report_scope(&caller.principal);
        return storage::lab::alert_as_report(&state.storage.db, &scope, report_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no report {report_id}")));
    }
    let filter = ListFilter {
        report_id: Some(report_id.to_string()),
        limit: 1,
        ..Default::default()
    };
    let summary =
        storage::reports::list(&state.storage.db, &report_scope(&caller.principal), &filter)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(format!("no report {report_id}")))?;
    let versions = storage::reports::versions(&state.storage.db, report_id).await?;
    Ok((summary, versions))
}

/// The hub's published verification keys.
async fn trusted_keys(state: &ViewerState) -> Result<Vec<VerifyingKey>, ApiError> {
    Ok(storage::reports::signing_keys(&state.storage.db)
        .await?
        .iter()
        .filter_map(|(_, public, _)| decode_public_key(public).ok())
        .collect())
}

/// Verify a stored version now; a version that fails is shown as such, never as valid.
fn check(version: &Version, keys: &[VerifyingKey]) -> (Option<ReportPayload>, VerificationState) {
    let state = VerificationState::check(&version.signed, keys);
    let payload = match verify(&version.signed, keys) {
        Ok(p) => Some(p),
        // Shown for what it says, marked invalid; never parsed into anything trusted.
        Err(_) => serde_json::from_str(&version.signed.payload).ok(),
    };
    (payload, state)
}

async fn audit_read(
    state: &ViewerState,
    caller: &Caller,
    s: &Summary,
    what: &str,
) -> Result<(), ApiError> {
    let event = NewEvent {
        patient_id: s.patient_id.clone(),
        study_uid: s.study_uid.clone(),
        exam_id: Some(s.exam_id),
        detail: Some(serde_json::json!({ "report": s.report_id, "as": what })),
        ..caller.event(EventType::PATIENT_RECORD, Action::Read, Outcome::Success)
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok(())
}

/// `GET /api/reports/{id}`: every version with its verification result and delivery.
async fn get(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (summary, versions) = visible(&caller, &state, &path).await?;
    let keys = trusted_keys(&state).await?;
    let delivery = storage::reports::delivery_state(&state.storage.db, &summary.report_id).await?;
    let versions: Vec<serde_json::Value> = versions
        .iter()
        .map(|v| {
            let (payload, verification) = check(v, &keys);
            let d = delivery.iter().find(|d| d.0 == v.version);
            serde_json::json!({
                "version": v.version, "status": v.status, "critical": v.critical, "signer": v.signer,
                "signed_at": v.signed_at, "payload": payload, "signed": v.signed,
                "verification": verification,
                "delivered_at": d.and_then(|d| d.1), "acknowledged_at": d.and_then(|d| d.2),
                "ack_status": d.and_then(|d| d.3.clone()),
                "critical_acknowledged_at": d.and_then(|d| d.4), "critical_acknowledged_by": d.and_then(|d| d.5.clone()),
            })
        })
        .collect();
    audit_read(&state, &caller, &summary, "json").await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "report": summary, "versions": versions })))
}

/// One version ready for printing or FHIR: payload, verification, history lines.
async fn version_view(
    caller: &Caller,
    state: &ViewerState,
    report_id: &str,
    version: i64,
) -> Result<
    (
        Summary,
        Version,
        ReportPayload,
        VerificationState,
        Vec<String>,
    ),
    ApiError,
> {
    let (summary, versions) = visible(caller, state, report_id).await?;
    let keys = trusted_keys(state).await?;
    let v = versions
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| ApiError::not_found(format!("report {report_id} has no version {version}")))?
        .clone();
    let (payload, verification) = check(&v, &keys);
    let payload = payload.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "unreadable",
            "this version cannot be read: its stored payload is damaged",
        )
    })?;
    let history = versions
        .iter()
        .filter(|o| o.version != version)
        .map(|o| {
            format!(
                "v{} {} {} {}",
                o.version,
                o.status,
                o.signer,
                crate::printout::format_cst(o.signed_at)
            )
        })
        .collect();
    Ok((summary, v, payload, verification, history))
}

async fn field_labels(
    state: &ViewerState,
    template: &str,
) -> Result<Vec<(String, String)>, ApiError> {
    Ok(storage::reports::templates(&state.storage.db, None)
        .await?
        .into_iter()
        .find(|t| t.id == template)
        .map(|t| t.fields.into_iter().map(|f| (f.key, f.label_zh)).collect())
        .unwrap_or_default())
}

async fn render(
    caller: &Caller,
    base: &str,
    state: &ViewerState,
    report_id: &str,
    version: i64,
    want_pdf_only: bool,
) -> Result<(Summary, Vec<u8>, serde_json::Value), ApiError> {
    let (summary, v, payload, verification, history) =
        version_view(caller, state, report_id, version).await?;
    let labels = field_labels(state, &payload.template).await?;
    let site_name = storage::accounts::list_sites(&state.storage.db)
        .await?
        .into_iter()
        .find(|s| s.id == payload.exam.site)
        .map(|s| s.name)
        .unwrap_or_else(|| payload.exam.site.clone());
    // The township gets the tracing with an ECG report; without one (no recording yet,
    // unreadable file) the report still prints, see `ecg_strip::load`.
    let ecg_strip =
        if crate::printout::ExamKind::of(&payload.exam) == crate::printout::ExamKind::Ecg {
            crate::printout::ecg_strip::load(state, payload.exam.exam_id).await
        } else {
            None
        };
    let printout = Printout {
        payload: &payload,
        signed: &v.signed,
        verification: &verification,
        hospital_name: &state.hospital_name,
        site_name: &site_name,
        field_labels: &labels,
        history: &history,
        tracing: ecg_strip.as_ref().map(|t| t.as_tracing()),
    };
    let font = state.report_font.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_font",
            "no font with Chinese glyphs is configured (report_font)",
        )
    })?;
    let pdf = match crate::printout::render_pdf(&printout, font) {
        // A strip the page cannot hold must not cost the township its report.
        Err(e @ crate::printout::PrintoutError::Tracing(_)) => {
            tracing::warn!(report_id, version, error = %e, "report printed without its tracing");
            crate::printout::render_pdf(
                &Printout {
                    tracing: None,
                    ..printout
                },
                font,
            )
        }
        other => other,
    }
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "pdf", e.to_string()))?;
    let fhir = if want_pdf_only {
        serde_json::Value::Null
    } else {
        let mut resource = crate::fhir::diagnostic_report(&printout, Some(&pdf), base);
        if payload.exam.kind == "lab" {
            let scope = report_scope(&caller.principal);
            if let Some(order) =
                storage::lab::order_of_exam(&state.storage.db, &scope, payload.exam.exam_id).await?
            {
                crate::fhir::add_lab_observations(&mut resource, &order.results);
            }
        }
        resource
    };
    Ok((summary, pdf, fhir))
}

async fn pdf(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (report_id, version) = path.into_inner();
    let (summary, pdf, _) = render(
        &caller,
        &crate::base_url(&req),
        &state,
        &report_id,
        version,
        true,
    )
    .await?;
    audit_read(&state, &caller, &summary, "pdf").await?;
    Ok(HttpResponse::Ok()
        .content_type("application/pdf")
        .insert_header((
            "Content-Disposition",
            format!("inline; filename=\"report-{report_id}-v{version}.pdf\""),
        ))
        .body(pdf))
}

async fn fhir(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (report_id, version) = path.into_inner();
    let (summary, _, resource) = render(
        &caller,
        &crate::base_url(&req),
        &state,
        &report_id,
        version,
        false,
    )
    .await?;
    audit_read(&state, &caller, &summary, "fhir").await?;
    Ok(HttpResponse::Ok()
        .content_type("application/fhir+json")
        .json(resource))
}
