//! SCP-ECG records (EN 1064:2005, ISO/IEEE 11073-91064).
//!
//! A record is a CRC-CCITT and a length, then sections that each start with a 16-byte
//! header (CRC, section number, length, versions). Section 0 points at the others.
//! Sections read here: 1 (patient and acquisition header), 2 (Huffman tables), 3 (lead
//! definitions), 6 (rhythm data), 7 (global measurements), 8 and 11 (statements).
//! Rhythm data stored as residuals after reference-beat subtraction, or decimated by
//! bimodal compression, is refused with [`EcgError::Unsupported`]: no cart we have a
//! file from writes it, and a silently wrong reconstruction would be worse than none.

mod header;
mod huffman;
mod measurements;
mod rhythm;

use std::collections::BTreeMap;

use super::{Ecg, EcgError, SourceFormat};

/// Every section starts with CRC (2), section number (2), length (4), section version
/// (1), protocol version (1) and 6 reserved bytes.
const SECTION_HEADER: usize = 16;
/// Record CRC (2) and record length (4) precede section 0.
const RECORD_HEADER: usize = 6;

/// Read an SCP-ECG record.
///
/// The record CRC and every section CRC are checked first; a mismatch is an error
/// ([`EcgError::ScpCrc`]) because a flipped bit in Huffman-coded data corrupts every
/// following sample of the lead without any other sign.
pub fn read_scp(bytes: &[u8]) -> Result<Ecg, EcgError> {
    let record = Record::parse(bytes)?;
    let mut ecg = Ecg::empty(SourceFormat::ScpEcg);
    if let Some(s1) = record.section(1) {
        header::read(s1, &mut ecg);
    }
    let coding = match record.section(2) {
        Some(s2) => huffman::Coding::parse(s2)?,
        // No section 2 means the samples were not Huffman coded (EN 1064 5.5).
        None => huffman::Coding::Raw16,
    };
    let s3 = record
        .section(3)
        .ok_or_else(|| scp_error(None, "no section 3 (lead definitions)".into()))?;
    let leads = rhythm::read_lead_definitions(s3)?;
    let s6 = record
        .section(6)
        .ok_or_else(|| scp_error(None, "no section 6 (rhythm data)".into()))?;
    let rhythm = rhythm::decode_rhythm(s6, &leads, &coding)?;
    ecg.sample_rate_hz = rhythm.sample_rate_hz;
    ecg.leads = rhythm.leads;
    if let Some(s7) = record.section(7) {
        measurements::read_global(s7, &mut ecg.device_measurements);
    }
    let charset = header::charset(record.section(1));
    if let Some(s8) = record.section(8) {
        ecg.statements = measurements::read_statements(s8, false, charset);
    }
    if ecg.statements.is_empty() {
        if let Some(s11) = record.section(11) {
            ecg.statements = measurements::read_statements(s11, true, charset);
        }
    }
    Ok(ecg.finish())
}

/// Whether the bytes start like an SCP-ECG record: section 0 right after the record
/// header, with the "SCPECG" tag or a record length equal to the input length.
pub(crate) fn looks_like_scp(bytes: &[u8]) -> bool {
    if bytes.len() < RECORD_HEADER + SECTION_HEADER {
        return false;
    }
    let section0 = u16_at(bytes, RECORD_HEADER + 2) == Some(0);
    let tag = bytes.get(16..22) == Some(b"SCPECG".as_slice());
    let length = u32_at(bytes, 2).map(|l| l as usize) == Some(bytes.len());
    section0 && (tag || length)
}

/// A record whose CRCs and section pointers have been checked.
struct Record<'a> {
    /// Section bodies (after the 16-byte header), by section number.
    sections: BTreeMap<u16, &'a [u8]>,
}

