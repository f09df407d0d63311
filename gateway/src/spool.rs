//! The spool: received instances as Part 10 files on local disk, written while the
//! P-DATA arrives (an instance is never held in memory), plus the quarantine directory.
//!
//! Layout under the data directory:
//! - `spool/<uuid>.dcm`: files waiting to be forwarded (and the pool: empty pre-created
//!   files and delivered ones kept for reuse);
//! - `quarantine/<uuid>.dcm`: files refused on receipt or rejected by the hub.
//!
//! Durability: a new file's directory entry must reach the disk too, which costs a
//! directory fsync. We keep a small pool of empty files whose entries are already
//! durable (created and dir-fsynced in batches, off the C-STORE path), so receiving an
//! instance costs one file fsync, overlapped with the outbox commit (the outbox's WAL
//! is synced after it: see `outbox`).
//!
//! That fsync is cheapest when the file's blocks already exist: then it writes data and
//! no allocation. So a delivered instance's file is not deleted but recycled into the
//! pool (up to [`RECYCLE_MAX_FILES`] files of at most [`RECYCLE_MAX_BYTES`]), where the
//! next instance overwrites it and cuts it to its own length; a CT or MR series reuses
//! its predecessors' files almost exactly (a third off the fsync here). Fresh pool files
//! have [`PREALLOCATE`] bytes reserved past their end, which saves part of it too. A
//! recycled file's directory entry is as durable as it was for its first instance, and
//! a crash leaves only unreferenced files, which the start-up sweep removes.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Our Implementation Class UID (a UUID-derived UID, PS3.5 B.2) in every file meta group.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.99787604172942061334634528454731773716";
/// Our Implementation Version Name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "TOWNSHIP_GW_0_1";

const SPOOL_DIR: &str = "spool";
const QUARANTINE_DIR: &str = "quarantine";
/// Pre-created files kept ready; refilled in the background below the low-water mark.
const POOL_TARGET: usize = 64;
const POOL_LOW_WATER: usize = 16;

/// Where spool and quarantine files live.
#[derive(Debug)]
pub struct Spool {
    data_dir: PathBuf,
    pool: Mutex<Vec<String>>,
    refilling: AtomicBool,
}

/// What goes into the file meta group of a received instance.
#[derive(Debug, Clone)]
pub struct FileMeta<'a> {
    /// Affected SOP Class UID of the C-STORE.
    pub sop_class_uid: &'a str,
    /// Affected SOP Instance UID of the C-STORE.
    pub sop_instance_uid: &'a str,
    /// The transfer syntax negotiated for the presentation context (the data set's).
    pub transfer_syntax_uid: &'a str,
    /// Calling AE title of the association.
    pub source_ae_title: &'a str,
}

