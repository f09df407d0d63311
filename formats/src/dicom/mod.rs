//! DICOM Part 10 files: identifiers, bounded header scanning and header extraction.

mod digest;
mod header;
mod scan;
mod uid;

pub use digest::{Digests, Part10Digest};
pub use header::{read_instance_header, InstanceHeader, Limits};
pub use scan::{scan_part10, ScanSummary};
pub use uid::{Uid, UidError};

/// Why a DICOM file was refused. Every variant names the problem in words an operator
/// can act on; none of them is produced after allocating what the file merely declares.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    /// The bytes do not start like a DICOM Part 10 file.
    #[error("not a DICOM Part 10 file: {0}")]
    NotPart10(String),
    /// The file ends before an element it declares.
    #[error("truncated DICOM file: {0}")]
    Truncated(String),
    /// A declared length or structure is impossible for the bytes that are there.
    #[error("malformed DICOM file: {0}")]
    Malformed(String),
    /// The header (everything before pixel data) is larger than we accept.
    #[error("DICOM header too large: {0}")]
    TooLarge(String),
    /// A required attribute is missing or empty.
    #[error("missing required attribute {0}")]
    MissingAttribute(&'static str),
    /// A UID attribute is not a valid UID.
    #[error("invalid {attribute}: {source}")]
    InvalidUid {
        /// Keyword of the attribute that carried the UID.
        attribute: &'static str,
        /// What is wrong with it.
        source: UidError,
    },
    /// The DICOM parser refused the file after the bounds checks passed.
    #[error("unreadable DICOM data set: {0}")]
    Parse(String),
    /// Reading the underlying file failed.
    #[error("I/O error reading DICOM file: {0}")]
    Io(#[from] std::io::Error),
}
