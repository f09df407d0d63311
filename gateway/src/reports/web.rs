//! The township page and its API (actix-web, one worker): what the gateway has sent,
//! what was refused and why, the reports and critical results that came back.
//! Simplified Chinese by default; `?lang=en` (or `?lang=zh`) switches and is remembered
//! in a `lang` cookie.
//!
//! There is no login: the page is meant for the township's internal network only and
//! must be bound to its internal interface (`report_listen`). Cross-site form posts are
//! refused (`Origin` / `Sec-Fetch-Site`), so a web page elsewhere cannot acknowledge a
//! critical finding through a clinician's browser.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the township page (HTML): critical results to acknowledge, outbox, reports |
//! | `GET /township.js` | the page's refresh script (every 5 s, in place) |
//! | `GET /api/outbox` | the outbox by lane (JSON, [`crate::lanes::OutboxSummary`]) |
//! | `GET /reports/{report_id}` | one report (HTML) |
//! | `GET /reports/{report_id}/versions/{v}/pdf` | the stored PDF of a verified version |
//! | `GET /api/reports` | list (JSON) |
//! | `GET /api/reports/{report_id}` | one report with its versions (JSON) |
//! | `POST /api/reports/{report_id}/versions/{v}/acknowledge` | `{"name"}` (JSON or form) |

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use formats::report::ReportPayload;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::db::{self, AcknowledgeOutcome, PdfLookup, ReportOutcome, ReportWrite, VersionRow};
use super::html::{self, path_segment, rfc3339, Summary};
use super::i18n::{t, Lang, T};
use super::Ctx;

/// Longest clinician name accepted.
const MAX_NAME_CHARS: usize = 64;

/// The running page.
#[derive(Debug)]
pub struct Page {
    addr: SocketAddr,
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

impl Page {
    /// Bind `addr` and serve.
    pub fn start(ctx: Arc<Ctx>, addr: &str) -> std::io::Result<Page> {
        let listener = std::net::TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let data = web::Data::new(ctx);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().limit(16 * 1024))
                .app_data(web::FormConfig::default().limit(16 * 1024))
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                        .add((header::REFERRER_POLICY, "no-referrer"))
                        // Patient data: never kept by a shared browser's cache.
                        .add((header::CACHE_CONTROL, "no-store")),
                )
                .configure(routes)
        })
        .workers(1)
        // The gateway handles SIGINT/SIGTERM itself and stops the page.
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(Page {
            addr: local,
            handle,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving (letting running requests finish).
    pub async fn stop(self) {
        self.handle.stop(true).await;
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "report page ended with an error"),
            Err(e) => tracing::error!(error = %e, "report page task ended abnormally"),
        }
    }
}

/// The routes (public for tests that serve them in-process).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(list_html))
        .route("/township.js", web::get().to(script))
        .route("/api/outbox", web::get().to(outbox_json))
        .route("/reports/{report_id}", web::get().to(report_html))
        .route(
            "/reports/{report_id}/versions/{version}/pdf",
            web::get().to(pdf),
        )
        .route("/api/reports", web::get().to(list_json))
        .route("/api/reports/{report_id}", web::get().to(report_json))
        .route(
            "/api/reports/{report_id}/versions/{version}/acknowledge",
            web::post().to(acknowledge),
        );
}

type Shared = web::Data<Arc<Ctx>>;

/// HTML with a content security policy that allows nothing but our inline style, our
/// own refresh script (no inline script), fetching from us and forms posting back to us
/// (everything shown is escaped too; this is the second wall).
fn html_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body)
}

/// Name of the cookie remembering the language.
const LANG_COOKIE: &str = "lang";

/// The page language: `?lang=` first (the switch), then the cookie, else Chinese.
/// Returns also the language to remember when the query chose one.
fn language(req: &HttpRequest) -> (Lang, Option<Lang>) {
    let asked = req
        .query_string()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "lang")
        .and_then(|(_, v)| Lang::parse(v));
    if let Some(lang) = asked {
        return (lang, Some(lang));
    }
    let remembered = req.cookie(LANG_COOKIE).and_then(|c| Lang::parse(c.value()));
    (remembered.unwrap_or_default(), None)
}

/// Remember a language chosen by the switch (a year; the page has no other cookie).
fn remember(mut response: HttpResponse, chosen: Option<Lang>) -> HttpResponse {
    if let Some(lang) = chosen {
        let cookie = actix_web::cookie::Cookie::build(LANG_COOKIE, lang.code())
            .path("/")
            .http_only(true)
            .same_site(actix_web::cookie::SameSite::Lax)
            .max_age(actix_web::cookie::time::Duration::days(365))
            .finish();
        if let Err(e) = response.add_cookie(&cookie) {
            tracing::debug!(error = %e, "language cookie not set");
        }
    }
    response
}