impl Spool {
    /// Open (and create) the spool and quarantine directories under `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<Arc<Spool>> {
        fs::create_dir_all(data_dir.join(SPOOL_DIR))?;
        fs::create_dir_all(data_dir.join(QUARANTINE_DIR))?;
        Ok(Arc::new(Spool {
            data_dir: data_dir.to_path_buf(),
            pool: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
        }))
    }

    /// The data directory everything is relative to.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Absolute path of a path stored relative to the data directory.
    pub fn absolute(&self, relative: &str) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// Relative paths (`spool/<name>`) of every file currently in the spool directory.
    pub fn list_spool_files(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.data_dir.join(SPOOL_DIR))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                out.push(format!(
                    "{SPOOL_DIR}/{}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        Ok(out)
    }

    /// Create `n` empty files with [`PREALLOCATE`] bytes reserved and make them and
    /// their directory entries durable. Blocking; returns their relative paths.
    fn precreate(&self, n: usize) -> io::Result<Vec<String>> {
        let mut created = Vec::with_capacity(n);
        for _ in 0..n {
            let rel = format!("{SPOOL_DIR}/{}.dcm", uuid::Uuid::new_v4());
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(self.absolute(&rel))?;
            preallocate(&file);
            file.sync_all()?;
            created.push(rel);
        }
        sync_dir(&self.data_dir.join(SPOOL_DIR))?;
        Ok(created)
    }

    /// Fill the pool of pre-created files (blocking). Called at start-up.
    pub fn prefill(&self) -> io::Result<()> {
        let files = self.precreate(POOL_TARGET)?;
        self.lock_pool().extend(files);
        Ok(())
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A poisoned pool only means a refill panicked mid-way; the Vec is still valid.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give the file of a delivered instance back to the pool (or delete it when the
    /// pool is full or the file large). Never for a file with another name (quarantine
    /// links share its bytes).
    pub async fn recycle(self: &Arc<Self>, relative: &str) {
        let len = match tokio::fs::metadata(self.absolute(relative)).await {
            Ok(m) => m.len(),
            Err(_) => return self.remove(relative).await,
        };
        {
            let mut pool = self.lock_pool();
            if len <= RECYCLE_MAX_BYTES && pool.len() < RECYCLE_MAX_FILES {
                pool.push(relative.to_string());
                return;
            }
        }
        self.remove(relative).await;
    }

    /// Take a file whose directory entry is durable (empty, or recycled) for a new
    /// instance.
    async fn allocate(self: &Arc<Self>) -> io::Result<String> {
        let (taken, remaining) = {
            let mut pool = self.lock_pool();
            let taken = pool.pop();
            (taken, pool.len())
        };
        if remaining < POOL_LOW_WATER && !self.refilling.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                match me.precreate(POOL_TARGET - remaining) {
                    Ok(files) => me.lock_pool().extend(files),
                    Err(e) => tracing::warn!(error = %e, "could not pre-create spool files"),
                }
                me.refilling.store(false, Ordering::Release);
            });
        }
        match taken {
            Some(rel) => Ok(rel),
            // Pool drained by a burst: pay the directory fsync on this instance.
            None => {
                let me = Arc::clone(self);
                let mut files = tokio::task::spawn_blocking(move || me.precreate(1))
                    .await
                    .map_err(io::Error::other)??;
                files
                    .pop()
                    .ok_or_else(|| io::Error::other("no spool file created"))
            }
        }
    }

    /// Start a spool file for one instance: preamble, "DICM" and file meta group are
    /// written first; the data set follows through [`SpoolWriter::write`].
    ///
    /// Writing and hashing run on a blocking thread of their own (one per instance), fed
    /// the received fragments by move: the association task only reads PDUs, so the next
    /// PDU arrives while the previous one is hashed and written, and no fragment is
    /// copied on the way (the former `tokio::fs` writer copied each one into its own
    /// buffer and paid a thread hop per fragment).
    pub async fn create(self: &Arc<Self>, meta: &FileMeta<'_>) -> io::Result<SpoolWriter> {
        let rel = self.allocate().await?;
        let path = self.absolute(&rel);
        // Opening a pool file does no I/O worth a thread hop. Not truncated: its blocks
        // are overwritten, and what is left past the new end is cut by the writer.
        let file = File::options().write(true).open(&path)?;
        let old_len = file.metadata()?.len();
        let prefix = part10_prefix(meta);
        let dataset_offset = prefix.len() as u64;
        let (tx, rx) = tokio::sync::mpsc::channel(WRITER_QUEUE);
        let task = tokio::task::spawn_blocking(move || write_loop(file, old_len, prefix, rx));
        Ok(SpoolWriter {
            tx: Some(tx),
            task,
            rel_path: rel,
            abs_path: path,
            dataset_offset,
        })
    }

    /// Delete a spool file (best effort: a leftover is removed by the start-up sweep).
    pub async fn remove(&self, relative: &str) {
        if let Err(e) = tokio::fs::remove_file(self.absolute(relative)).await {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = relative, error = %e, "could not delete spool file");
            }
        }
    }

    /// Put a spool file into the quarantine directory, durably, and return its new
    /// relative path. The spool file is hard-linked first and unlinked only by the
    /// caller after the database says so ([`Spool::remove`]): a crash in between leaves
    /// two names for the file, never none.
    pub async fn link_into_quarantine(&self, relative: &str) -> io::Result<String> {
        let name = Path::new(relative)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| io::Error::other(format!("bad spool path {relative}")))?;
        let target_rel = format!("{QUARANTINE_DIR}/{name}");
        let from = self.absolute(relative);
        let to = self.absolute(&target_rel);
        let dir = self.data_dir.join(QUARANTINE_DIR);
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            match fs::hard_link(&from, &to) {
                Ok(()) => {}
                // Linked by an earlier attempt that crashed before committing.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            sync_dir(&dir)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(target_rel)
    }

    /// Keep `bytes` (a refused message that never had a spool file) as a new file
    /// `quarantine/<uuid>.<extension>`, durably (file and directory fsynced), and return
    /// its relative path. The quarantine row is written after this, so a crash in
    /// between leaves at most an unlisted file, never a row without its file.
    pub async fn write_quarantine_file(
        &self,
        extension: &str,
        bytes: Vec<u8>,
    ) -> io::Result<String> {
        let rel = format!("{QUARANTINE_DIR}/{}.{extension}", uuid::Uuid::new_v4());
        let path = self.absolute(&rel);
        let dir = self.data_dir.join(QUARANTINE_DIR);
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            use std::io::Write;
            let mut file = File::options().write(true).create_new(true).open(&path)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            sync_dir(&dir)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(rel)
    }

    /// Move a file from outside the data directory (an ECG file too large to read into
    /// memory) to a new `quarantine/<uuid>.<extension>`, durably, and return its relative
    /// path. Renamed when on the same file system, else copied, fsynced and then
    /// removed: the original exists under one name or the other at every moment.
    pub async fn move_into_quarantine(&self, from: &Path, extension: &str) -> io::Result<String> {
        let rel = format!("{QUARANTINE_DIR}/{}.{extension}", uuid::Uuid::new_v4());
        let to = self.absolute(&rel);
        let dir = self.data_dir.join(QUARANTINE_DIR);
        let from = from.to_path_buf();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            if fs::rename(&from, &to).is_err() {
                // Another file system (the import folder may be a mounted share).
                fs::copy(&from, &to)?;
                File::open(&to)?.sync_all()?;
                sync_dir(&dir)?;
                fs::remove_file(&from)?;
            }
            sync_dir(&dir)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(rel)
    }
}

