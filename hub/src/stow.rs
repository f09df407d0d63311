//! STOW-RS (PS3.18 10.5): store instances sent as `multipart/related; type="application/dicom"`.
//!
//! Each part is streamed to a temporary file while its SHA-256 is computed (a request is
//! never held in memory), its header is checked and parsed up to pixel data, and the
//! original goes to the blob store under a content-addressed key. All index rows of a
//! request are written in one transaction; the response lists every instance as stored
//! or failed with a reason. A part that fails never stops the others.

use std::io::Write as _;
use std::path::Path;

use access::policy::store_site;
use access::Caller;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use formats::dicom::{
    read_instance_header, DicomError, Digests, InstanceHeader, Limits, Part10Digest,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use storage::audit::{Action, EventType, Outcome};
use storage::index::{blob_key, IndexOutcome, NewInstance};
use tempfile::NamedTempFile;
use viewer_api::error::parse_uid;
use viewer_api::ApiError;

use crate::HubState;

/// Failure reasons (PS3.18 10.5.3, PS3.4 Annex B status codes).
mod reason {
    /// Processing failure: retry may succeed.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Duplicate SOP instance with different content (kept the original).
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    /// Out of resources: retry later.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Data set does not match / misses required attributes.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Cannot understand the data.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

/// Part header in which a sender names the SHA-256 of the part's data set.
pub const DATA_SET_DIGEST_HEADER: &str = "x-data-set-sha256";

/// Parts whose processing runs at once within one request (receive overlaps upload).
const PIPELINE_DEPTH: usize = 4;

/// `POST /dicomweb/studies`
pub async fn store(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<HubState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    handle(req, caller, state, None, payload).await
}

/// `POST /dicomweb/studies/{study}`: every instance must belong to that study.
pub async fn store_into_study(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<HubState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let study = parse_uid("StudyInstanceUID in path", &path)?;
    handle(req, caller, state, Some(study), payload).await
}

/// The boundary of a `multipart/related; type="application/dicom"` body.
fn boundary_of(req: &HttpRequest) -> Result<String, ApiError> {
    let unsupported = |what: String| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            what,
        )
    };
    let ct = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unsupported(
                "Content-Type is missing; expected multipart/related; type=\"application/dicom\""
                    .into(),
            )
        })?;
    let m: mime::Mime = ct
        .parse()
        .map_err(|_| unsupported(format!("Content-Type {ct:?} is not a media type")))?;
    if m.type_() != mime::MULTIPART || m.subtype().as_str() != "related" {
        return Err(unsupported(format!(
            "Content-Type {} is not supported; expected multipart/related; type=\"application/dicom\"",
            m.essence_str()
        )));
    }
    if let Some(t) = m.get_param("type") {
        if !t.as_str().eq_ignore_ascii_case("application/dicom") {
            return Err(unsupported(format!(
                "multipart/related type {:?} is not supported; only application/dicom parts are accepted",
                t.as_str()
            )));
        }
    }
    m.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_string())
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_boundary",
                "multipart Content-Type has no boundary parameter",
            )
        })
}

/// One part's fate before indexing.
enum Prepared {
    /// Uploaded (or found identical) and ready to index.
    Ready {
        instance: Box<NewInstance>,
        uploaded: bool,
        /// Made durable for the whole request at once, before indexing.
        entry: Option<storage::EntrySync>,
    },
    /// Identical instance already stored: nothing to write.
    AlreadyStored { header: Box<InstanceHeader> },
    /// Refused, with what we know of it.
    Failed(Failure),
}

struct Failure {
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
    reason: u16,
    comment: String,
    /// Refused for its size alone (a request of nothing else answers 413).
    too_large: bool,
}

impl Failure {
    fn anonymous(reason: u16, comment: String) -> Self {
        Failure {
            sop_class_uid: None,
            sop_instance_uid: None,
            reason,
            comment,
            too_large: false,
        }
    }

    fn too_large(comment: String) -> Self {
        Failure {
            too_large: true,
            ..Failure::anonymous(reason::OUT_OF_RESOURCES, comment)
        }
    }

