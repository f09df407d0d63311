//! ECG files from the townships: `POST /ingest/ecg` keeps the original unchanged as a
//! blob, checks it reads as an ECG, measures it, and puts it on the cardiology worklist
//! (STAT when the township said so or the automatic measurements suggest an emergency).

use std::io::Write;

use access::policy::store_site;
use access::Caller;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use formats::ecg::{self, SourceFormat};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use storage::audit::{Action, EventType, Outcome};
use storage::ecg::NewEcg;
use storage::exams::Priority;
use viewer_api::ApiError;

use crate::HubState;

/// Largest ECG file accepted.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Mount the ECG ingest route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/ingest/ecg")
            .app_data(web::PayloadConfig::new(MAX_FILE_BYTES))
            .route(web::post().to(ingest)),
    );
}

/// Query of `POST /ingest/ecg`.
#[derive(Deserialize)]
pub struct IngestQuery {
    /// `stat` or `routine` (default).
    priority: Option<String>,
    /// The file's name at the township.
    filename: Option<String>,
}

fn format_name(f: &SourceFormat) -> (&'static str, &'static str) {
    match f {
        SourceFormat::Dicom => ("dicom", "dcm"),
        SourceFormat::HL7aECG => ("aecg", "xml"),
        SourceFormat::ScpEcg => ("scp", "scp"),
    }
}

fn refused(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": message }))
}

async fn ingest(
    caller: Caller,
    state: web::Data<HubState>,
    q: web::Query<IngestQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let site = store_site(&caller.principal)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only gateways and technicians send ECGs",
            )
        })?
        .to_string();
    let marked = match q.priority.as_deref() {
        None => Priority::Routine,
        Some(p) => Priority::parse_any(p).ok_or_else(|| {
            ApiError::bad_request("invalid_priority", format!("unknown priority {p:?}"))
        })?,
    };
    let file_name = q
        .filename
        .as_deref()
        .map(|n| n.chars().take(255).collect::<String>());
    let record = match ecg::read_any(&body) {
        Ok(r) => r,
        Err(e) => return Ok(refused(format!("not a readable ECG file: {e}"))),
    };
    if record.leads.is_empty() || record.sample_rate_hz <= 0.0 {
        return Ok(refused("the ECG file holds no samples".into()));
    }
    // Findings that suggest an emergency (a rate shown below 40 or above 150, a long
    // pause) make it STAT; they are decided on the values a reader will be shown.
    let automatic = ecg::measure::measure(&record).ok();
    let reading = ecg::Reading::new(&record.device_measurements, automatic.as_ref());
    let emergency = reading.emergency();
    let priority = if emergency { Priority::Stat } else { marked };

    let sha = hex::encode(Sha256::digest(&body));
    let (format, ext) = format_name(&record.source_format);
    let blob_key = format!("ecg/{}/{sha}.{ext}", &sha[..2]);
    // The original goes to the blob store durably before the exam exists.
    if !state.storage.blobs.exists(&blob_key).await? {
        let mut tmp = tempfile::NamedTempFile::new_in(&state.tmp_dir).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                e.to_string(),
            )
        })?;
        tmp.write_all(&body)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    e.to_string(),
                )
            })?;
        state
            .storage
            .blobs
            .put_file(&blob_key, tmp.path(), body.len() as u64)
            .await?;
    }
    let samples = record
        .leads
        .iter()
        .map(|l| l.samples_uv.len())
        .max()
        .unwrap_or(0);
    let duration_ms = (samples as f64 * 1000.0 / record.sample_rate_hz) as i64;
    let audit = caller.event(EventType::IMPORT, Action::Create, Outcome::Success);
    let outcome = storage::ecg::record(
        &state.storage.db,
        &NewEcg {
            site: &site,
            sha256: &sha,
            blob_key: &blob_key,
            file_name: file_name.as_deref(),
            format,
            patient_id: record.patient.id.as_deref(),
            patient_name: record.patient.name.as_deref(),
            study_uid: record.order.study_uid.as_deref(),
            sample_rate_hz: record.sample_rate_hz,
            lead_count: record.leads.len() as i64,
            duration_ms,
            acquired_at: record.acquired_at_ms,
            priority,
        },
        &state.deadlines().await?,
        &audit,
    )
    .await?;
    state.changes.notify_waiters();
    let findings: Vec<String> = reading.findings.into_iter().map(|f| f.text_en).collect();
    let (status, exam_id) = match outcome {
        storage::ecg::Recorded::Stored { exam_id } => ("stored", exam_id),
        storage::ecg::Recorded::Duplicate { exam_id } => ("duplicate", exam_id),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": status, "exam_id": exam_id, "priority": priority, "format": format,
        "findings": findings,
    })))
}

/// A DICOM ECG whose study just became complete: when the automatic measurements
/// suggest an emergency, make it STAT. Best effort: the exam is on the worklist anyway.
pub async fn triage_dicom(state: &HubState, caller: &Caller, exam_id: i64) {
    let Ok(Some(storage::ecg::Source::Dicom(key))) =
        storage::ecg::source(&state.storage.db, exam_id).await
    else {
        return;
    };
    let Ok(bytes) = state.storage.blobs.get_bytes(&key).await else {
        return;
    };
    let Ok(record) = ecg::read_any(&bytes) else {
        return;
    };
    let automatic = ecg::measure::measure(&record).ok();
    let findings: Vec<String> = ecg::Reading::new(&record.device_measurements, automatic.as_ref())
        .findings
        .into_iter()
        .filter(|f| f.emergency)
        .map(|f| f.text_en)
        .collect();
    if findings.is_empty() {
        return;
    }
    let why = format!("a finding suggests an emergency: {}", findings.join(", "));
    let audit = caller.event(EventType::PATIENT_RECORD, Action::Update, Outcome::Success);
    let targets = match state.deadlines().await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(exam_id, error = %e, "reading the deadlines to make an ECG STAT failed");
            return;
        }
    };
    match storage::exams::make_stat(&state.storage.db, exam_id, &targets, &why, &audit).await {
        Ok(true) => {
            tracing::warn!(exam_id, %why, "ECG made STAT");
            state.changes.notify_waiters();
        }
        Ok(false) => {}
        Err(e) => tracing::error!(exam_id, error = %e, "could not make the ECG STAT"),
    }
}