/// Streams one instance's data set into its spool file, hashing as it goes (on a
/// blocking thread, see [`Spool::create`]).
///
/// A write error does not stop the association: the writer remembers it, swallows the
/// rest of the data set and [`SpoolWriter::finish`] reports it, so the C-STORE is
/// answered with "out of resources" and the next one can proceed.
#[derive(Debug)]
pub struct SpoolWriter {
    /// Fragments for the writer thread; dropped to tell it the data set is complete.
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    task: tokio::task::JoinHandle<Written>,
    rel_path: String,
    abs_path: PathBuf,
    dataset_offset: u64,
}

/// A completely written (but not yet fsynced) spool file.
#[derive(Debug)]
pub struct WrittenFile {
    /// Path relative to the data directory.
    pub rel_path: String,
    /// Absolute path.
    pub abs_path: PathBuf,
    /// Total file size in bytes.
    pub size: u64,
    /// Where the data set starts (after preamble and meta group).
    pub dataset_offset: u64,
    /// Hex SHA-256 of the data set bytes.
    pub sha256: String,
    /// The open file, for the fsync.
    pub file: File,
}

/// Fragments queued for a writer thread. Bounds the memory of one instance in flight
/// to this many PDUs (1 MiB with the default 256 KiB maximum PDU).
const WRITER_QUEUE: usize = 4;

/// What the writer thread hands back.
#[derive(Debug)]
struct Written {
    file: File,
    size: u64,
    sha256: String,
    error: Option<io::Error>,
}