    fn of(h: &InstanceHeader, reason: u16, comment: String) -> Self {
        Failure {
            sop_class_uid: Some(h.sop_class_uid.clone()),
            sop_instance_uid: Some(h.sop_instance_uid.clone()),
            reason,
            comment,
            too_large: false,
        }
    }
}

async fn handle(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<HubState>,
    study: Option<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The guard let only gateways and technicians through; each stores for its own site.
    let site = store_site(&caller.principal)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this account stores for no site",
            )
        })?
        .to_string();
    let boundary = boundary_of(&req)?;

    // actix's payload is not Send; multer wants Send. A small bounded channel bridges
    // them without buffering more than a few chunks.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    actix_web::rt::spawn(async move {
        let mut payload = payload;
        while let Some(chunk) = payload.next().await {
            let item = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut multipart = multer::Multipart::new(stream, boundary);

    let mut pending = futures_util::stream::FuturesOrdered::new();
    let mut prepared = Vec::new();
    let mut part_no = 0usize;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                if part_no == 0 {
                    return Err(ApiError::bad_request(
                        "malformed_multipart",
                        format!("request body is not valid multipart: {e}"),
                    ));
                }
                prepared.push(Prepared::Failed(Failure::anonymous(
                    reason::CANNOT_UNDERSTAND,
                    format!("multipart body broken after part {part_no}: {e}"),
                )));
                break;
            }
        };
        part_no += 1;
        let received = receive_part(field, part_no, &state).await;
        let state = state.clone();
        let study = study.clone();
        // Spawned, so checking and uploading this part overlaps receiving the next.
        pending.push_back(actix_web::rt::spawn(async move {
            match received {
                Ok(received) => prepare(&state, study.as_deref(), received).await,
                Err(f) => Prepared::Failed(f),
            }
        }));
        while pending.len() >= PIPELINE_DEPTH {
            if let Some(p) = pending.next().await {
                prepared.push(joined(p));
            }
        }
    }
    while let Some(p) = pending.next().await {
        prepared.push(joined(p));
    }
    if prepared.is_empty() {
        return Err(ApiError::bad_request(
            "empty_request",
            "the multipart body has no parts",
        ));
    }

    // Every new blob durable before any row names it.
    let entries: Vec<storage::EntrySync> = prepared
        .iter_mut()
        .filter_map(|p| match p {
            Prepared::Ready { entry, .. } => entry.take(),
            _ => None,
        })
        .collect();
    state
        .storage
        .blobs
        .sync_entries(entries)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "STOW-RS: blob store sync failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the blob store could not make the files durable; nothing was stored, retry later",
            )
        })?;
    let to_index: Vec<&NewInstance> = prepared
        .iter()
        .filter_map(|p| match p {
            Prepared::Ready { instance, .. } => Some(&**instance),
            _ => None,
        })
        .collect();
    let outcomes = if to_index.is_empty() {
        Vec::new()
    } else {
        let audit = caller.event(
            EventType::DICOM_INSTANCES_TRANSFERRED,
            Action::Create,
            Outcome::Success,
        );
        storage::index::index_batch(&state.storage.db, &site, &to_index, &audit)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "STOW-RS: indexing failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the index is unavailable; nothing was stored, retry later",
                )
            })?
    };

    let base = viewer_api::base_url(&req);
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    let mut outcomes = outcomes.into_iter();
    // Series that received instances: their thumbnails are made in the background.
    let mut touched_series = std::collections::BTreeSet::new();
    for p in prepared {
        match p {
            Prepared::AlreadyStored { header } => stored.push(referenced(&base, &header)),
            Prepared::Failed(f) => failed.push(f),
            Prepared::Ready {
                instance, uploaded, ..
            } => {
                let h = &instance.header;
                let failure = match outcomes.next() {
                    Some(IndexOutcome::Stored | IndexOutcome::AlreadyStored) => {
                        stored.push(referenced(&base, h));
                        touched_series.insert((
                            h.study_instance_uid.clone(),
                            h.series_instance_uid.clone(),
                        ));
                        continue;
                    }
                    Some(IndexOutcome::Conflict { stored_sha256 }) => Failure::of(
                        h,
                        reason::DUPLICATE_SOP_INSTANCE,
                        format!(
                            "SOP Instance UID {} is already stored with a different data set (sha256 {stored_sha256}); the original was kept",
                            h.sop_instance_uid
                        ),
                    ),
                    Some(IndexOutcome::WrongParent { stored_study_uid }) => Failure::of(
                        h,
                        reason::DUPLICATE_SOP_INSTANCE,
                        format!("UID already used in study {stored_study_uid}; series or instance cannot move between studies"),
                    ),
                    Some(IndexOutcome::WrongSite) => Failure::of(
                        h,
                        reason::DUPLICATE_SOP_INSTANCE,
                        format!("Study Instance UID {} is already in use by another site", h.study_instance_uid),
                    ),
                    None => Failure::of(h, reason::PROCESSING_FAILURE, "not indexed".into()),
                };
                if uploaded {
                    discard_unreferenced_blob(&state, &instance).await;
                }
                failed.push(failure);
            }
        }
    }
    // Queued only (bounded, debounced, one background worker): never delays this answer.
    for (study, series) in &touched_series {
        viewer_api::render::thumbnails::enqueue(&state.storage, study, series);
    }
    for f in &failed {
        tracing::warn!(site = %site, sop = ?f.sop_instance_uid, reason = f.reason, "STOW-RS refused: {}", f.comment);
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else if stored.is_empty() && failed.iter().all(|f| f.too_large) {
        // Nothing but instances over `max_instance_bytes` (PS3.18 10.5.3).
        StatusCode::PAYLOAD_TOO_LARGE
    } else if stored.is_empty() {
        StatusCode::CONFLICT
    } else {
        StatusCode::ACCEPTED
    };
    let mut body = serde_json::Map::new();
    if let Some(study) = &study {
        body.insert(
            "00081190".into(),
            json!({"vr": "UR", "Value": [format!("{base}/studies/{study}")]}),
        );
    }
    if !stored.is_empty() {
        body.insert("00081199".into(), json!({"vr": "SQ", "Value": stored}));
    }
    if !failed.is_empty() {
        let items: Vec<Value> = failed.iter().map(failed_item).collect();
        body.insert("00081198".into(), json!({"vr": "SQ", "Value": items}));
    }
    Ok(HttpResponse::build(status)
        .content_type("application/dicom+json")
        .json(Value::Object(body)))
}

