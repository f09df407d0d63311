//! Resting ECGs: one waveform model and readers for DICOM waveform objects, HL7 aECG
//! XML and SCP-ECG (EN 1064).
//!
//! Readers take the whole file as a byte slice (a 10 s, 12-lead ECG is well under a
//! megabyte) and do no I/O. Every length a file declares is checked against the bytes
//! that are really there before anything is allocated for it, and hostile input gives an
//! [`EcgError`] naming the problem, never a panic.
//!
//! Every reader calls [`Ecg::derive_limb_leads`], so a cart that stored only I and II
//! (SCP-ECG carts usually do) still yields the six limb leads; leads computed that way
//! have [`Lead::derived`] set.

mod aecg;
mod dicom;
mod leads;
pub mod measure;
mod scp;
pub mod shown;
mod time;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use aecg::{read_aecg, MAX_AECG_BYTES};
pub use dicom::read_dicom;
pub use leads::normalize_label;
pub use scp::read_scp;
pub use shown::{Origin, Quantity, Reading};

/// One ECG recording, whatever format it came in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ecg {
    /// Leads in the order the file stores them, derived limb leads inserted after the
    /// stored limb leads. Labels are normalised (`I`, `II`, `III`, `aVR`, `aVL`, `aVF`,
    /// `V1`..`V6`, ...); labels we do not know are kept as the file gives them.
    pub leads: Vec<Lead>,
    /// Samples per second of every lead.
    pub sample_rate_hz: f64,
    /// Acquisition date and time as the file gives it, in DICOM DT / HL7 TS form
    /// (`YYYYMMDDHHMMSS[.F][+ZZZZ]`); SCP-ECG binary dates are rendered in that form.
    pub acquired_at: Option<String>,
    /// Acquisition time in milliseconds since the Unix epoch, when the date is known.
    /// A time without a zone is taken as UTC+8 (China Standard Time).
    pub acquired_at_ms: Option<i64>,
    /// Filter settings of the acquiring device.
    pub filters: Filters,
    /// Global measurements made by the acquiring device.
    pub device_measurements: Measurements,
    /// The device's interpretation statements, in file order.
    pub statements: Vec<String>,
    /// Patient identification and demographics.
    pub patient: PatientInfo,
    /// Order identifiers.
    pub order: OrderInfo,
    /// Manufacturer and model of the acquiring device.
    pub device: Option<String>,
    /// Which format the recording was read from.
    pub source_format: SourceFormat,
}

/// One lead's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// Normalised lead label (see [`normalize_label`]).
    pub label: String,
    /// Samples in microvolts, after sensitivity, correction factor and baseline (or
    /// scale and origin, or amplitude multiplier) are applied.
    pub samples_uv: Vec<f32>,
    /// True when computed here from other leads rather than stored in the file.
    pub derived: bool,
}

/// Filter settings; `None` when the file does not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// High-pass (baseline) cut-off frequency.
    pub highpass_hz: Option<f64>,
    /// Low-pass cut-off frequency.
    pub lowpass_hz: Option<f64>,
    /// Mains notch filter frequency.
    pub notch_hz: Option<f64>,
}

/// Global measurements; `None` when the file does not carry the value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// Ventricular rate. When a file gives only the RR interval, 60000 / RR.
    pub heart_rate_bpm: Option<f64>,
    /// Average RR interval in ms.
    pub rr_ms: Option<f64>,
    /// PR interval in ms.
    pub pr_ms: Option<f64>,
    /// QRS duration in ms.
    pub qrs_ms: Option<f64>,
    /// QT interval in ms.
    pub qt_ms: Option<f64>,
    /// Corrected QT in ms (the device's formula).
    pub qtc_ms: Option<f64>,
    /// Frontal P axis in degrees.
    pub p_axis: Option<f64>,
    /// Frontal QRS axis in degrees.
    pub qrs_axis: Option<f64>,
    /// Frontal T axis in degrees.
    pub t_axis: Option<f64>,
}

/// Patient identification as the file gives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatientInfo {
    /// Patient ID at the acquiring site.
    pub id: Option<String>,
    /// Name, `Family^Given` when the parts are known.
    pub name: Option<String>,
    /// Birth date as `YYYYMMDD`.
    pub birth_date: Option<String>,
    /// `M`, `F` or `O` (or `U` when the file says unknown).
    pub sex: Option<String>,
}

/// Order identifiers that link the recording to a worklist entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderInfo {
    /// Accession number.
    pub accession_number: Option<String>,
    /// Study Instance UID.
    pub study_uid: Option<String>,
    /// Priority requested at acquisition, upper-case (`STAT`, `ROUTINE`, ...).
    pub requested_priority: Option<String>,
}

