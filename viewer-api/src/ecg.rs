//! ECG tracings: the waveform as JSON with device and automatic measurements, and the
//! standard printout as SVG and PNG at paper scale.

use access::policy::read_scope;
use access::Caller;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use formats::ecg::{self, Ecg};
use serde::Deserialize;
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::ecg::Source;
use storage::exams::ExamKind;
use storage::worklist::Item;

use crate::ecg_render::{render_png, render_svg, validate, Header, Layout};
use crate::error::ApiError;
use crate::ViewerState;

/// Mount the ECG routes. The caller registers `web::Data<ViewerState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/exams/{id}/ecg", web::get().to(waveform))
        .route("/api/exams/{id}/ecg/prefill", web::get().to(prefill))
        .route("/api/exams/{id}/ecg.svg", web::get().to(svg))
        .route("/api/exams/{id}/ecg.png", web::get().to(png));
}

/// The exam (if the caller may read it and it is an ECG) and its parsed recording.
async fn load(caller: &Caller, state: &ViewerState, id: i64) -> Result<(Item, Ecg), ApiError> {
    let item = storage::worklist::get(&state.storage.db, &read_scope(&caller.principal), id)
        .await?
        .filter(|i| i.kind == ExamKind::Ecg)
        .ok_or_else(|| ApiError::not_found(format!("no ECG exam {id}")))?;
    let source = storage::ecg::source(&state.storage.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("ECG exam {id} has no recording yet")))?;
    let key = match &source {
        Source::File(key, _) | Source::Dicom(key) => key,
    };
    let bytes = state.storage.blobs.get_bytes(key).await?;
    let unreadable = |e: ecg::EcgError| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_ecg",
            format!("the stored ECG cannot be read: {e}"),
        )
    };
    // DICOM blobs are whole Part 10 files, like imported DICOM ECG files.
    let record = ecg::read_any(&bytes).map_err(unreadable)?;
    let event = NewEvent {
        patient_id: item.patient_id.clone(),
        study_uid: item.study_uid.clone(),
        exam_id: Some(item.id),
        ..caller.event(
            EventType::DICOM_INSTANCES_ACCESSED,
            Action::Read,
            Outcome::Success,
        )
    };
    storage::audit::append(&state.storage.db, &event).await?;
    Ok((item, record))
}

async fn waveform(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (item, record) = load(&caller, &state, path.into_inner()).await?;
    let automatic = ecg::measure::measure(&record).map_err(|e| e.to_string());
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "exam": item,
        "ecg": record,
        "automatic": automatic.as_ref().ok(),
        "automatic_error": automatic.as_ref().err(),
    })))
}

/// `GET /api/exams/{id}/ecg/prefill`: report fields for the `ecg` template, filled from
/// the measurements (the device's where the file has them, else ours), for the
/// cardiologist to confirm or correct. `automatic` keeps our values as computed, so the
/// signed report records both the automatic and the confirmed values.
async fn prefill(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (_, record) = load(&caller, &state, path.into_inner()).await?;
    let a = ecg::measure::measure(&record).ok();
    let d = &record.device_measurements;
    let num = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
    let auto = |f: fn(&ecg::measure::Automatic) -> Option<f64>| a.as_ref().and_then(f);
    let rate = d.heart_rate_bpm.or(auto(|a| a.heart_rate_bpm));
    let pr = d.pr_ms.or(auto(|a| a.pr_ms));
    let qrs = d.qrs_ms.or(auto(|a| a.qrs_ms));
    let qt = d.qt_ms.or(auto(|a| a.qt_ms));
    let qtc = d.qtc_ms.or(auto(|a| a.qtc_bazett_ms));
    let findings: Vec<String> = a
        .as_ref()
        .map(|a| a.findings.iter().map(|f| f.text_zh.clone()).collect())
        .unwrap_or_default();
    let automatic = match &a {
        Some(a) => format!(
            "自动测量：心率 {} bpm，PR {} ms，QRS {} ms，QT {} ms，QTc(Bazett) {} ms，QTc(Fridericia) {} ms，\
             电轴 P {}° QRS {}° T {}°{}",
            num(a.heart_rate_bpm), num(a.pr_ms), num(a.qrs_ms), num(a.qt_ms), num(a.qtc_bazett_ms),
            num(a.qtc_fridericia_ms), num(a.p_axis), num(a.qrs_axis), num(a.t_axis),
            if findings.is_empty() { String::new() } else { format!("；提示：{}", findings.join("，")) }
        ),
        None => "自动测量未能完成".to_string(),
    };
    let content = serde_json::json!({
        "rhythm": findings.first().cloned().unwrap_or_default(),
        "rate": format!("{} bpm", num(rate)),
        "intervals": format!("PR {} ms，QRS {} ms，QT/QTc {}/{} ms", num(pr), num(qrs), num(qt), num(qtc)),
        "axis": format!("P {}°，QRS {}°，T {}°", num(d.p_axis.or(auto(|a| a.p_axis))),
            num(d.qrs_axis.or(auto(|a| a.qrs_axis))), num(d.t_axis.or(auto(|a| a.t_axis)))),
        "conclusion": "",
        "automatic": automatic,
    });
    Ok(HttpResponse::Ok().json(serde_json::json!({ "template": "ecg", "content": content })))
}

