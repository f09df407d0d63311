//! The watched import folder: polled every second (no inotify: it misses files on
//! network shares and in folders created after the watch started, and a poll a second
//! costs nothing at this rate of files).
//!
//! A file is taken when its size and modification time have not changed for one poll (a
//! cart may still be writing it), or at first sight when `gateway import` renamed it in
//! and left its marker beside it. Names starting with `.` (temporary files of `gateway
//! import`, rsync, editors) and names ending in `.tmp`, `.part`, `.partial` or `~` are
//! left alone. Files in the `stat/` subfolder are STAT, like names with `.stat` before
//! the extension.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::db::{EcgOutcome, EcgWrite, NewEcgFile};
use super::{
    is_stat_name, quarantine_extension, read_capped, ImportError, Summary, MARKER_SUFFIX,
    STAT_SUBDIR, TEMP_PREFIX,
};
use crate::config::Config;
use crate::filelane::FileLane;
use crate::outbox::{Outbox, QuarantineEntry, QuarantineKind, QuarantineSource};
use crate::spool::Spool;

/// How often the folder is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A file that cannot be parsed is quarantined only once it has not been modified for
/// this long (unless `gateway import` handed it over complete): a cart that pauses
/// while writing must not lose its file to the quarantine half-written.
const PARSE_GRACE: Duration = Duration::from_secs(5);
/// The same for an empty file: a cart may create its file well before writing it.
const EMPTY_GRACE: Duration = Duration::from_secs(60);
/// Leftovers of a `gateway import` that died half-way (a temporary file, a marker whose
/// file never arrived) are removed after this long.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// What the watcher shares with the rest of the gateway.
#[derive(Debug)]
pub struct EcgCtx {
    /// The outbox (writes through its committer).
    pub outbox: Outbox,
    /// For quarantine files.
    pub spool: Arc<Spool>,
    /// The configuration.
    pub config: Arc<Config>,
}

/// The running folder watcher.
#[derive(Debug)]
pub struct EcgService {
    dir: Option<PathBuf>,
    task: Option<JoinHandle<()>>,
}

impl EcgService {
    /// Create the import folder (and its `stat/` subfolder) and watch it until
    /// `shutdown`. Never fails: a folder that cannot be created is logged and shown by
    /// `gateway status` while everything else goes on.
    pub async fn start(ctx: Arc<EcgCtx>, shutdown: CancellationToken) -> EcgService {
        let Some(dir) = ctx.config.ecg_import_path() else {
            record_folder(
                &ctx.outbox,
                None,
                Some("disabled (ecg_import_dir is empty)"),
            )
            .await;
            return EcgService {
                dir: None,
                task: None,
            };
        };
        let prepared = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || -> io::Result<PathBuf> {
                std::fs::create_dir_all(dir.join(STAT_SUBDIR))?;
                // Absolute, so that `gateway status` run from anywhere finds it.
                std::fs::canonicalize(&dir)
            })
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
        };
        match prepared {
            Ok(dir) => {
                let shown = dir.display().to_string();
                record_folder(&ctx.outbox, Some(&shown), None).await;
                tracing::info!(dir = %shown, "watching the ECG import folder");
                EcgService {
                    dir: Some(dir.clone()),
                    task: Some(tokio::spawn(watch(dir, ctx, shutdown))),
                }
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "the ECG import folder cannot be used; ECG files are not imported");
                let note = format!("not watched: cannot create {}: {e}", dir.display());
                record_folder(&ctx.outbox, None, Some(&note)).await;
                EcgService {
                    dir: None,
                    task: None,
                }
            }
        }
    }

    /// The folder being watched, if any.
    pub fn import_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Wait for the watcher to finish the file in hand (after the shutdown token was
    /// cancelled).
    pub async fn stop(self) {
        if let Some(task) = self.task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "ECG import folder watcher ended abnormally");
            }
        }
    }
}

async fn record_folder(outbox: &Outbox, import_dir: Option<&str>, note: Option<&str>) {
    let write = EcgWrite::Folder {
        import_dir: import_dir.map(str::to_string),
        note: note.map(str::to_string),
    };
    if let Err(e) = outbox.write_ecg(write).await {
        tracing::warn!(error = %e, "could not record the ECG import folder");
    }
}