fn db_error_html(lang: Lang, e: impl std::fmt::Display) -> HttpResponse {
    tracing::warn!(error = %e, "township page: database read failed");
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        html::message_page(lang, t(lang, T::InternalError), t(lang, T::DbReadFailed)),
    )
}

fn db_error_json(e: impl std::fmt::Display) -> HttpResponse {
    tracing::warn!(error = %e, "report API: database read failed");
    HttpResponse::InternalServerError().json(json!({"error": "database read failed"}))
}

async fn list_html(ctx: Shared, req: HttpRequest) -> HttpResponse {
    let (lang, chosen) = language(&req);
    let pool = ctx.outbox.pool();
    let rows = match db::recent_versions(pool, db::LISTED_REPORTS).await {
        Ok(rows) => rows,
        Err(e) => return db_error_html(lang, e),
    };
    let outbox = match crate::lanes::summary(pool, ctx.data_dir()).await {
        Ok(o) => o,
        Err(e) => return db_error_html(lang, e),
    };
    let summaries = html::summarize(rows);
    // The alerts show their text: only the few awaiting acknowledgement are read whole.
    let mut alert_texts = std::collections::BTreeMap::new();
    for s in summaries.iter().filter(|s| s.critical_waiting()) {
        let Some(current) = &s.current else { continue };
        match db::report_versions(pool, &s.report_id).await {
            Ok(versions) => {
                let text = versions
                    .iter()
                    .find(|v| v.id == current.id)
                    .and_then(|v| v.payload.as_deref())
                    .and_then(html::alert_text);
                if let Some(text) = text {
                    alert_texts.insert(s.report_id.clone(), text);
                }
            }
            Err(e) => return db_error_html(lang, e),
        }
    }
    let view = html::TownshipView {
        summaries: &summaries,
        outbox: &outbox,
        alert_texts: &alert_texts,
        now_ms: crate::outbox::now_ms(),
    };
    remember(
        html_response(StatusCode::OK, html::township_page(lang, &view)),
        chosen,
    )
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(html::REFRESH_SCRIPT)
}

async fn outbox_json(ctx: Shared) -> HttpResponse {
    match crate::lanes::summary(ctx.outbox.pool(), ctx.data_dir()).await {
        Ok(summary) => HttpResponse::Ok().json(summary),
        Err(e) => db_error_json(e),
    }
}

async fn report_html(ctx: Shared, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let (lang, chosen) = language(&req);
    let report_id = path.into_inner();
    let response = match db::report_versions(ctx.outbox.pool(), &report_id).await {
        Ok(versions) if versions.is_empty() => html_response(
            StatusCode::NOT_FOUND,
            html::message_page(lang, t(lang, T::NotFoundTitle), t(lang, T::NotFoundReport)),
        ),
        Ok(versions) => html_response(
            StatusCode::OK,
            html::report_page(lang, &report_id, &versions),
        ),
        Err(e) => db_error_html(lang, e),
    };
    remember(response, chosen)
}

