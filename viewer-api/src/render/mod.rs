//! Rendered WADO-RS (PS3.18 8.3.5, 10.4.1.1.3): instances and frames as JPEG or PNG,
//! thumbnails of instances, series and studies; the decode/window/encode pipeline and a
//! bounded cache of results. The WADO-RS `frames` route (raw pixels) is in `crate::frames`
//! and shares the decoding here.
//!
//! Decoding is pure Rust: dicom-pixeldata (`native` + `openjp2`) for JPEG baseline and
//! lossless, RLE, deflate and JPEG 2000, and `jpegls` (pure_jpegls) for single-component
//! JPEG-LS. Colour JPEG-LS and 12-bit JPEG extended are answered 406 naming the transfer
//! syntax.

pub mod cache;
pub mod encode;
mod jpeg_grey;
pub mod jpegls;
pub mod params;
pub mod pipeline;
pub(crate) mod routes;
pub mod thumbnails;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::http::StatusCode;
use dicom_object::DefaultDicomObject;
use storage::index::StoredInstance;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::ViewerState;
pub use pipeline::RenderError;

/// Largest original we load into memory to decode. Rendering needs the whole file in
/// memory (dicom-object parses from a reader to the end); a bigger multi-frame object
/// would be a memory hazard on a county server.
pub const MAX_DECODE_BYTES: i64 = 512 * 1024 * 1024;

impl From<RenderError> for ApiError {
    fn from(e: RenderError) -> Self {
        let (status, code) = match &e {
            RenderError::UnsupportedTransferSyntax { .. }
            | RenderError::UnsupportedVariant { .. } => {
                (StatusCode::NOT_ACCEPTABLE, "unsupported_transfer_syntax")
            }
            RenderError::NoPixelData => (StatusCode::NOT_ACCEPTABLE, "no_pixel_data"),
            RenderError::NoSuchFrame { .. } => (StatusCode::NOT_FOUND, "no_such_frame"),
            RenderError::Unsupported(_) => (StatusCode::NOT_ACCEPTABLE, "unsupported_image"),
            RenderError::Corrupt(_) => {
                tracing::warn!(error = %e, "stored image could not be decoded");
                (StatusCode::UNPROCESSABLE_ENTITY, "unreadable_image")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Decodes at once: each holds a whole file and its decoded pixels in memory, so they
/// are capped at the number of cores (decoding is CPU-bound anyway).
fn decode_permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    })
}

/// Originals held in memory at once for rendering, MiB. An original takes its size in
/// MiB of it, at most the whole budget, so one as large as [`MAX_DECODE_BYTES`] still
/// gets through, alone.
const READ_BUDGET_MIB: u32 = 512;

fn read_budget() -> &'static Semaphore {
    static BUDGET: OnceLock<Semaphore> = OnceLock::new();
    BUDGET.get_or_init(|| Semaphore::new(READ_BUDGET_MIB as usize))
}

/// Why [`with_blob`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobRenderError {
    /// The original is over [`MAX_DECODE_BYTES`].
    #[error("original is too large to decode")]
    TooLarge,
    /// Blob store.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// Decoding or rendering.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The blocking pool is gone (shutting down).
    #[error("render worker unavailable")]
    Unavailable,
}

/// Load the original of `inst` from `blobs` and run `f` on the parsed object on the
/// blocking pool, within the size and concurrency bounds above.
pub async fn with_blob<T, F>(
    blobs: &storage::BlobStore,
    inst: &StoredInstance,
    f: F,
) -> Result<T, BlobRenderError>
where
    T: Send + 'static,
    F: FnOnce(&DefaultDicomObject) -> Result<T, RenderError> + Send + 'static,
{
    with_bytes(blobs, inst, move |bytes| f(&pipeline::open(bytes)?)).await
}

