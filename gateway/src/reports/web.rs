//! The local report page and API for the township (actix-web, one worker).
//!
//! There is no login: the page is meant for the township's internal network only and
//! must be bound to its internal interface (`report_listen`). Cross-site form posts are
//! refused (`Origin` / `Sec-Fetch-Site`), so a web page elsewhere cannot acknowledge a
//! critical finding through a clinician's browser.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | list (HTML) |
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

/// HTML with a content security policy that allows nothing but our inline style and
/// forms posting back to us (everything shown is escaped too; this is the second wall).
fn html_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body)
}

fn db_error_html(e: impl std::fmt::Display) -> HttpResponse {
    tracing::warn!(error = %e, "report page: database read failed");
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        html::message_page("内部错误", "读取报告数据库失败，请稍后重试或联系管理员。"),
    )
}

fn db_error_json(e: impl std::fmt::Display) -> HttpResponse {
    tracing::warn!(error = %e, "report API: database read failed");
    HttpResponse::InternalServerError().json(json!({"error": "database read failed"}))
}

async fn list_html(ctx: Shared) -> HttpResponse {
    match db::all_versions(ctx.outbox.pool()).await {
        Ok(rows) => html_response(StatusCode::OK, html::list_page(&html::summarize(rows))),
        Err(e) => db_error_html(e),
    }
}

async fn report_html(ctx: Shared, path: web::Path<String>) -> HttpResponse {
    let report_id = path.into_inner();
    match db::report_versions(ctx.outbox.pool(), &report_id).await {
        Ok(versions) if versions.is_empty() => html_response(
            StatusCode::NOT_FOUND,
            html::message_page("未找到报告", &format!("没有编号为 {report_id} 的报告。")),
        ),
        Ok(versions) => html_response(StatusCode::OK, html::report_page(&report_id, &versions)),
        Err(e) => db_error_html(e),
    }
}

async fn pdf(ctx: Shared, path: web::Path<(String, i64)>) -> HttpResponse {
    let (report_id, version) = path.into_inner();
    let lookup = match db::pdf_of(ctx.outbox.pool(), &report_id, version).await {
        Ok(l) => l,
        Err(e) => return db_error_html(e),
    };
    match lookup {
        PdfLookup::NotFound => html_response(
            StatusCode::NOT_FOUND,
            html::message_page("未找到报告", "没有这个报告版本。"),
        ),
        PdfLookup::NotVerified => html_response(
            StatusCode::CONFLICT,
            html::message_page(
                "不提供打印",
                "此报告版本未通过签名验证，内容不可信，不提供PDF打印。(This version failed signature verification.)",
            ),
        ),
        PdfLookup::NotYet(error) => {
            let mut response = html_response(
                StatusCode::SERVICE_UNAVAILABLE,
                html::message_page(
                    "PDF尚未取得",
                    &format!(
                        "此版本的PDF尚未从县级平台取得，将自动重试，请稍后再试。{}",
                        error.map(|e| format!("（{e}）")).unwrap_or_default()
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
                    html::message_page("内部错误", "PDF文件无法读取，请联系管理员。"),
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
    match db::all_versions(ctx.outbox.pool()).await {
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
    let (name, from_form) = match body {
        actix_web::Either::Left(j) => (j.into_inner().name, false),
        actix_web::Either::Right(f) => (f.into_inner().name, true),
    };
    let fail = |status: StatusCode, title: &str, message: &str| {
        if from_form {
            html_response(status, html::message_page(title, message))
        } else {
            HttpResponse::build(status).json(json!({"error": message}))
        }
    };
    if cross_site(&req) {
        return fail(
            StatusCode::FORBIDDEN,
            "请求被拒绝",
            "cross-site request refused: acknowledge from the report page itself",
        );
    }
    let Some(name) = clean_name(&name) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "请填写姓名",
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
                "内部错误",
                "could not record",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not record an acknowledgement");
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "未能保存",
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
                "未找到报告",
                "no such report version",
            )
        }
        AcknowledgeOutcome::NotVerified => {
            return fail(
                StatusCode::CONFLICT,
                "不能确认",
                "this version failed signature verification and cannot be acknowledged",
            )
        }
        AcknowledgeOutcome::NotCritical => {
            return fail(
                StatusCode::CONFLICT,
                "不能确认",
                "this version is not a critical finding",
            )
        }
    };
    if from_form {
        return HttpResponse::SeeOther()
            .insert_header((
                header::LOCATION,
                format!("/reports/{}", path_segment(&report_id)),
            ))
            .finish();
    }
    HttpResponse::build(status).json(json!({
        "report_id": report_id,
        "version": version,
        "acknowledged_by": by,
        "acknowledged_at": rfc3339(at),
    }))
}