/// Query of the printout routes.
#[derive(Deserialize)]
pub struct PrintQuery {
    /// mm/s: 12.5, 25 (default) or 50.
    speed: Option<f64>,
    /// mm/mV: 5, 10 (default) or 20.
    gain: Option<f64>,
    /// Lead of the rhythm strip (default II).
    rhythm: Option<String>,
    /// PNG resolution, pixels per mm (default 8, at most 20).
    px_per_mm: Option<f64>,
}

fn layout(q: &PrintQuery) -> Result<Layout, ApiError> {
    let mut l = Layout::default();
    if let Some(s) = q.speed {
        l.speed_mm_s = s;
    }
    if let Some(g) = q.gain {
        l.gain_mm_mv = g;
    }
    if let Some(r) = &q.rhythm {
        l.rhythm_lead = r.clone();
    }
    validate(&l).map_err(|e| ApiError::bad_request("invalid_layout", e.to_string()))?;
    Ok(l)
}

/// Header lines: who, when, where, and the measurements (device, else automatic).
fn measurements(record: &Ecg) -> Vec<(String, String)> {
    let auto = ecg::measure::measure(record).ok();
    let d = &record.device_measurements;
    let pick = |device: Option<f64>, automatic: Option<f64>| device.or(automatic);
    let mut out = Vec::new();
    let mut push = |label: &str, v: Option<f64>, unit: &str| {
        if let Some(v) = v {
            out.push((
                label.to_string(),
                format!("{v:.0} {unit}").trim().to_string(),
            ));
        }
    };
    push(
        "HR",
        pick(
            d.heart_rate_bpm,
            auto.as_ref().and_then(|a| a.heart_rate_bpm),
        ),
        "bpm",
    );
    push(
        "PR",
        pick(d.pr_ms, auto.as_ref().and_then(|a| a.pr_ms)),
        "ms",
    );
    push(
        "QRS",
        pick(d.qrs_ms, auto.as_ref().and_then(|a| a.qrs_ms)),
        "ms",
    );
    push(
        "QT",
        pick(d.qt_ms, auto.as_ref().and_then(|a| a.qt_ms)),
        "ms",
    );
    push(
        "QTc",
        pick(d.qtc_ms, auto.as_ref().and_then(|a| a.qtc_bazett_ms)),
        "ms",
    );
    push(
        "QRS axis",
        pick(d.qrs_axis, auto.as_ref().and_then(|a| a.qrs_axis)),
        "°",
    );
    out
}

async fn svg(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<i64>,
    q: web::Query<PrintQuery>,
) -> Result<HttpResponse, ApiError> {
    let l = layout(&q)?;
    let (item, record) = load(&caller, &state, path.into_inner()).await?;
    let header = header(&item, &record);
    let text = render_svg(&record, &l, &header.as_header())
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "render", e.to_string()))?;
    Ok(HttpResponse::Ok().content_type("image/svg+xml").body(text))
}

async fn png(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<i64>,
    q: web::Query<PrintQuery>,
) -> Result<HttpResponse, ApiError> {
    let l = layout(&q)?;
    let px = q.px_per_mm.unwrap_or(8.0);
    if !(1.0..=20.0).contains(&px) {
        return Err(ApiError::bad_request(
            "invalid_px_per_mm",
            "px_per_mm must be 1..=20",
        ));
    }
    let (item, record) = load(&caller, &state, path.into_inner()).await?;
    let header = header(&item, &record);
    let bytes = web::block(move || render_png(&record, &l, &header.as_header(), px))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "render", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "render", e.to_string()))?;
    Ok(HttpResponse::Ok().content_type("image/png").body(bytes))
}

/// Owned header fields (the renderer borrows them).
struct OwnedHeader {
    patient_name: Option<String>,
    patient_id: Option<String>,
    sex: Option<String>,
    birth: Option<String>,
    acquired_at: Option<String>,
    site: String,
    measurements: Vec<(String, String)>,
}

impl OwnedHeader {
    fn as_header(&self) -> Header<'_> {
        Header {
            patient_name: self.patient_name.as_deref(),
            patient_id: self.patient_id.as_deref(),
            sex: self.sex.as_deref(),
            age_or_birth: self.birth.as_deref(),
            acquired_at: self.acquired_at.as_deref(),
            site: &self.site,
            measurements: self.measurements.clone(),
            note: Some("测量值仅供参考，以医师确认为准"),
        }
    }
}

fn header(item: &Item, record: &Ecg) -> OwnedHeader {
    OwnedHeader {
        patient_name: record
            .patient
            .name
            .clone()
            .or_else(|| item.patient_name.clone()),
        patient_id: record
            .patient
            .id
            .clone()
            .or_else(|| item.patient_id.clone()),
        sex: record.patient.sex.clone(),
        birth: record.patient.birth_date.clone(),
        acquired_at: record.acquired_at.clone(),
        site: item.site.clone(),
        measurements: measurements(record),
    }
}
