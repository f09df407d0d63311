//! Thumbnails made once, at ingest, off the request path.
//!
//! When instances of a series are stored, the series is queued; after a quiet period
//! (more of the series usually follows within seconds) one background worker renders the
//! series' representative image (the one `.../series/{se}/thumbnail` and
//! `/studies/{st}/thumbnail` show) as the default thumbnail and stores it in the blob
//! store under a key derived from the original's content-addressed key. Thumbnail
//! requests with default parameters are served from there, and rendered as before when
//! it is not (yet) there. The queue is bounded; failures are only logged: a thumbnail is
//! a convenience, never a reason to delay or fail a store.
//!
//! The queue lives in memory; what survives a crash is the index: each series records
//! how many instances it had when its thumbnail was made (`thumbnailed_instances`).
//! On start the worker queues every series whose count has moved since
//! ([`storage::index::thumbnails_due`]), so nothing queued before a crash is lost. A
//! series whose thumbnail cannot be made (no image in it) is recorded as done too; one
//! that failed on the storage stays due for the next start.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use storage::index::StoredInstance;
use storage::Storage;
use tokio::sync::Notify;

use super::params::{Format, RenderParams};
use super::{encode, pipeline, with_blob};

/// Side of the default thumbnail box (PS3.18 leaves the size to the server).
pub const THUMBNAIL_SIDE: u32 = 128;

/// Series waiting for their thumbnail; more are dropped (and rendered on first request).
const MAX_PENDING: usize = 1000;

/// How long a series must be quiet before its thumbnail is made: its representative is
/// its middle image, which moves while instances keep arriving.
const QUIET: Duration = Duration::from_secs(2);

/// Parameters of the thumbnail made at ingest: what a request without parameters asks.
pub fn default_params() -> RenderParams {
    RenderParams {
        window: None,
        viewport: Some((THUMBNAIL_SIDE, THUMBNAIL_SIDE)),
        quality: RenderParams::DEFAULT_QUALITY,
        format: Format::Jpeg,
    }
}

/// Blob key of the stored default thumbnail of the original at `blob_key`
/// (`dicom/ab/abcd....dcm` -> `thumbnails/ab/abcd....128.jpg`): content-addressed like
/// the original, so it can never show another version of an instance.
pub fn thumbnail_key(blob_key: &str) -> String {
    let stem = blob_key
        .strip_prefix("dicom/")
        .unwrap_or(blob_key)
        .trim_end_matches(".dcm");
    format!("thumbnails/{stem}.{THUMBNAIL_SIDE}.jpg")
}

struct Queue {
    /// (study, series) -> when it may be processed.
    pending: Mutex<HashMap<(String, String), Instant>>,
    wake: Notify,
}

fn queue() -> &'static Queue {
    static QUEUE: OnceLock<Queue> = OnceLock::new();
    QUEUE.get_or_init(|| Queue {
        pending: Mutex::new(HashMap::new()),
        wake: Notify::new(),
    })
}

/// Start the worker on the current Tokio runtime, once: it first queues the series
/// left due by an earlier run. [`enqueue`] starts it too.
pub fn start(storage: &Storage) {
    static WORKER: OnceLock<()> = OnceLock::new();
    WORKER.get_or_init(|| {
        let storage = storage.clone();
        tokio::spawn(worker(storage));
    });
}

/// Queue the thumbnail of a series that just received instances. Returns at once.
pub fn enqueue(storage: &Storage, study: &str, series: &str) {
    start(storage);
    let q = queue();
    {
        let mut pending = q
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (study.to_string(), series.to_string());
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            tracing::debug!(
                study,
                series,
                "thumbnail queue full; made after the queue drains"
            );
            return;
        }
        pending.insert(key, Instant::now() + QUIET);
    }
    q.wake.notify_one();
}