impl<'a> Record<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Record<'a>, EcgError> {
        if bytes.len() < RECORD_HEADER + SECTION_HEADER {
            return Err(scp_error(
                None,
                format!(
                    "{} bytes, too short for a record header and section 0",
                    bytes.len()
                ),
            ));
        }
        let stored_crc = u16_at(bytes, 0).unwrap_or_default();
        let declared = u32_at(bytes, 2).unwrap_or_default() as usize;
        if declared > bytes.len() {
            return Err(scp_error(
                None,
                format!(
                    "record declares {declared} bytes but only {} are present",
                    bytes.len()
                ),
            ));
        }
        if declared < RECORD_HEADER + SECTION_HEADER {
            return Err(scp_error(
                None,
                format!("record declares {declared} bytes, too short for section 0"),
            ));
        }
        // Bytes past the declared length are transport padding, not part of the record.
        let record = &bytes[..declared];
        let computed = crc_ccitt(&record[2..]);
        if computed != stored_crc {
            return Err(EcgError::ScpCrc {
                section: None,
                stored: stored_crc,
                computed,
            });
        }
        let section0 = section_at(record, RECORD_HEADER, 0)?;
        let mut sections = BTreeMap::new();
        sections.insert(0, section0);
        for pointer in section0.chunks_exact(10) {
            let id = u16_at(pointer, 0).unwrap_or_default();
            let len = u32_at(pointer, 2).unwrap_or_default() as usize;
            let index = u32_at(pointer, 6).unwrap_or_default() as usize;
            if len == 0 || id == 0 {
                continue;
            }
            if index == 0 {
                return Err(scp_error(
                    Some(0),
                    format!("pointer to section {id} has index 0 (indexes start at 1)"),
                ));
            }
            let body = section_at(record, index - 1, id)?;
            if body.len() + SECTION_HEADER != len {
                return Err(scp_error(
                    Some(0),
                    format!(
                        "pointer gives section {id} {len} bytes but its header says {}",
                        body.len() + SECTION_HEADER
                    ),
                ));
            }
            if sections.insert(id, body).is_some() {
                return Err(scp_error(Some(0), format!("section {id} is listed twice")));
            }
        }
        Ok(Record { sections })
    }

    fn section(&self, id: u16) -> Option<&'a [u8]> {
        self.sections.get(&id).copied()
    }
}

/// The body of the section whose header starts at `start`, after checking that it is
/// section `id`, fits the record and has a good CRC.
fn section_at(record: &[u8], start: usize, id: u16) -> Result<&[u8], EcgError> {
    let header = record
        .get(start..)
        .filter(|h| h.len() >= SECTION_HEADER)
        .ok_or_else(|| {
            scp_error(
                Some(id),
                format!(
                    "starts at byte {start}, past the end of the {}-byte record",
                    record.len()
                ),
            )
        })?;
    let found = u16_at(header, 2).unwrap_or_default();
    if found != id {
        return Err(scp_error(
            Some(id),
            format!("byte {start} holds section {found} instead"),
        ));
    }
    let len = u32_at(header, 4).unwrap_or_default() as usize;
    if len < SECTION_HEADER || len > header.len() {
        return Err(scp_error(
            Some(id),
            format!(
                "declares {len} bytes but {} remain in the record",
                header.len()
            ),
        ));
    }
    let section = &header[..len];
    let stored = u16_at(section, 0).unwrap_or_default();
    let computed = crc_ccitt(&section[2..]);
    if stored != computed {
        return Err(EcgError::ScpCrc {
            section: Some(id),
            stored,
            computed,
        });
    }
    Ok(&section[SECTION_HEADER..])
}

/// CRC-CCITT as EN 1064 uses it: polynomial 0x1021, initial value 0xFFFF, no reflection.
pub(crate) fn crc_ccitt(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF, |crc, &byte| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// The CRC of each byte value, so the check costs one lookup per byte.
const CRC_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn scp_error(section: Option<u16>, problem: String) -> EcgError {
    EcgError::Scp { section, problem }
}

/// Little-endian u16 at `at`, `None` past the end.
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Little-endian u32 at `at`, `None` past the end.
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecg_scp_crc_is_ccitt_false() {
        // The check value of CRC-16/CCITT-FALSE.
        assert_eq!(crc_ccitt(b"123456789"), 0x29B1);
    }
}
