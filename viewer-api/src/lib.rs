//! The read side of the hub: DICOMweb QIDO-RS and WADO-RS over the index and the blob
//! store. Routes are exposed as a function configuring an actix-web `App`, so the
//! embedded default mounts them beside the hub's and the scale-out deployment runs them
//! in their own process behind the same origin.

pub mod dicom_json;
pub mod ecg;
pub mod ecg_render;
pub mod error;
pub mod fhir;
mod frames;
pub mod printout;
mod qido;
pub mod render;
pub mod reports;
mod wado;
pub mod webui;

use actix_web::web;
use storage::Storage;

pub use error::ApiError;
pub use qido::base_url;

/// Shared state of the read-side routes.
#[derive(Clone)]
pub struct ViewerState {
    /// Index and blobs.
    pub storage: Storage,
    /// Font for printed reports (`None`: PDFs answer 503 naming the missing font).
    pub report_font: Option<std::sync::Arc<printout::ReportFont>>,
    /// Name printed at the head of reports.
    pub hospital_name: String,
}

impl ViewerState {
    /// State over `storage`, loading the report font from `font` or the usual places;
    /// without one, everything but printing works and the reason is logged.
    pub fn new(storage: Storage, font: Option<&std::path::Path>, hospital_name: &str) -> Self {
        let report_font = match printout::ReportFont::load(font) {
            Ok(f) => Some(std::sync::Arc::new(f)),
            Err(e) => {
                tracing::warn!(error = %e, "no font for printed reports; PDF and FHIR report routes will answer 503");
                None
            }
        };
        ViewerState {
            storage,
            report_font,
            hospital_name: hospital_name.to_string(),
        }
    }
}

/// Mount the DICOMweb read routes under `/dicomweb`. The caller registers
/// `web::Data<ViewerState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/dicomweb")
            .route("/studies", web::get().to(qido::studies))
            .route("/series", web::get().to(qido::all_series))
            .route("/instances", web::get().to(qido::all_instances))
            .route("/studies/{study}", web::get().to(wado::study))
            .route(
                "/studies/{study}/thumbnail",
                web::get().to(render::routes::study_thumbnail),
            )
            .route(
                "/studies/{study}/rendered",
                web::get().to(render::routes::study_rendered),
            )
            .route(
                "/studies/{study}/series/{series}/rendered",
                web::get().to(render::routes::series_rendered),
            )
            .route(
                "/studies/{study}/series/{series}/thumbnail",
                web::get().to(render::routes::series_thumbnail),
            )
            .route(
                "/studies/{study}/series/{series}/instances/{instance}/rendered",
                web::get().to(render::routes::instance_rendered),
            )
            .route(
                "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
                web::get().to(render::routes::instance_thumbnail),
            )
            .route(
                "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
                web::get().to(frames::frames),
            )
            .route(
                "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
                web::get().to(render::routes::frame_rendered),
            )
            .route(
                "/studies/{study}/metadata",
                web::get().to(wado::study_metadata),
            )
            .route("/studies/{study}/series", web::get().to(qido::study_series))
            .route(
                "/studies/{study}/instances",
                web::get().to(qido::study_instances),
            )
            .route(
                "/studies/{study}/series/{series}",
                web::get().to(wado::series),
            )
            .route(
                "/studies/{study}/series/{series}/metadata",
                web::get().to(wado::series_metadata),
            )
            .route(
                "/studies/{study}/series/{series}/instances",
                web::get().to(qido::series_instances),
            )
            .route(
                "/studies/{study}/series/{series}/instances/{instance}",
                web::get().to(wado::instance),
            )
            .route(
                "/studies/{study}/series/{series}/instances/{instance}/metadata",
                web::get().to(wado::instance_metadata),
            ),
    );
}