async fn pdf(ctx: Shared, req: HttpRequest, path: web::Path<(String, i64)>) -> HttpResponse {
    let (lang, _) = language(&req);
    let (report_id, version) = path.into_inner();
    let lookup = match db::pdf_of(ctx.outbox.pool(), &report_id, version).await {
        Ok(l) => l,
        Err(e) => return db_error_html(lang, e),
    };
    match lookup {
        PdfLookup::NotFound => html_response(
            StatusCode::NOT_FOUND,
            html::message_page(lang, t(lang, T::NotFoundTitle), t(lang, T::NotFoundVersion)),
        ),
        PdfLookup::NotVerified => html_response(
            StatusCode::CONFLICT,
            html::message_page(lang, t(lang, T::PrintRefused), t(lang, T::PrintRefusedText)),
        ),
        PdfLookup::NotYet(error) => {
            let mut response = html_response(
                StatusCode::SERVICE_UNAVAILABLE,
                html::message_page(
                    lang,
                    t(lang, T::PdfNotYetTitle),
                    &format!(
                        "{} {}",
                        t(lang, T::PdfRetryText),
                        error.map(|e| format!("({e})")).unwrap_or_default()
                    ),
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            response
        }
        PdfLookup::Ready(relative) => match tokio::fs::read(ctx.data_dir().join(&relative)).await {
            Ok(bytes) => HttpResponse::Ok()
                .content_type("application/pdf")
                .insert_header((
                    header::CONTENT_DISPOSITION,
                    format!(
                        "inline; filename=\"{}\"",
                        super::pdf_file_name(&report_id, version)
                    ),
                ))
                .body(bytes),
            Err(e) => {
                tracing::error!(path = %relative, error = %e, "stored report PDF cannot be read");
                html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    html::message_page(lang, t(lang, T::InternalError), t(lang, T::PdfUnreadable)),
                )
            }
        },
    }
}

/// One version, as the JSON API shows it.
#[derive(Debug, Serialize)]
struct VersionJson {
    version: i64,
    status: String,
    critical: bool,
    verified: bool,
    verify_error: Option<String>,
    reason: Option<String>,
    signer: Option<String>,
    signed_at: Option<String>,
    received_at: String,
    key_id: String,
    exam: Value,
    /// Only for verified versions: never hand out unverified text as report content.
    content: Option<Value>,
    /// The signed text exactly as received (also for rejected ones, for investigation).
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    pdf_url: Option<String>,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<String>,
    acknowledgement_relayed_at: Option<String>,
}

fn version_json(v: &VersionRow) -> VersionJson {
    let content = if v.verified {
        v.payload
            .as_deref()
            .and_then(|p| serde_json::from_str::<ReportPayload>(p).ok())
            .map(|p| json!(p.content))
    } else {
        None
    };
    VersionJson {
        version: v.version,
        status: v.status.clone(),
        critical: v.critical,
        verified: v.verified,
        verify_error: v.verify_error.clone(),
        reason: v.reason.clone(),
        signer: v.signer_name.clone(),
        signed_at: v.signed_at.map(rfc3339),
        received_at: rfc3339(v.received_at),
        key_id: v.key_id.clone(),
        exam: json!({
            "kind": v.exam.kind,
            "site": v.exam.site,
            "patient_id": v.exam.patient_id,
            "patient_name": v.exam.patient_name,
            "study_uid": v.exam.study_uid,
            "accession_number": v.exam.accession_number,
            "modality": v.exam.modality,
        }),
        content,
        payload: v.payload.clone(),
        pdf_url: (v.verified && v.pdf_available).then(|| {
            format!(
                "/reports/{}/versions/{}/pdf",
                path_segment(&v.report_id),
                v.version
            )
        }),
        acknowledged_by: v.acknowledged_by.clone(),
        acknowledged_at: v.acknowledged_at.map(rfc3339),
        acknowledgement_relayed_at: v.relayed_at.map(rfc3339),
    }
}

fn summary_json(s: &Summary) -> Value {
    let shown = s.shown();
    json!({
        "report_id": s.report_id,
        "current_version": s.current.as_ref().map(|c| c.version),
        "verified": s.current.is_some(),
        "verify_error": if s.current.is_some() { None } else { s.latest.verify_error.clone() },
        "status": shown.status,
        "critical": shown.critical,
        "critical_waiting": s.critical_waiting(),
        "critical_withdrawn": s.critical_withdrawn,
        "acknowledged_by": s.current.as_ref().and_then(|c| c.acknowledged_by.clone()),
        "acknowledged_at": s.current.as_ref().and_then(|c| c.acknowledged_at).map(rfc3339),
        "versions": s.versions,
        "rejected_versions": s.rejected,
        "exam": {
            "kind": shown.exam.kind,
            "patient_id": shown.exam.patient_id,
            "patient_name": shown.exam.patient_name,
            "study_uid": shown.exam.study_uid,
            "accession_number": shown.exam.accession_number,
            "modality": shown.exam.modality,
        },
        "signer": shown.signer_name,
        "signed_at": shown.signed_at.map(rfc3339),
        "received_at": rfc3339(s.last_received_at),
        "view_url": format!("/reports/{}", path_segment(&s.report_id)),
        "pdf_url": s.current.as_ref().filter(|c| c.pdf_available).map(|c| format!(
            "/reports/{}/versions/{}/pdf", path_segment(&s.report_id), c.version
        )),
    })
}

async fn list_json(ctx: Shared) -> HttpResponse {
    match db::recent_versions(ctx.outbox.pool(), db::LISTED_REPORTS).await {
        Ok(rows) => {
            let reports: Vec<Value> = html::summarize(rows).iter().map(summary_json).collect();
            HttpResponse::Ok().json(json!({ "reports": reports }))
        }
        Err(e) => db_error_json(e),
    }
}

async fn report_json(ctx: Shared, path: web::Path<String>) -> HttpResponse {
    let report_id = path.into_inner();
    match db::report_versions(ctx.outbox.pool(), &report_id).await {
        Ok(versions) if versions.is_empty() => {
            HttpResponse::NotFound().json(json!({"error": "no such report"}))
        }
        Ok(versions) => {
            let current = versions
                .iter()
                .filter(|v| v.verified)
                .map(|v| v.version)
                .max();
            let list: Vec<VersionJson> = versions.iter().map(version_json).collect();
            HttpResponse::Ok().json(json!({
                "report_id": report_id,
                "current_version": current,
                "versions": list,
            }))
        }
        Err(e) => db_error_json(e),
    }
}

/// The acknowledgement body (JSON or the page's form).
#[derive(Debug, Deserialize)]
struct AcknowledgeBody {
    name: String,
    /// `list`: the form on the township page, which the browser goes back to (the
    /// report page's form returns to the report).
    #[serde(default)]
    back: Option<String>,
}

/// Whether a browser says this request comes from another site (a CSRF attempt).
fn cross_site(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") {
            return true;
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        return origin_host != host;
    }
    false
}

