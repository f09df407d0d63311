//! ECG tracings: the recording and its measurements as JSON (samples separately, on
//! request), the report draft, and the standard printout as SVG and PNG at paper
//! scale. What is shown of the measurements is [`Reading`]'s one rule.

use access::policy::read_scope;
use access::Caller;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use formats::ecg::{self, Ecg, Quantity, Reading};
use serde::Deserialize;
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::ecg::Source;
use storage::exams::ExamKind;
use storage::worklist::Item;

use crate::ecg_render::{
    check_rhythm_lead, measurement_pairs, render_png, render_svg, validate, Header, Layout,
};
use crate::error::ApiError;
use crate::ViewerState;

/// Mount the ECG routes. The caller registers `web::Data<ViewerState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/exams/{id}/ecg", web::get().to(waveform))
        .route("/api/exams/{id}/ecg/samples", web::get().to(samples))
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

/// `GET /api/exams/{id}/ecg`: the recording's description and its measurements, as
/// shown (device's or ours, with what was set aside and why), without samples: a
/// 12-lead ECG's samples are about a megabyte, which a worklist or a report form does
/// not need. Each lead says how many samples it has; `…/ecg/samples` has them.
async fn waveform(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (item, record) = load(&caller, &state, path.into_inner()).await?;
    let automatic = ecg::measure::measure(&record);
    let reading = Reading::new(&record.device_measurements, automatic.as_ref().ok());
    let leads: Vec<_> = record
        .leads
        .iter()
        .map(|l| serde_json::json!({"label": l.label, "derived": l.derived, "samples": l.samples_uv.len()}))
        .collect();
    let mut described = serde_json::to_value(&record)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    described["leads"] = serde_json::Value::Array(leads);
    let automatic_summary = automatic.as_ref().ok().map(|a| {
        serde_json::json!({
            "heart_rate_bpm": a.heart_rate_bpm, "rr_ms": a.rr_ms, "pr_ms": a.pr_ms,
            "qrs_ms": a.qrs_ms, "qt_ms": a.qt_ms, "qtc_bazett_ms": a.qtc_bazett_ms,
            "qtc_fridericia_ms": a.qtc_fridericia_ms, "p_axis": a.p_axis,
            "qrs_axis": a.qrs_axis, "t_axis": a.t_axis, "boundaries": a.boundaries,
            "beats": a.r_peaks.len(), "findings": a.findings, "set_aside": a.set_aside,
        })
    });
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "exam": item,
        "ecg": described,
        "measurements": reading,
        "automatic": automatic_summary,
        "automatic_error": automatic.as_ref().err().map(|e| e.to_string()),
    })))
}

/// `GET /api/exams/{id}/ecg/samples`: every lead's samples (µV) at the recording's
/// rate, the beats we found and our median beat per lead.
async fn samples(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (_, record) = load(&caller, &state, path.into_inner()).await?;
    let automatic = ecg::measure::measure(&record).ok();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sample_rate_hz": record.sample_rate_hz,
        "leads": record.leads,
        "r_peaks": automatic.as_ref().map(|a| &a.r_peaks),
        "median_beat": automatic.as_ref().map(|a| &a.median_beat),
        "median_fiducial": automatic.as_ref().map(|a| a.median_fiducial),
    })))
}

/// `GET /api/exams/{id}/ecg/prefill`: report fields for the `ecg` template, filled from
/// the measurements as shown (the device's where the file has them, else ours, see
/// [`Reading`]), for the cardiologist to confirm or correct. Every sentence states the
/// values the fields show, `sources` says who measured which, and `automatic` keeps
/// our values as computed, so the signed report records both.
async fn prefill(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (_, record) = load(&caller, &state, path.into_inner()).await?;
    let a = ecg::measure::measure(&record).ok();
    let reading = Reading::new(&record.device_measurements, a.as_ref());
    let num = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
    let shown = |q: Quantity| num(reading.get(q).map(|s| s.value));
    let automatic = match &a {
        Some(a) => format!(
            "自动测量：心率 {} bpm，PR {} ms，QRS {} ms，QT {} ms，QTc(Bazett) {} ms，QTc(Fridericia) {} ms，\
             电轴 P {}° QRS {}° T {}°",
            num(a.heart_rate_bpm), num(a.pr_ms), num(a.qrs_ms), num(a.qt_ms), num(a.qtc_bazett_ms),
            num(a.qtc_fridericia_ms), num(a.p_axis), num(a.qrs_axis), num(a.t_axis),
        ),
        None => "自动测量未能完成".to_string(),
    };
    let rate_origin = reading
        .get(Quantity::HeartRate)
        .map(|s| format!("（{}）", s.origin.label_zh()))
        .unwrap_or_default();
    let mut sources = reading.sources_zh();
    if !reading.set_aside.is_empty() {
        let aside: Vec<&str> = reading
            .set_aside
            .iter()
            .map(|s| s.text_zh.as_str())
            .collect();
        sources = format!("{sources}；未采用：{}", aside.join("，"));
    }
    let findings: Vec<&str> = reading
        .findings
        .iter()
        .map(|f| f.text_zh.as_str())
        .collect();
    let content = serde_json::json!({
        "rhythm": findings.join("；"),
        "rate": format!("{} bpm{rate_origin}", shown(Quantity::HeartRate)),
        "intervals": format!("PR {} ms，QRS {} ms，QT/QTc {}/{} ms", shown(Quantity::Pr),
            shown(Quantity::Qrs), shown(Quantity::Qt), shown(Quantity::Qtc)),
        "axis": format!("P {}°，QRS {}°，T {}°", shown(Quantity::PAxis),
            shown(Quantity::QrsAxis), shown(Quantity::TAxis)),
        "sources": sources,
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

/// A rhythm lead the caller named must be in the recording (400 naming its leads).
fn asked_lead_exists(q: &PrintQuery, record: &Ecg, l: &Layout) -> Result<(), ApiError> {
    match q.rhythm {
        Some(_) => check_rhythm_lead(record, l)
            .map_err(|e| ApiError::bad_request("invalid_layout", e.to_string())),
        None => Ok(()),
    }
}

async fn svg(
    caller: Caller,
    state: web::Data<ViewerState>,
    path: web::Path<i64>,
    q: web::Query<PrintQuery>,
) -> Result<HttpResponse, ApiError> {
    let l = layout(&q)?;
    let (item, record) = load(&caller, &state, path.into_inner()).await?;
    asked_lead_exists(&q, &record, &l)?;
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
    asked_lead_exists(&q, &record, &l)?;
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
        measurements: measurement_pairs(&Reading::new(
            &record.device_measurements,
            ecg::measure::measure(record).ok().as_ref(),
        )),
    }
}