/// The writer thread: prefix, then every fragment as it comes, hashed; ends when the
/// sending side is dropped. A recycled file (`old_len` bytes) is cut to the new length.
fn write_loop(
    mut file: File,
    old_len: u64,
    prefix: Vec<u8>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Written {
    use std::io::Write;
    let mut hasher = Sha256::new();
    let mut size = prefix.len() as u64;
    let mut error = file.write_all(&prefix).err();
    let mut unflushed = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        size += chunk.len() as u64;
        if error.is_some() {
            continue;
        }
        if let Err(e) = file.write_all(&chunk) {
            error = Some(e);
            continue;
        }
        hasher.update(&chunk);
        // Let the disk start on what has arrived while the rest is still coming: the
        // fsync before the C-STORE response then has little left to write.
        unflushed += chunk.len() as u64;
        if unflushed >= WRITEBACK_EVERY {
            unflushed = 0;
            start_writeback(&file);
        }
    }
    if error.is_none() && old_len > size {
        error = file.set_len(size).err();
    }
    Written {
        file,
        size,
        sha256: hex::encode(hasher.finalize()),
        error,
    }
}

impl SpoolWriter {
    /// Relative path of the file being written.
    pub fn rel_path(&self) -> &str {
        &self.rel_path
    }

    /// Append data set bytes exactly as received (waits only when the writer thread is
    /// [`WRITER_QUEUE`] fragments behind).
    pub async fn write(&mut self, chunk: impl Into<Vec<u8>>) {
        if let Some(tx) = &self.tx {
            if tx.send(chunk.into()).await.is_err() {
                // The thread is gone (it panicked): `finish` reports it.
                self.tx = None;
            }
        }
    }

    /// Wait for every byte to reach the OS and hand back the file for fsync.
    pub async fn finish(mut self) -> Result<WrittenFile, (String, io::Error)> {
        drop(self.tx.take());
        let written = match (&mut self.task).await {
            Ok(w) => w,
            Err(e) => return Err((self.rel_path, io::Error::other(e))),
        };
        if let Some(e) = written.error {
            return Err((self.rel_path, e));
        }
        Ok(WrittenFile {
            rel_path: self.rel_path,
            abs_path: self.abs_path,
            size: written.size,
            dataset_offset: self.dataset_offset,
            sha256: written.sha256,
            file: written.file,
        })
    }
}

/// Files kept in the pool for reuse at most (each at most [`RECYCLE_MAX_BYTES`]: at most
/// 1 GiB of disk held).
const RECYCLE_MAX_FILES: usize = 512;
/// Largest delivered file kept for reuse: a CT or MR slice is far smaller; reusing a
/// much bigger file for a small instance would cost more (freeing blocks) than it saves.
const RECYCLE_MAX_BYTES: u64 = 2 << 20;

/// Disk reserved for each pre-created spool file: a CT or MR slice fits (bigger
/// instances allocate the rest as they are written, as without it).
const PREALLOCATE: i64 = 1 << 20;

/// Reserve [`PREALLOCATE`] bytes of disk for `file` without changing its size (a hint:
/// file systems without `fallocate` simply allocate on write).
fn preallocate(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; KEEP_SIZE only reserves blocks past the end.
    unsafe {
        libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, PREALLOCATE);
    }
}

/// Bytes of a spool file after which the kernel is asked to start writing it out.
const WRITEBACK_EVERY: u64 = 128 * 1024;