fn joined(r: Result<Prepared, actix_web::rt::task::JoinError>) -> Prepared {
    r.unwrap_or_else(|e| {
        Prepared::Failed(Failure::anonymous(
            reason::PROCESSING_FAILURE,
            format!("part processing failed: {e}"),
        ))
    })
}

/// A part written to a temporary file.
struct Received {
    tmp: NamedTempFile,
    size: u64,
    digests: Digests,
    /// Why the part does not match the digest its sender recorded, if it does not.
    damaged: Option<String>,
}

/// Stream one part to a temporary file, hashing it; refuse parts of the wrong type or size.
async fn receive_part(
    mut field: multer::Field<'_>,
    part_no: usize,
    state: &HubState,
) -> Result<Received, Failure> {
    if let Some(ct) = field.content_type().map(|ct| ct.essence_str().to_string()) {
        if ct != "application/dicom" {
            // Drain it so the next part can be read.
            while let Ok(Some(_)) = field.chunk().await {}
            return Err(Failure::anonymous(
                reason::CANNOT_UNDERSTAND,
                format!("part {part_no} has Content-Type {ct}; only application/dicom is accepted"),
            ));
        }
    }
    let io_failure = |e: std::io::Error| {
        tracing::error!(error = %e, "STOW-RS: cannot write temporary file");
        Failure::anonymous(
            reason::OUT_OF_RESOURCES,
            format!("part {part_no}: hub cannot spool the upload: {e}"),
        )
    };
    // A sender that recorded the data set's digest when it received the instance (our
    // gateway) names it; a mismatch means the file was damaged on its disk or on the way.
    let claimed_digest = field
        .headers()
        .get(DATA_SET_DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let tmp = NamedTempFile::new_in(&state.tmp_dir).map_err(io_failure)?;
    // Written and hashed on a thread of their own, fed chunk by chunk (bounded): the
    // HTTP worker only parses the multipart body, so the next chunk (or another
    // request) is read while this one is hashed and written.
    let file = tmp.reopen().map_err(io_failure)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<bytes::Bytes>>(WRITER_QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_part(file, rx));
    let mut size = 0u64;
    let mut too_big = false;
    let mut broken = None;
    // Chunks come a few kilobytes at a time; handed over in batches (no copy) so that
    // the writer thread is woken once per batch, not once per chunk.
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                size += chunk.len() as u64;
                if size > state.max_instance_bytes {
                    too_big = true;
                    continue;
                }
                batch_bytes += chunk.len();
                batch.push(chunk);
                if batch_bytes >= WRITER_BATCH_BYTES {
                    batch_bytes = 0;
                    if tx.send(std::mem::take(&mut batch)).await.is_err() {
                        break; // the writer failed: its error is reported below
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                broken = Some(e);
                break;
            }
        }
    }
    if !batch.is_empty() {
        // An error here means the writer failed, which it reports below.
        let _ = tx.send(batch).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| io_failure(std::io::Error::other(format!("writer thread failed: {e}"))))?;
    if let Some(e) = broken {
        return Err(Failure::anonymous(
            reason::CANNOT_UNDERSTAND,
            format!("part {part_no}: body ended or broke while reading: {e}"),
        ));
    }
    if too_big {
        return Err(Failure::too_large(format!(
            "part {part_no}: {size} bytes exceeds the {} bytes accepted per instance",
            state.max_instance_bytes
        )));
    }
    let digest = written.map_err(io_failure)?;
    let digests = digest.finish();
    let damaged = claimed_digest.filter(|claimed| *claimed != digests.data_set).map(|claimed| {
        format!(
            "part {part_no}: data set SHA-256 {} differs from the sender's {DATA_SET_DIGEST_HEADER} {claimed}: \
             the file was damaged before or while it was sent",
            digests.data_set
        )
    });
    Ok(Received {
        tmp,
        size,
        digests,
        damaged,
    })
}

