//! ECG files from carts that only export files: a watched import folder
//! (`ecg_import_dir`) and the `gateway import` command that hands files to it.
//!
//! For each file, in this order: it is read (at most `ecg_max_file_bytes`) and parsed
//! with `formats::ecg::read_any` (DICOM waveform, HL7 aECG XML, SCP-ECG); a file that
//! cannot be parsed is moved to the quarantine with the parse error as the reason; a
//! parsed one is committed to the outbox (the original bytes in the `ecg_files` row,
//! `synchronous=FULL`) and only then removed from the folder. The forwarder sends it on
//! to the hub (`POST /ingest/ecg`, see [`forward`]), STAT first, on a lane of its own
//! ahead of routine DICOM.
//!
//! The bytes are never changed: what reaches the hub is the file as the cart wrote it.
//!
//! - [`watch`]: the folder poller; [`db`]: the table's own writes; [`forward`]: the hub
//!   request's path and query (the request, its verdicts and the queue are
//!   [`crate::filelane`]'s).

pub mod db;
pub mod forward;
pub mod watch;

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use formats::ecg::{Ecg, EcgError};

pub use watch::{EcgCtx, EcgService};

/// The subfolder of the import folder whose files are STAT.
pub const STAT_SUBDIR: &str = "stat";
/// Prefix of the temporary files `gateway import` writes before renaming them in (the
/// watcher never reads names starting with `.`).
pub const TEMP_PREFIX: &str = ".gwimport-";
/// Suffix of the marker `gateway import` leaves beside a file it renamed in: the file is
/// complete, so the watcher takes it at first sight.
pub const MARKER_SUFFIX: &str = ".gwready";

/// Why a file was not imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(#[source] io::Error),
    /// The file is larger than `ecg_max_file_bytes`.
    #[error("file of {size} bytes is larger than ecg_max_file_bytes ({limit} bytes)")]
    TooLarge {
        /// Its size (or at least this many bytes).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not an ECG we can read; the message says what is wrong.
    #[error(transparent)]
    Parse(#[from] EcgError),
    /// The file could not be put into the import folder.
    #[error("cannot hand it to the gateway: {dir}: {source}")]
    HandOver {
        /// The import folder (or its `stat/` subfolder).
        dir: String,
        /// The cause.
        source: io::Error,
    },
}

/// What an operator is told about a parsed recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `SCP-ECG`, `aECG` or `DICOM ECG`.
    pub format: String,
    /// Leads, derived limb leads included.
    pub leads: usize,
    /// Length of the longest lead in seconds.
    pub duration_s: f64,
    /// Patient ID as the file gives it.
    pub patient_id: Option<String>,
    /// Patient name as the file gives it.
    pub patient_name: Option<String>,
    /// The file itself asks for STAT (requested priority STAT or HIGH).
    pub stat_in_file: bool,
}