/// Trimmed, non-empty, at most [`MAX_NAME_CHARS`], no control characters.
pub fn clean_name(name: &str) -> Option<String> {
    let name = name.trim();
    (!name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.chars().any(char::is_control))
    .then(|| name.to_string())
}

async fn acknowledge(
    ctx: Shared,
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    body: actix_web::Either<web::Json<AcknowledgeBody>, web::Form<AcknowledgeBody>>,
) -> HttpResponse {
    let (report_id, version) = path.into_inner();
    let (lang, _) = language(&req);
    let (body, from_form) = match body {
        actix_web::Either::Left(j) => (j.into_inner(), false),
        actix_web::Either::Right(f) => (f.into_inner(), true),
    };
    let AcknowledgeBody { name, back } = body;
    // The page shows the failure in its language; the API keeps its English messages.
    let fail = |status: StatusCode, title: T, text: T, message: &str| {
        if from_form {
            html_response(
                status,
                html::message_page(lang, t(lang, title), t(lang, text)),
            )
        } else {
            HttpResponse::build(status).json(json!({"error": message}))
        }
    };
    if cross_site(&req) {
        return fail(
            StatusCode::FORBIDDEN,
            T::RequestRefused,
            T::CrossSite,
            "cross-site request refused: acknowledge from the report page itself",
        );
    }
    let Some(name) = clean_name(&name) else {
        return fail(
            StatusCode::BAD_REQUEST,
            T::NameRequired,
            T::NameRequiredText,
            "name must be 1-64 characters without control characters (请填写临床医生姓名)",
        );
    };
    let write = ReportWrite::Acknowledge {
        report_id: report_id.clone(),
        version,
        name,
    };
    let outcome = match ctx.outbox.write_report(write).await {
        Ok(ReportOutcome::Acknowledge(o)) => o,
        Ok(other) => {
            tracing::error!(?other, "unexpected outcome of an acknowledgement");
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                T::InternalError,
                T::NotSavedText,
                "could not record",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not record an acknowledgement");
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                T::NotSaved,
                T::NotSavedText,
                "could not record the acknowledgement; try again (未能保存，请重试)",
            );
        }
    };
    let (status, by, at) = match outcome {
        AcknowledgeOutcome::Recorded { by, at } => {
            tracing::info!(%report_id, version, acknowledged_by = %by, "critical finding acknowledged");
            // Relay now rather than at the sender's next round.
            ctx.wake.notify_one();
            (StatusCode::OK, by, at)
        }
        AcknowledgeOutcome::Already { by, at } => (StatusCode::OK, by, at),
        AcknowledgeOutcome::NotFound => {
            return fail(
                StatusCode::NOT_FOUND,
                T::NotFoundTitle,
                T::NotFoundVersion,
                "no such report version",
            )
        }
        AcknowledgeOutcome::NotVerified => {
            return fail(
                StatusCode::CONFLICT,
                T::CannotAcknowledge,
                T::NotVerifiedText,
                "this version failed signature verification and cannot be acknowledged",
            )
        }
        AcknowledgeOutcome::NotCritical => {
            return fail(
                StatusCode::CONFLICT,
                T::CannotAcknowledge,
                T::NotCriticalText,
                "this version is not a critical finding",
            )
        }
        AcknowledgeOutcome::Superseded { current } => {
            return fail(
                StatusCode::CONFLICT,
                T::CannotAcknowledge,
                T::SupersededText,
                &format!("version {version} was replaced by version {current}: read and acknowledge that one"),
            )
        }
    };
    if from_form {
        let location = if back.as_deref() == Some("list") {
            "/".to_string()
        } else {
            format!("/reports/{}", path_segment(&report_id))
        };
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location))
            .finish();
    }
    HttpResponse::build(status).json(json!({
        "report_id": report_id,
        "version": version,
        "acknowledged_by": by,
        "acknowledged_at": rfc3339(at),
    }))
}