/// Batches of a part queued for its writer thread: with [`WRITER_BATCH_BYTES`], bounds
/// the memory of a part in flight to about 1 MiB.
const WRITER_QUEUE: usize = 4;
/// Bytes of body chunks handed to the writer thread at once.
const WRITER_BATCH_BYTES: usize = 256 * 1024;

/// The writer thread of one part: every chunk written and hashed as it comes; then the
/// kernel is asked to start writing the file out.
fn write_part(
    mut file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<Vec<bytes::Bytes>>,
) -> std::io::Result<Part10Digest> {
    let mut digest = Part10Digest::new();
    while let Some(batch) = rx.blocking_recv() {
        for chunk in batch {
            digest.update(&chunk);
            file.write_all(&chunk)?;
        }
    }
    file.flush()?;
    start_writeback(&file);
    Ok(digest)
}

/// Ask the kernel to start writing the file to disk now, without waiting: by the time
/// the blob store fsyncs it (after the header is parsed), most of the data is already
/// written, so the fsync on the acknowledgement path is short. Purely a hint.
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; SYNC_FILE_RANGE_WRITE only initiates writeback.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Parse, check and upload one received part.
async fn prepare(state: &HubState, study: Option<&str>, received: Received) -> Prepared {
    let Received {
        tmp,
        size,
        digests,
        damaged,
    } = received;
    let header = {
        let Ok(_slot) = state.parse_slots.acquire().await else {
            return Prepared::Failed(Failure::anonymous(
                reason::PROCESSING_FAILURE,
                "hub is shutting down".into(),
            ));
        };
        let path = tmp.path().to_path_buf();
        match tokio::task::spawn_blocking(move || parse_header(&path, size)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                let code = match e {
                    DicomError::MissingAttribute(_) | DicomError::InvalidUid { .. } => {
                        reason::DATA_SET_MISMATCH
                    }
                    DicomError::Io(_) => reason::OUT_OF_RESOURCES,
                    _ => reason::CANNOT_UNDERSTAND,
                };
                return Prepared::Failed(Failure::anonymous(code, e.to_string()));
            }
            Err(e) => {
                return Prepared::Failed(Failure::anonymous(
                    reason::PROCESSING_FAILURE,
                    format!("parser failed: {e}"),
                ))
            }
        }
    };
    if let Some(why) = damaged {
        return Prepared::Failed(Failure::of(&header, reason::CANNOT_UNDERSTAND, why));
    }
    if let Some(study) = study {
        if header.study_instance_uid != study {
            let comment = format!(
                "instance belongs to study {}, not to {study} named in the request URL",
                header.study_instance_uid
            );
            return Prepared::Failed(Failure::of(&header, reason::DATA_SET_MISMATCH, comment));
        }
    }
    match storage::index::find_instance(&state.storage.db, &header.sop_instance_uid).await {
        Ok(Some(existing)) if existing.data_set_sha256 == digests.data_set => {
            return Prepared::AlreadyStored {
                header: Box::new(header),
            };
        }
        Ok(Some(existing)) => {
            let comment = format!(
                "SOP Instance UID {} is already stored with a different data set (sha256 {}); the original was kept",
                header.sop_instance_uid, existing.data_set_sha256
            );
            return Prepared::Failed(Failure::of(
                &header,
                reason::DUPLICATE_SOP_INSTANCE,
                comment,
            ));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "STOW-RS: index lookup failed");
            return Prepared::Failed(Failure::of(
                &header,
                reason::OUT_OF_RESOURCES,
                "index unavailable, retry later".into(),
            ));
        }
    }
    let key = blob_key(&digests.file);
    let entry = match state
        .storage
        .blobs
        .put_file_deferred(&key, tmp.path(), size)
        .await
    {
        Ok(entry) => entry,
        Err(e) => {
            tracing::error!(error = %e, key = %key, "STOW-RS: blob store write failed");
            return Prepared::Failed(Failure::of(
                &header,
                reason::OUT_OF_RESOURCES,
                "blob store unavailable, retry later".into(),
            ));
        }
    };
    drop(tmp);
    Prepared::Ready {
        instance: Box::new(NewInstance {
            header,
            size_bytes: size,
            data_set_sha256: digests.data_set,
            blob_key: key,
        }),
        uploaded: true,
        entry: Some(entry),
    }
}