/// A regular file found in the folder.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    /// Its name (what the hub is told).
    name: String,
    /// In the `stat/` subfolder.
    in_stat_dir: bool,
    size: u64,
    modified: Option<SystemTime>,
    /// `gateway import` renamed it in complete.
    marker: Option<PathBuf>,
}

impl Entry {
    /// Time since the last modification (zero when unknown or in the future).
    fn quiet_for(&self) -> Duration {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::MAX)
    }
}

/// What was seen of a file at the previous poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    modified: Option<SystemTime>,
}

/// What became of a file this poll.
enum Taken {
    /// Stored or quarantined, and gone from the folder (or gone by itself).
    Done,
    /// Left for a later poll.
    Later,
    /// It changed while being read: watch it again from scratch.
    Changed,
}

async fn watch(dir: PathBuf, ctx: Arc<EcgCtx>, shutdown: CancellationToken) {
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    // A problem per file is logged once, not every second.
    let mut reported: HashMap<PathBuf, String> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let listing = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || list(&dir)).await
        };
        let entries = match listing {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                let text = e.to_string();
                if reported.get(&dir) != Some(&text) {
                    tracing::warn!(dir = %dir.display(), error = %text, "cannot list the ECG import folder");
                    reported.insert(dir.clone(), text);
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "listing the ECG import folder did not complete");
                continue;
            }
        };
        reported.remove(&dir);
        let present: HashSet<&PathBuf> = entries.iter().map(|e| &e.path).collect();
        seen.retain(|path, _| present.contains(path));
        reported.retain(|path, _| present.contains(path));
        for entry in &entries {
            if shutdown.is_cancelled() {
                break;
            }
            let now = Seen {
                size: entry.size,
                modified: entry.modified,
            };
            let stable = seen.get(&entry.path) == Some(&now);
            if !(stable || entry.marker.is_some()) {
                seen.insert(entry.path.clone(), now);
                continue;
            }
            if entry.size == 0 && entry.marker.is_none() && entry.quiet_for() < EMPTY_GRACE {
                seen.insert(entry.path.clone(), now);
                continue;
            }
            match take(&ctx, entry, &mut reported).await {
                Taken::Done => {
                    seen.remove(&entry.path);
                    reported.remove(&entry.path);
                }
                Taken::Later => {
                    seen.insert(entry.path.clone(), now);
                }
                Taken::Changed => {
                    seen.remove(&entry.path);
                }
            }
        }
    }
}

/// The files waiting in the folder and its `stat/` subfolder, and the cleaning of stale
/// leftovers of `gateway import`. Blocking.
fn list(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    list_one(dir, false, &mut out)?;
    let stat_dir = dir.join(STAT_SUBDIR);
    match list_one(&stat_dir, true, &mut out) {
        Ok(()) => {}
        // Removed by someone: files there are simply not found until it is back.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = std::fs::create_dir_all(&stat_dir);
        }
        Err(e) => return Err(e),
    }
    Ok(out)
}

fn list_one(dir: &Path, in_stat_dir: bool, out: &mut Vec<Entry>) -> io::Result<()> {
    let mut files = Vec::new();
    let mut markers = HashMap::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if let Some(rest) = name.strip_prefix('.') {
            if let Some(file) = rest.strip_suffix(MARKER_SUFFIX) {
                markers.insert(file.to_string(), (item.path(), meta.modified().ok()));
            } else if name.starts_with(TEMP_PREFIX) && is_stale(meta.modified().ok()) {
                tracing::info!(file = %item.path().display(), "removing a temporary file left by an interrupted gateway import");
                let _ = std::fs::remove_file(item.path());
            }
            continue;
        }
        files.push((name, item.path(), meta));
    }
    for (name, path, meta) in files {
        let marker = markers.remove(&name).map(|(p, _)| p);
        let lower = name.to_ascii_lowercase();
        let temporary = [".tmp", ".part", ".partial", "~"]
            .iter()
            .any(|s| lower.ends_with(s));
        if temporary && marker.is_none() {
            continue;
        }
        out.push(Entry {
            path,
            name,
            in_stat_dir,
            size: meta.len(),
            modified: meta.modified().ok(),
            marker,
        });
    }
    // Markers left without their file: the import died between marker and rename.
    for (_, (path, modified)) in markers {
        if is_stale(modified) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

fn is_stale(modified: Option<SystemTime>) -> bool {
    modified
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > STALE_AFTER)
}