/// Queue the series the index says are due (an earlier run was stopped before making
/// them, or the queue was full). True when there may be more than were queued.
async fn recover(storage: &Storage) -> bool {
    let due = match storage::index::thumbnails_due(&storage.db, MAX_PENDING as i64).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "finding the series that lack a thumbnail failed");
            return false;
        }
    };
    let more = due.len() == MAX_PENDING;
    if !due.is_empty() {
        tracing::info!(series = due.len(), "queueing thumbnails left due");
    }
    let now = Instant::now();
    let mut pending = queue()
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for d in due {
        pending.entry((d.study_uid, d.series_uid)).or_insert(now);
    }
    more
}

/// Series queued and not yet done (for tests and diagnostics).
pub fn pending() -> usize {
    queue()
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
}

async fn worker(storage: Storage) {
    let q = queue();
    let mut more = recover(&storage).await;
    loop {
        let due = {
            let mut pending = q
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let ready = pending
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(k, _)| k.clone())
                .next();
            match ready {
                Some(k) => {
                    pending.remove(&k);
                    Ok(k)
                }
                None => Err(pending.values().min().copied()),
            }
        };
        match due {
            Ok((study, series)) => {
                if let Err(e) = make_series_thumbnail(&storage, &study, &series).await {
                    tracing::warn!(study, series, error = %e, "thumbnail at ingest failed; it will be rendered on request");
                }
            }
            Err(Some(next)) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {}
                    _ = q.wake.notified() => {}
                }
            }
            Err(None) if more => {
                // Series beyond the queue's bound are still due: a pause keeps a store
                // that keeps failing from spinning.
                tokio::time::sleep(Duration::from_secs(1)).await;
                more = recover(&storage).await;
            }
            Err(None) => q.wake.notified().await,
        }
    }
}

/// Why a thumbnail could not be made at ingest.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Index or blob store.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// Rendering.
    #[error(transparent)]
    Render(#[from] pipeline::RenderError),
    /// Writing the temporary file.
    #[error("temporary file: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking pool is gone (shutting down).
    #[error("render worker unavailable")]
    Unavailable,
}

/// Render and store the default thumbnail of the series' representative image, unless
/// it is stored already, and record it in the index. A series with nothing to render
/// is recorded as done; a storage failure leaves it due.
pub async fn make_series_thumbnail(
    storage: &Storage,
    study: &str,
    series: &str,
) -> Result<(), ThumbnailError> {
    let instances = storage::index::instances(&storage.db, study, Some(series), None).await?;
    let count = instances.len() as i64;
    let made = match super::routes::representative(instances) {
        Some(inst) => make_thumbnail(storage, &inst).await,
        None => Ok(()),
    };
    if let Err(ThumbnailError::Storage(_) | ThumbnailError::Io(_)) = made {
        return made;
    }
    storage::index::thumbnail_made(&storage.db, series, count).await?;
    made
}

/// Render and store the default thumbnail of one instance, unless it is stored already.
pub async fn make_thumbnail(
    storage: &Storage,
    inst: &StoredInstance,
) -> Result<(), ThumbnailError> {
    let key = thumbnail_key(&inst.blob_key);
    if storage.blobs.exists(&key).await? {
        return Ok(());
    }
    let params = default_params();
    let jpeg = with_blob(&storage.blobs, inst, move |obj| {
        let img = pipeline::render(obj, 1, &params)?;
        encode::encode(&img, params.format, params.quality)
    })
    .await
    .map_err(|e| match e {
        super::BlobRenderError::Storage(e) => ThumbnailError::Storage(e),
        super::BlobRenderError::Render(e) => ThumbnailError::Render(e),
        super::BlobRenderError::TooLarge | super::BlobRenderError::Unavailable => {
            ThumbnailError::Unavailable
        }
    })?;
    // The blob store takes files (it moves them into place locally).
    let mut tmp = tempfile::NamedTempFile::new()?;
    tmp.write_all(&jpeg)?;
    tmp.flush()?;
    storage
        .blobs
        .put_file(&key, tmp.path(), jpeg.len() as u64)
        .await?;
    tracing::debug!(sop = %inst.sop_instance_uid, key, "thumbnail stored");
    Ok(())
}
