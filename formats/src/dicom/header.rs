//! What the hub and the gateway need to know about an instance, read from its header
//! only (never its pixel data), after the structural bounds check.

use std::io::{BufReader, Read, Seek, SeekFrom};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use serde_json::Value;

use super::{scan_part10, DicomError, Uid};

/// Bounds applied to untrusted files.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of data set accepted before pixel data (encapsulated documents and
    /// waveforms live there, so this is larger than any image header).
    pub max_header_bytes: u64,
    /// Binary values longer than this are left out of the stored metadata: they are
    /// bulk data (waveform samples, overlays, embedded documents), served from the
    /// original file, not repeated in every metadata response.
    pub max_inline_binary: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024 * 1024,
            max_inline_binary: 1024,
        }
    }
}

/// The indexed attributes of one instance plus its header as DICOM JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceHeader {
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: String,
    /// Transfer syntax UID of the file meta group.
    pub transfer_syntax_uid: String,
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Patient ID (0010,0020).
    pub patient_id: Option<String>,
    /// Issuer of Patient ID (0010,0021).
    pub issuer_of_patient_id: Option<String>,
    /// Patient's Name (0010,0010), all component groups as written (`alphabetic=ideographic`).
    pub patient_name: Option<String>,
    /// Patient's Birth Date (0010,0030).
    pub patient_birth_date: Option<String>,
    /// Patient's Sex (0010,0040).
    pub patient_sex: Option<String>,
    /// Study Date (0008,0020).
    pub study_date: Option<String>,
    /// Study Time (0008,0030).
    pub study_time: Option<String>,
    /// Accession Number (0008,0050).
    pub accession_number: Option<String>,
    /// Study ID (0020,0010).
    pub study_id: Option<String>,
    /// Study Description (0008,1030).
    pub study_description: Option<String>,
    /// Referring Physician's Name (0008,0090).
    pub referring_physician_name: Option<String>,
    /// Series Number (0020,0011).
    pub series_number: Option<i32>,
    /// Series Description (0008,103E).
    pub series_description: Option<String>,
    /// Body Part Examined (0018,0015).
    pub body_part_examined: Option<String>,
    /// Instance Number (0020,0013).
    pub instance_number: Option<i32>,
    /// Number of Frames (0028,0008).
    pub number_of_frames: Option<i32>,
    /// Rows (0028,0010).
    pub rows: Option<i32>,
    /// Columns (0028,0011).
    pub columns: Option<i32>,
    /// Specific Character Set (0008,0005) as written.
    pub specific_character_set: Option<String>,
    /// Requested Procedure Priority (0040,1003) or Scheduled Procedure Step Priority
    /// (0074,1200), upper-cased, when the modality sent one.
    pub requested_priority: Option<String>,
    /// The data set before pixel data as a DICOM JSON object (PS3.18 F), without the
    /// file meta group and without bulk binary values.
    pub metadata: Value,
}

/// Read and index the header of a Part 10 file of `total_len` bytes.
///
/// The structure is checked against hostile lengths first; then dicom-object parses
/// up to (excluding) pixel data. Text is decoded with the file's Specific Character Set
/// (GB18030 and ISO_IR 192 included).
pub fn read_instance_header<R: Read + Seek>(
    mut reader: R,
    total_len: u64,
    limits: Limits,
) -> Result<InstanceHeader, DicomError> {
    let scan = scan_part10(
        BufReader::new(&mut reader),
        total_len,
        limits.max_header_bytes,
    )?;
    reader.seek(SeekFrom::Start(0))?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .from_reader(BufReader::new(reader))
        .map_err(|e| DicomError::Parse(error_chain(&e)))?;
    let ds: &InMemDicomObject = &obj;

    let mut metadata =
        dicom_json::to_value(ds).map_err(|e| DicomError::Parse(format!("to DICOM JSON: {e}")))?;
    strip_bulk_binary(&mut metadata, limits.max_inline_binary);

    let uid = |tag: Tag, name: &'static str| -> Result<String, DicomError> {
        let raw = text(ds, tag).ok_or(DicomError::MissingAttribute(name))?;
        Uid::parse(&raw)
            .map(Uid::into_string)
            .map_err(|source| DicomError::InvalidUid {
                attribute: name,
                source,
            })
    };
    let header = InstanceHeader {
        sop_class_uid: uid(tags::SOP_CLASS_UID, "SOPClassUID")?,
        sop_instance_uid: uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
        study_instance_uid: uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
        series_instance_uid: uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
        transfer_syntax_uid: Uid::parse(&scan.transfer_syntax_uid)
            .map(Uid::into_string)
            .map_err(|source| DicomError::InvalidUid {
                attribute: "TransferSyntaxUID",
                source,
            })?,
        modality: text(ds, tags::MODALITY),
        patient_id: text(ds, tags::PATIENT_ID),
        issuer_of_patient_id: text(ds, tags::ISSUER_OF_PATIENT_ID),
        patient_name: text(ds, tags::PATIENT_NAME),
        patient_birth_date: text(ds, tags::PATIENT_BIRTH_DATE),
        patient_sex: text(ds, tags::PATIENT_SEX),
        study_date: text(ds, tags::STUDY_DATE),
        study_time: text(ds, tags::STUDY_TIME),
        accession_number: text(ds, tags::ACCESSION_NUMBER),
        study_id: text(ds, tags::STUDY_ID),
        study_description: text(ds, tags::STUDY_DESCRIPTION),
        referring_physician_name: text(ds, tags::REFERRING_PHYSICIAN_NAME),
        series_number: int(ds, tags::SERIES_NUMBER),
        series_description: text(ds, tags::SERIES_DESCRIPTION),
        body_part_examined: text(ds, tags::BODY_PART_EXAMINED),
        instance_number: int(ds, tags::INSTANCE_NUMBER),
        number_of_frames: int(ds, tags::NUMBER_OF_FRAMES),
        rows: int(ds, tags::ROWS),
        columns: int(ds, tags::COLUMNS),
        specific_character_set: text(ds, tags::SPECIFIC_CHARACTER_SET),
        requested_priority: text(ds, tags::REQUESTED_PROCEDURE_PRIORITY)
            .or_else(|| text(ds, tags::SCHEDULED_PROCEDURE_STEP_PRIORITY))
            .map(|p| p.to_ascii_uppercase()),
        metadata,
    };
    Ok(header)
}