/// Read, parse and store (or quarantine) one file, then remove it from the folder.
async fn take(ctx: &EcgCtx, entry: &Entry, reported: &mut HashMap<PathBuf, String>) -> Taken {
    let limit = ctx.config.ecg_max_file_bytes;
    let read = {
        let path = entry.path.clone();
        tokio::task::spawn_blocking(move || read_capped(&path, limit)).await
    };
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(ImportError::TooLarge { size, limit })) => {
            let reason = ImportError::TooLarge { size, limit }.to_string();
            return quarantine_unread(ctx, entry, &reason).await;
        }
        Ok(Err(ImportError::Read(e))) if e.kind() == io::ErrorKind::NotFound => {
            return Taken::Done;
        }
        Ok(Err(e)) => {
            let text = e.to_string();
            if reported.get(&entry.path) != Some(&text) {
                tracing::warn!(file = %entry.path.display(), error = %text, "cannot read an ECG file in the import folder; will try again");
                reported.insert(entry.path.clone(), text);
            }
            return Taken::Later;
        }
        Err(e) => {
            tracing::error!(error = %e, "reading an ECG file did not complete");
            return Taken::Later;
        }
    };
    if bytes.len() as u64 != entry.size {
        // Still being written after all: the size must hold still for a poll first.
        return Taken::Changed;
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let parsed = tokio::task::spawn_blocking(move || {
        let summary = formats::ecg::read_any(&bytes).map(|ecg| Summary::of(&ecg));
        (bytes, summary)
    })
    .await;
    let (bytes, summary) = match parsed {
        Ok(done) => done,
        Err(e) => {
            // A reader panic is a bug, and the file stays where it is for the operator.
            let text = format!("the ECG reader failed: {e}");
            if reported.get(&entry.path) != Some(&text) {
                tracing::error!(file = %entry.path.display(), error = %text, "could not parse an ECG file");
                reported.insert(entry.path.clone(), text);
            }
            return Taken::Later;
        }
    };
    match summary {
        Err(error) => {
            if entry.marker.is_none() && entry.quiet_for() < PARSE_GRACE {
                tracing::debug!(file = %entry.path.display(), %error, "ECG file not readable yet; waiting in case it is still being written");
                return Taken::Later;
            }
            quarantine_refused(ctx, entry, bytes, &sha256, &error.to_string()).await
        }
        Ok(summary) => store(ctx, entry, bytes, sha256, summary).await,
    }
}

async fn store(
    ctx: &EcgCtx,
    entry: &Entry,
    bytes: Vec<u8>,
    sha256: String,
    summary: Summary,
) -> Taken {
    let stat = entry.in_stat_dir || is_stat_name(&entry.name) || summary.stat_in_file;
    let file = NewEcgFile {
        sha256,
        body: bytes,
        file_name: entry.name.clone(),
        format: summary.format.clone(),
        leads: summary.leads as i64,
        duration_ms: (summary.duration_s * 1000.0).round() as i64,
        patient_id: summary.patient_id.clone(),
        patient_name: summary.patient_name.clone(),
        stat,
    };
    let name = &entry.name;
    match ctx
        .outbox
        .write_ecg(EcgWrite::Receive(Box::new(file)))
        .await
    {
        Ok(EcgOutcome::Stored(id)) => {
            tracing::info!(id, file = %name, stat, summary = %summary, "ECG file imported");
        }
        Ok(EcgOutcome::Duplicate {
            id,
            state,
            made_stat,
        }) => {
            tracing::info!(id, file = %name, %state, made_stat, "identical ECG file imported again; already held, stored once");
        }
        Ok(EcgOutcome::Requeued(id)) => {
            tracing::info!(id, file = %name, "ECG file the hub had refused imported again; sending it again");
        }
        Ok(EcgOutcome::Done) => {}
        Err(e) => {
            // Nothing stored: the file stays in the folder and is taken again.
            tracing::error!(file = %name, error = %e, "could not store an ECG file; it stays in the import folder");
            return Taken::Later;
        }
    }
    remove_from_folder(entry).await;
    Taken::Done
}