fn parse_header(path: &Path, size: u64) -> Result<InstanceHeader, DicomError> {
    let file = std::fs::File::open(path)?;
    read_instance_header(file, size, Limits::default())
}

/// After a refused index write, remove our upload unless the stored instance uses the
/// very same key (an identical file: the key is content-addressed).
async fn discard_unreferenced_blob(state: &HubState, instance: &NewInstance) {
    match storage::index::find_instance(&state.storage.db, &instance.header.sop_instance_uid).await
    {
        Ok(Some(stored)) if stored.blob_key == instance.blob_key => {}
        Ok(_) => {
            if let Err(e) = state.storage.blobs.delete(&instance.blob_key).await {
                tracing::warn!(error = %e, key = %instance.blob_key, "could not remove refused upload");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not check refused upload; blob left in place"),
    }
}

fn referenced(base: &str, h: &InstanceHeader) -> Value {
    json!({
        "00081150": {"vr": "UI", "Value": [h.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [h.sop_instance_uid]},
        "00081190": {"vr": "UR", "Value": [format!(
            "{base}/studies/{}/series/{}/instances/{}",
            h.study_instance_uid, h.series_instance_uid, h.sop_instance_uid
        )]},
    })
}

fn failed_item(f: &Failure) -> Value {
    let mut item = serde_json::Map::new();
    if let Some(c) = &f.sop_class_uid {
        item.insert("00081150".into(), json!({"vr": "UI", "Value": [c]}));
    }
    if let Some(i) = &f.sop_instance_uid {
        item.insert("00081155".into(), json!({"vr": "UI", "Value": [i]}));
    }
    item.insert("00081197".into(), json!({"vr": "US", "Value": [f.reason]}));
    // ErrorComment (0000,0902) carries the reason in words, as in a DIMSE response.
    let comment: String = f.comment.chars().take(1024).collect();
    item.insert("00000902".into(), json!({"vr": "LO", "Value": [comment]}));
    Value::Object(item)
}