/// Ask the kernel to start writing a file's dirty pages now, without waiting (a hint;
/// durability still comes from the fsync before the response).
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; SYNC_FILE_RANGE_WRITE only initiates writeback.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// fsync a directory so that entries created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The 128-byte preamble, "DICM" and the file meta group (explicit VR little endian).
pub fn part10_prefix(meta: &FileMeta<'_>) -> Vec<u8> {
    let mut group = Vec::with_capacity(256);
    // (0002,0001) File Meta Information Version: OB 00\01
    group.extend_from_slice(&[0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 1]);
    meta_text(&mut group, 0x0002, *b"UI", meta.sop_class_uid, 0);
    meta_text(&mut group, 0x0003, *b"UI", meta.sop_instance_uid, 0);
    meta_text(&mut group, 0x0010, *b"UI", meta.transfer_syntax_uid, 0);
    meta_text(&mut group, 0x0012, *b"UI", IMPLEMENTATION_CLASS_UID, 0);
    meta_text(
        &mut group,
        0x0013,
        *b"SH",
        IMPLEMENTATION_VERSION_NAME,
        b' ',
    );
    let ae = meta.source_ae_title.trim();
    if !ae.is_empty() {
        meta_text(&mut group, 0x0016, *b"AE", ae, b' ');
    }
    let mut out = Vec::with_capacity(132 + 12 + group.len());
    out.resize(128, 0);
    out.extend_from_slice(b"DICM");
    // (0002,0000) File Meta Information Group Length: UL
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out
}

fn meta_text(out: &mut Vec<u8>, element: u16, vr: [u8; 2], value: &str, pad: u8) {
    let v = value.trim_end_matches(['\0', ' ']).as_bytes();
    let padded = v.len() + v.len() % 2;
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&vr);
    out.extend_from_slice(&(padded as u16).to_le_bytes());
    out.extend_from_slice(v);
    if padded > v.len() {
        out.push(pad);
    }
}

/// The state of a spool file compared with what was recorded on receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// Size and data set hash match.
    Intact,
    /// The file does not exist.
    Missing,
    /// It exists but differs; says how.
    Damaged(String),
}

/// Cheap check before each send: the spool file exists with its recorded size (blocking).
///
/// The full SHA-256 comparison ([`verify_dataset`]) runs at start-up for rows a crash may
/// have left unsynced; re-hashing every file before every attempt cost a quarter of the
/// gateway's CPU, taken from receiving.
pub fn check_size(path: &Path, size: u64) -> io::Result<Integrity> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == size => Ok(Integrity::Intact),
        Ok(m) => Ok(Integrity::Damaged(format!(
            "{} bytes, {size} recorded",
            m.len()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Integrity::Missing),
        Err(e) => Err(e),
    }
}

/// Compare a spool file with its recorded size and data set SHA-256 (blocking).
pub fn verify_dataset(
    path: &Path,
    size: u64,
    dataset_offset: u64,
    sha256: &str,
) -> io::Result<Integrity> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Integrity::Missing),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len != size {
        return Ok(Integrity::Damaged(format!("{len} bytes, {size} recorded")));
    }
    file.seek(SeekFrom::Start(dataset_offset))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != sha256 {
        return Ok(Integrity::Damaged(format!(
            "data set SHA-256 {actual} differs from {sha256} recorded on receipt"
        )));
    }
    Ok(Integrity::Intact)
}

/// Check that a spool file still holds exactly the data set we hashed on receipt and
/// make it durable. Used at start-up for rows whose fsync may not have completed
/// before a crash.
pub fn verify_file(path: &Path, size: u64, dataset_offset: u64, sha256: &str) -> io::Result<bool> {
    if verify_dataset(path, size, dataset_offset, sha256)? != Integrity::Intact {
        return Ok(false);
    }
    // The bytes may be only in the page cache (the process died, not the machine):
    // make them durable before the row is trusted.
    File::open(path)?.sync_all()?;
    Ok(true)
}