/// A file that is not an ECG we can read: kept in the quarantine (file and row with
/// the parse error), once per distinct content, then removed from the folder.
async fn quarantine_refused(
    ctx: &EcgCtx,
    entry: &Entry,
    bytes: Vec<u8>,
    sha256: &str,
    reason: &str,
) -> Taken {
    match crate::filelane::db::already_quarantined(ctx.outbox.pool(), FileLane::Ecg, sha256).await {
        Ok(true) => {
            tracing::info!(file = %entry.name, "the same unreadable ECG file again; already in quarantine");
            remove_from_folder(entry).await;
            return Taken::Done;
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not look up the quarantine"),
    }
    tracing::warn!(file = %entry.name, %reason, "ECG file cannot be read; quarantined");
    let ext = quarantine_extension(None, &entry.name);
    let path = match ctx.spool.write_quarantine_file(&ext, bytes).await {
        Ok(path) => path,
        Err(e) => {
            // The original must be kept: it stays in the folder until the disk takes it.
            tracing::error!(file = %entry.name, error = %e, "could not keep an unreadable ECG file in quarantine; it stays in the import folder");
            return Taken::Later;
        }
    };
    let row = QuarantineEntry {
        path: Some(path),
        source: QuarantineSource::Receive,
        reason: reason.to_string(),
        kind: QuarantineKind::Ecg,
        sha256: Some(sha256.to_string()),
        file_name: Some(entry.name.clone()),
        ..QuarantineEntry::default()
    };
    if let Err(e) = ctx.outbox.quarantine(row).await {
        tracing::error!(error = %e, "could not record a quarantine entry; the file stays in the import folder");
        return Taken::Later;
    }
    remove_from_folder(entry).await;
    Taken::Done
}

/// A file too large to read: moved (not copied through memory) into the quarantine.
async fn quarantine_unread(ctx: &EcgCtx, entry: &Entry, reason: &str) -> Taken {
    tracing::warn!(file = %entry.name, %reason, "ECG file refused; quarantined");
    let ext = quarantine_extension(None, &entry.name);
    let path = match ctx.spool.move_into_quarantine(&entry.path, &ext).await {
        Ok(path) => path,
        Err(e) => {
            tracing::error!(file = %entry.name, error = %e, "could not move an ECG file to quarantine; it stays in the import folder");
            return Taken::Later;
        }
    };
    let row = QuarantineEntry {
        path: Some(path),
        source: QuarantineSource::Receive,
        reason: reason.to_string(),
        kind: QuarantineKind::Ecg,
        file_name: Some(entry.name.clone()),
        ..QuarantineEntry::default()
    };
    if let Err(e) = ctx.outbox.quarantine(row).await {
        tracing::error!(error = %e, "could not record a quarantine entry");
    }
    if let Some(marker) = &entry.marker {
        let _ = tokio::fs::remove_file(marker).await;
    }
    Taken::Done
}

/// Remove a file (and its marker) once the database holds what became of it. A removal
/// lost in a crash only means the file is seen again and recognised by its SHA-256.
async fn remove_from_folder(entry: &Entry) {
    if let Err(e) = tokio::fs::remove_file(&entry.path).await {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(file = %entry.path.display(), error = %e, "could not remove an imported ECG file from the import folder");
        }
    }
    if let Some(marker) = &entry.marker {
        let _ = tokio::fs::remove_file(marker).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::marker_name;
    use super::*;

    #[test]
    fn markers_are_recognised_by_the_listing() {
        assert_eq!(marker_name("a.stat.scp"), ".a.stat.scp.gwready");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.scp"), b"x").expect("write");
        std::fs::write(dir.path().join(marker_name("a.scp")), b"").expect("write");
        std::fs::write(dir.path().join("b.part"), b"x").expect("write");
        std::fs::write(dir.path().join(".hidden"), b"x").expect("write");
        std::fs::create_dir_all(dir.path().join(STAT_SUBDIR)).expect("mkdir");
        std::fs::write(dir.path().join(STAT_SUBDIR).join("c.xml"), b"x").expect("write");
        let mut entries = list(dir.path()).expect("list");
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<(&str, bool, bool)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.in_stat_dir, e.marker.is_some()))
            .collect();
        assert_eq!(names, vec![("a.scp", false, true), ("c.xml", true, false)]);
    }
}