/// An error and its causes, "outer: inner: innermost": dicom-rs puts the useful part
/// (which element, which value) in the causes.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The whole value of a text attribute (all values joined by `\`), trimmed; None when absent
/// or empty.
fn text(ds: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = ds.element_opt(tag).ok()??;
    let s = e.to_str().ok()?;
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn int(ds: &InMemDicomObject, tag: Tag) -> Option<i32> {
    ds.element_opt(tag).ok()??.to_int::<i32>().ok()
}

/// Replace large `InlineBinary` values by nothing but their VR, recursively, so stored
/// metadata stays small. PS3.18 F.2.7 lets a server omit bulk data it does not inline.
fn strip_bulk_binary(value: &mut Value, max_inline_binary: usize) {
    match value {
        Value::Object(map) => {
            let too_big = map
                .get("InlineBinary")
                .and_then(Value::as_str)
                .is_some_and(|b64| b64.len() / 4 * 3 > max_inline_binary);
            if too_big {
                map.remove("InlineBinary");
            }
            for v in map.values_mut() {
                strip_bulk_binary(v, max_inline_binary);
            }
        }
        Value::Array(items) => {
            for v in items {
                strip_bulk_binary(v, max_inline_binary);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn testdata(rel: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata/dicom")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn header(bytes: &[u8]) -> Result<InstanceHeader, DicomError> {
        read_instance_header(Cursor::new(bytes), bytes.len() as u64, Limits::default())
    }

    #[test]
    fn reads_every_real_transfer_syntax() {
        for rel in [
            "single/CT_small.dcm",
            "single/MR_small_implicit.dcm",
            "compressed/JPEG2000.dcm",
            "compressed/MR_small_RLE.dcm",
            "compressed/MR_small_jpeg_ls_lossless.dcm",
            "compressed/SC_rgb_jpeg_dcmtk.dcm",
            "compressed/image_dfl.dcm",
        ] {
            let bytes = testdata(rel);
            let h = header(&bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert!(!h.sop_instance_uid.is_empty(), "{rel}");
            assert!(
                h.metadata.get("0020000D").is_some(),
                "{rel}: metadata has StudyInstanceUID"
            );
            assert!(
                h.metadata.get("7FE00010").is_none(),
                "{rel}: pixel data is not metadata"
            );
        }
    }

    #[test]
    fn truncated_and_hostile_files_name_the_problem() {
        let ct = testdata("single/CT_small.dcm");
        let err = header(&ct[..ct.len() / 2]).unwrap_err().to_string();
        assert!(err.contains("declares") && err.contains("remain"), "{err}");
        let err = header(&ct[..100]).unwrap_err().to_string();
        assert!(err.contains("not a DICOM Part 10 file"), "{err}");

        let mut hostile = ct[..ct.len().min(400)].to_vec();
        // A 1 GiB OB element after the meta group: refused from the header alone.
        let meta_end = 144 + u32::from_le_bytes([ct[140], ct[141], ct[142], ct[143]]) as usize;
        hostile.truncate(meta_end);
        hostile.extend_from_slice(&[0x08, 0x00, 0x05, 0x00, b'O', b'B', 0, 0]);
        hostile.extend_from_slice(&(1u32 << 30).to_le_bytes());
        hostile.extend_from_slice(&[0; 16]);
        let err = header(&hostile).unwrap_err().to_string();
        assert!(
            err.contains("declares 1073741824 bytes but only 16 remain"),
            "{err}"
        );
    }

    #[test]
    fn sequences_nested_too_deep_are_refused() {
        let ct = testdata("single/CT_small.dcm");
        let meta_end = 144 + u32::from_le_bytes([ct[140], ct[141], ct[142], ct[143]]) as usize;
        let mut f = ct[..meta_end].to_vec();
        for _ in 0..40 {
            f.extend_from_slice(&[
                0x08, 0x00, 0x15, 0x92, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let err = header(&f).unwrap_err().to_string();
        assert!(err.contains("nested deeper"), "{err}");
    }
}