impl Summary {
    /// Summarise a parsed recording.
    pub fn of(ecg: &Ecg) -> Summary {
        let samples = ecg
            .leads
            .iter()
            .map(|l| l.samples_uv.len())
            .max()
            .unwrap_or(0);
        let duration_s = if ecg.sample_rate_hz > 0.0 {
            samples as f64 / ecg.sample_rate_hz
        } else {
            0.0
        };
        let non_empty = |s: &Option<String>| {
            s.as_ref()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Summary {
            format: ecg.source_format.to_string(),
            leads: ecg.leads.len(),
            duration_s,
            patient_id: non_empty(&ecg.patient.id),
            patient_name: non_empty(&ecg.patient.name),
            stat_in_file: ecg
                .order
                .requested_priority
                .as_deref()
                .is_some_and(|p| matches!(p.trim(), "STAT" | "HIGH")),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {} leads, {:.1} s, patient {}",
            self.format,
            self.leads,
            self.duration_s,
            self.patient_id.as_deref().unwrap_or("(no id)")
        )
    }
}

/// Whether a file name marks a STAT recording: `.stat` just before the extension
/// (`xyz.stat.scp`), or as the extension itself (`xyz.stat`); any case.
pub fn is_stat_name(name: &str) -> bool {
    let parts: Vec<String> = name.split('.').map(str::to_ascii_lowercase).collect();
    let n = parts.len();
    (n >= 2 && parts[n - 1] == "stat") || (n >= 3 && parts[n - 2] == "stat")
}

/// Read a file of at most `limit` bytes.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, ImportError> {
    let file = File::open(path).map_err(ImportError::Read)?;
    let size = file.metadata().map_err(ImportError::Read)?.len();
    if size > limit {
        return Err(ImportError::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // Bounded again while reading: the file may grow after the size was taken.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ImportError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(ImportError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// The marker name for a file renamed in by `gateway import`.
pub fn marker_name(file_name: &str) -> String {
    format!(".{file_name}{MARKER_SUFFIX}")
}

/// A file name the watcher will take: no leading dot (those are temporary files), no
/// path separator, not empty.
fn folder_name(original: &str) -> String {
    let name = original.trim_start_matches('.').replace(['/', '\\'], "_");
    if name.trim().is_empty() {
        "ecg".to_string()
    } else {
        name
    }
}

/// The `n`-th alternative for a name already waiting in the folder: `-n` inserted
/// before the first dot, so `xyz.stat.scp` stays STAT and keeps its extension.
fn alternative_name(name: &str, n: u32) -> String {
    match name.find('.') {
        Some(dot) => format!("{}-{n}{}", &name[..dot], &name[dot..]),
        None => format!("{name}-{n}"),
    }
}

/// Put `bytes` into the import folder `dir` so that the watcher sees the complete file
/// at once: written to a temporary `.gwimport-…` file, fsynced, marked ready, renamed to
/// `name` (or `name-2…` when that name is already waiting), and the directory fsynced.
/// Returns the path it now has. Blocking.
pub fn hand_over(bytes: &[u8], name: &str, dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| -> io::Result<()> {
        let mut file = File::options().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let base = folder_name(name);
    let mut result = Err(io::Error::other("no free file name in the import folder"));
    for n in 1..=1000u32 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            alternative_name(&base, n)
        };
        // The marker is created exclusively first: it reserves the name against another
        // `gateway import` running at the same moment.
        let marker = dir.join(marker_name(&candidate));
        match File::options().write(true).create_new(true).open(&marker) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        let target = dir.join(&candidate);
        if target.exists() {
            let _ = std::fs::remove_file(&marker);
            continue;
        }
        result = std::fs::rename(&temp, &target).map(|()| target);
        if result.is_err() {
            let _ = std::fs::remove_file(&marker);
        }
        break;
    }
    match result {
        Ok(target) => {
            crate::spool::sync_dir(dir)?;
            Ok(target)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// What `gateway import` did with one file.
#[derive(Debug)]
pub struct Imported {
    /// What the recording is.
    pub summary: Summary,
    /// Where it now waits for the gateway.
    pub path: PathBuf,
}

/// `gateway import` for one file: read and parse it like the watcher does, and when it
/// is an ECG we can read, hand it to the import folder (`stat/` when `stat`). A file
/// that cannot be parsed is not copied. Blocking.
pub fn import_file(
    file: &Path,
    import_dir: &Path,
    stat: bool,
    max_bytes: u64,
) -> Result<Imported, ImportError> {
    let bytes = read_capped(file, max_bytes)?;
    let ecg = formats::ecg::read_any(&bytes)?;
    let summary = Summary::of(&ecg);
    drop(ecg);
    let dir = if stat {
        import_dir.join(STAT_SUBDIR)
    } else {
        import_dir.to_path_buf()
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = hand_over(&bytes, &name, &dir).map_err(|source| ImportError::HandOver {
        dir: dir.display().to_string(),
        source,
    })?;
    Ok(Imported { summary, path })
}

/// Extension of the quarantine file for a recording of `format` (or, for a file that
/// could not be parsed, from its own name when that is a plain short extension).
pub fn quarantine_extension(format: Option<&str>, file_name: &str) -> String {
    match format {
        Some("SCP-ECG") => return "scp".into(),
        Some("aECG") => return "xml".into(),
        Some("DICOM ECG") => return "dcm".into(),
        _ => {}
    }
    match file_name.rsplit_once('.') {
        Some((_, ext))
            if !ext.is_empty()
                && ext.len() <= 8
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            ext.to_ascii_lowercase()
        }
        _ => "ecg".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_read_from_the_name() {
        for (name, stat) in [
            ("xyz.stat.scp", true),
            ("XYZ.STAT.SCP", true),
            ("chest-pain.stat", true),
            ("xyz.scp", false),
            ("stat.scp", false),
            ("statistics.xml", false),
            ("a.stat.b.scp", false),
            ("stat", false),
        ] {
            assert_eq!(is_stat_name(name), stat, "{name}");
        }
    }

    #[test]
    fn alternative_names_keep_the_stat_marker_and_the_extension() {
        assert_eq!(alternative_name("xyz.stat.scp", 2), "xyz-2.stat.scp");
        assert_eq!(alternative_name("ECG", 3), "ECG-3");
        assert!(is_stat_name(&alternative_name("xyz.stat.scp", 2)));
        assert_eq!(folder_name(".hidden.scp"), "hidden.scp");
        assert_eq!(folder_name("..."), "ecg");
    }

    #[test]
    fn quarantine_files_get_a_sensible_extension() {
        assert_eq!(quarantine_extension(Some("SCP-ECG"), "x.bin"), "scp");
        assert_eq!(quarantine_extension(None, "garbage.BIN"), "bin");
        assert_eq!(quarantine_extension(None, "noext"), "ecg");
        assert_eq!(quarantine_extension(None, "x.not valid"), "ecg");
    }

    #[test]
    fn hand_over_renames_in_complete_files_under_free_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = hand_over(b"one", "a.stat.scp", dir.path()).expect("first");
        let second = hand_over(b"two", "a.stat.scp", dir.path()).expect("second");
        assert_eq!(first, dir.path().join("a.stat.scp"));
        assert_eq!(second, dir.path().join("a-2.stat.scp"));
        assert_eq!(std::fs::read(&first).expect("read"), b"one");
        assert_eq!(std::fs::read(&second).expect("read"), b"two");
        assert!(dir.path().join(marker_name("a.stat.scp")).exists());
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(
            names.iter().all(|n| !n.starts_with(TEMP_PREFIX)),
            "no temporary file left: {names:?}"
        );
    }

    #[test]
    fn reading_is_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        std::fs::write(&path, vec![0u8; 2000]).expect("write");
        assert!(matches!(
            read_capped(&path, 1000),
            Err(ImportError::TooLarge {
                size: 2000,
                limit: 1000
            })
        ));
        assert_eq!(read_capped(&path, 2000).expect("read").len(), 2000);
    }
}