/// The format a recording was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceFormat {
    /// DICOM 12-lead or general ECG waveform object.
    Dicom,
    /// HL7 v3 annotated ECG (aECG) XML.
    HL7aECG,
    /// SCP-ECG (EN 1064 / ISO 11073-91064).
    ScpEcg,
}

impl std::fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceFormat::Dicom => "DICOM ECG",
            SourceFormat::HL7aECG => "aECG",
            SourceFormat::ScpEcg => "SCP-ECG",
        })
    }
}

/// Why an ECG file was refused. The message names the format, the place (section,
/// lead, element) and the problem, so that a quarantined file can be explained.
#[derive(Debug, thiserror::Error)]
pub enum EcgError {
    /// None of the readers recognises the bytes.
    #[error("not an ECG file we can read: {0}")]
    Unrecognized(String),
    /// The input is larger than the reader accepts.
    #[error("{format}: file of {size} bytes is larger than the {limit} bytes accepted")]
    TooLarge {
        /// Format of the reader that refused it.
        format: SourceFormat,
        /// Size of the input.
        size: usize,
        /// Largest accepted size.
        limit: usize,
    },
    /// The DICOM structure check refused the file before parsing.
    #[error("DICOM ECG: {0}")]
    DicomStructure(#[from] crate::dicom::DicomError),
    /// The DICOM waveform content is unusable.
    #[error("DICOM ECG: {0}")]
    Dicom(String),
    /// The aECG XML is unusable.
    #[error("aECG: {0}")]
    Aecg(String),
    /// The SCP-ECG record is unusable; `section` is the section where it was found.
    #[error("SCP{}: {problem}", section.map(|s| format!(" section {s}")).unwrap_or_else(|| "-ECG".into()))]
    Scp {
        /// Section number, or `None` for the record as a whole.
        section: Option<u16>,
        /// What is wrong.
        problem: String,
    },
    /// A CRC-CCITT check of an SCP-ECG record or section failed.
    #[error("SCP{}: CRC mismatch (stored {stored:#06x}, computed {computed:#06x})", section.map(|s| format!(" section {s}")).unwrap_or_else(|| "-ECG record".into()))]
    ScpCrc {
        /// Section number, or `None` for the whole-record CRC.
        section: Option<u16>,
        /// CRC stored in the file.
        stored: u16,
        /// CRC computed over the bytes.
        computed: u16,
    },
    /// The file is valid but uses a feature this reader does not implement.
    #[error("{format}: {feature} is not supported")]
    Unsupported {
        /// Format of the file.
        format: SourceFormat,
        /// The feature, in words.
        feature: String,
    },
}

impl Ecg {
    /// Compute the limb leads a device did not store: with I and II present, add any
    /// missing III = II − I, aVR = −(I + II)/2, aVL = I − II/2 and aVF = II − I/2, marked
    /// `derived`. Leads already present are left alone, so calling this twice is a no-op.
    pub fn derive_limb_leads(&mut self) {
        leads::derive_limb_leads(&mut self.leads);
    }

    /// The lead with this (normalised) label.
    pub fn lead(&self, label: &str) -> Option<&Lead> {
        self.leads.iter().find(|l| l.label == label)
    }

    /// Empty model for a reader to fill in.
    fn empty(source_format: SourceFormat) -> Ecg {
        Ecg {
            leads: Vec::new(),
            sample_rate_hz: 0.0,
            acquired_at: None,
            acquired_at_ms: None,
            filters: Filters::default(),
            device_measurements: Measurements::default(),
            statements: Vec::new(),
            patient: PatientInfo::default(),
            order: OrderInfo::default(),
            device: None,
            source_format,
        }
    }

    /// Steps common to every reader once the file has been read.
    fn finish(mut self) -> Ecg {
        let m = &mut self.device_measurements;
        if m.heart_rate_bpm.is_none() {
            // Carts that give only the average RR still told us the rate.
            m.heart_rate_bpm = m.rr_ms.filter(|rr| *rr > 0.0).map(|rr| 60_000.0 / rr);
        }
        self.derive_limb_leads();
        self
    }
}

/// Read an ECG in any supported format, recognised from its first bytes: a DICOM
/// Part 10 preamble, an SCP-ECG record header (section 0 at byte 6), or XML (aECG).
pub fn read_any(bytes: &[u8]) -> Result<Ecg, EcgError> {
    if bytes.get(128..132) == Some(b"DICM".as_slice()) {
        return read_dicom(bytes);
    }
    // SCP before XML: a record's CRC can start with '<', while XML text never has
    // the zero section number SCP needs at byte 8.
    if scp::looks_like_scp(bytes) {
        return read_scp(bytes);
    }
    if aecg::looks_like_xml(bytes) {
        return read_aecg(bytes);
    }
    let head: String = bytes
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(EcgError::Unrecognized(format!(
        "{} bytes, neither a DICOM preamble, XML nor an SCP-ECG record (first bytes: {head})",
        bytes.len()
    )))
}