/// Copy of a Part 10 file's data set part, for tests comparing what was received.
pub fn read_dataset(path: &Path, dataset_offset: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(dataset_offset))?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_a_valid_part10_meta_group() {
        let meta = FileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid: "1.2.3.4",
            transfer_syntax_uid: "1.2.840.10008.1.2.1",
            source_ae_title: "CT01",
        };
        let bytes = part10_prefix(&meta);
        assert!(bytes[..128].iter().all(|b| *b == 0));
        assert_eq!(&bytes[128..132], b"DICM");
        let group_len = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]);
        assert_eq!(group_len as usize, bytes.len() - 144);
        assert_eq!(bytes.len() % 2, 0);
        // every element value is even-length
        let mut pos = 144;
        while pos < bytes.len() {
            let vr = &bytes[pos + 4..pos + 6];
            let (len, header) = if vr == b"OB" {
                (
                    u32::from_le_bytes([
                        bytes[pos + 8],
                        bytes[pos + 9],
                        bytes[pos + 10],
                        bytes[pos + 11],
                    ]) as usize,
                    12,
                )
            } else {
                (
                    u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize,
                    8,
                )
            };
            assert_eq!(len % 2, 0);
            pos += header + len;
        }
        assert_eq!(pos, bytes.len());
    }

    /// A spool with a full pool (no refill runs in the background to change its order).
    fn prefilled_spool() -> (tempfile::TempDir, Arc<Spool>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        spool.prefill().expect("prefill");
        (dir, spool)
    }

    fn test_meta() -> FileMeta<'static> {
        FileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.7",
            sop_instance_uid: "1.2.3.4.5",
            transfer_syntax_uid: "1.2.840.10008.1.2",
            source_ae_title: "",
        }
    }

    #[tokio::test]
    async fn delivered_files_are_reused_and_cut_to_length() {
        let (_dir, spool) = prefilled_spool();
        let meta = test_meta();
        let mut w = spool.create(&meta).await.expect("create");
        w.write(vec![7u8; 5000]).await;
        let first = w.finish().await.expect("finish");
        spool.recycle(&first.rel_path).await;
        // The next instance gets the delivered file, overwritten and cut to its length.
        let mut w = spool.create(&meta).await.expect("create");
        assert_eq!(w.rel_path(), first.rel_path);
        w.write(b"short".to_vec()).await;
        let second = w.finish().await.expect("finish");
        assert_eq!(second.size, first.dataset_offset + 5);
        assert_eq!(
            std::fs::metadata(&second.abs_path).expect("stat").len(),
            second.size
        );
        let data = read_dataset(&second.abs_path, second.dataset_offset).expect("read");
        assert_eq!(data, b"short");
        // A file too large to be worth reusing is deleted instead.
        let mut w = spool.create(&meta).await.expect("create");
        w.write(vec![1u8; RECYCLE_MAX_BYTES as usize + 1]).await;
        let big = w.finish().await.expect("finish");
        spool.recycle(&big.rel_path).await;
        assert!(!big.abs_path.exists());
    }

    #[tokio::test]
    async fn writer_streams_hashes_and_verifies() {
        let (_dir, spool) = prefilled_spool();
        let meta = test_meta();
        let mut w = spool.create(&meta).await.expect("create");
        w.write(b"\x08\x00\x16\x00").await;
        w.write(b"rest of data set").await;
        let written = w.finish().await.expect("finish");
        written.file.sync_all().expect("fsync");
        let data = read_dataset(&written.abs_path, written.dataset_offset).expect("read");
        assert_eq!(data, b"\x08\x00\x16\x00rest of data set");
        assert_eq!(
            written.sha256,
            hex::encode(Sha256::digest(b"\x08\x00\x16\x00rest of data set"))
        );
        assert!(verify_file(
            &written.abs_path,
            written.size,
            written.dataset_offset,
            &written.sha256
        )
        .expect("verify"));
        assert!(!verify_file(
            &written.abs_path,
            written.size,
            written.dataset_offset,
            &"0".repeat(64)
        )
        .expect("verify"));
        let q = spool
            .link_into_quarantine(&written.rel_path)
            .await
            .expect("quarantine");
        assert!(q.starts_with("quarantine/"));
        spool.remove(&written.rel_path).await;
        assert!(spool.absolute(&q).exists());
        assert!(!written.abs_path.exists());
    }
}