/// Load the original of `inst` from `blobs` and run `f` on its bytes on the blocking
/// pool, within the size and concurrency bounds above.
async fn with_bytes<T, F>(
    blobs: &storage::BlobStore,
    inst: &StoredInstance,
    f: F,
) -> Result<T, BlobRenderError>
where
    T: Send + 'static,
    F: FnOnce(&[u8]) -> Result<T, RenderError> + Send + 'static,
{
    if inst.size_bytes > MAX_DECODE_BYTES {
        return Err(BlobRenderError::TooLarge);
    }
    // Reading overlaps decoding: a read holds only its share of the memory budget, and
    // the CPU permit is taken once the bytes are here, so no core idles on I/O.
    let mib = u32::try_from((inst.size_bytes >> 20) + 1)
        .unwrap_or(READ_BUDGET_MIB)
        .min(READ_BUDGET_MIB);
    let _memory = read_budget()
        .acquire_many(mib)
        .await
        .map_err(|_| BlobRenderError::Unavailable)?;
    let bytes = blobs.get_bytes(&inst.blob_key).await?;
    let _cpu = decode_permits()
        .acquire()
        .await
        .map_err(|_| BlobRenderError::Unavailable)?;
    let out = tokio::task::spawn_blocking(move || f(&bytes))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "render worker failed");
            BlobRenderError::Unavailable
        })??;
    Ok(out)
}

/// Plans learnt so far, by blob key (content-addressed, so a plan never goes stale);
/// `None` for originals the fast path does not apply to, so they are not re-examined.
type Plans = HashMap<String, Option<Arc<pipeline::NativePlan>>>;

/// Plans kept at most (about 200 bytes each); the map is emptied when full, which only
/// costs one parse per original afterwards.
const MAX_PLANS: usize = 20_000;

fn plans() -> &'static Mutex<Plans> {
    static PLANS: OnceLock<Mutex<Plans>> = OnceLock::new();
    PLANS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Frame `frame` of `inst` rendered with `params` and encoded. An uncompressed
/// monochrome original is parsed once: its plan (where its samples lie, its header
/// values) is kept, and later requests render from the file bytes directly.
pub async fn render_encoded(
    blobs: &storage::BlobStore,
    inst: &StoredInstance,
    frame: u32,
    params: params::RenderParams,
) -> Result<Vec<u8>, BlobRenderError> {
    let key = inst.blob_key.clone();
    // A poisoned lock only means a panic elsewhere mid-insert: the map is still usable.
    let known = plans()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .cloned();
    with_bytes(blobs, inst, move |bytes| {
        let image = match known {
            Some(Some(plan)) => pipeline::render_planned(&plan, bytes, frame, &params)?,
            Some(None) => pipeline::render(&pipeline::open(bytes)?, frame, &params)?,
            None => {
                let (obj, scan) = pipeline::open_scanned(bytes)?;
                let plan = pipeline::native_plan(&obj, bytes, &scan).map(Arc::new);
                let image = pipeline::render(&obj, frame, &params)?;
                let mut map = plans()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if map.len() >= MAX_PLANS {
                    map.clear();
                }
                map.insert(key, plan);
                image
            }
        };
        encode::encode(&image, params.format, params.quality)
    })
    .await
}

/// [`with_blob`] for request handlers: failures as API errors.
pub(crate) async fn with_instance<T, F>(
    state: &ViewerState,
    inst: &StoredInstance,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&DefaultDicomObject) -> Result<T, RenderError> + Send + 'static,
{
    with_blob(&state.storage.blobs, inst, f)
        .await
        .map_err(|e| blob_error(inst, e))
}

/// A [`BlobRenderError`] as the API answers it.
pub(crate) fn blob_error(inst: &StoredInstance, e: BlobRenderError) -> ApiError {
    match e {
        BlobRenderError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large_to_render",
            format!(
                "instance {} is {} bytes; decoding is limited to {MAX_DECODE_BYTES}",
                inst.sop_instance_uid, inst.size_bytes
            ),
        ),
        BlobRenderError::Storage(e) => ApiError::from(e),
        BlobRenderError::Render(e) => ApiError::from(e),
        BlobRenderError::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "render_unavailable",
            "rendering is unavailable, retry later",
        ),
    }
}

/// Parse a 1-based frame list from the path (`1` or `1,3,5`), naming the parameter.
pub(crate) fn parse_frames(raw: &str, max: usize) -> Result<Vec<u32>, ApiError> {
    let frames: Vec<u32> = raw
        .split(',')
        .map(|s| s.trim().parse::<u32>().ok().filter(|n| *n >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("frame: \"{raw}\" is not a list of frame numbers from 1"),
            )
        })?;
    if frames.len() > max {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("frame: at most {max} frames per request"),
        ));
    }
    Ok(frames)
}

#[cfg(test)]
mod tests;
