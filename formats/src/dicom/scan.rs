//! A bounds check of a Part 10 file's structure before any parser allocates for it.
//!
//! dicom-object allocates whatever length an element declares, so a few-kilobyte file
//! declaring gigabyte elements would make it allocate gigabytes before failing. This
//! walker reads element headers only, checks every declared length against the bytes
//! that are really there (or against the enclosing item), and skips values without
//! keeping them. It stops at the pixel data of the root data set: bulk pixel data is
//! never parsed for indexing.

use std::io::{self, Read};

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::{DicomError, Uid, UidError};

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITER: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const TRANSFER_SYNTAX_UID: Tag = Tag(0x0002, 0x0010);
/// Deeper nesting than this is an attack on the parser's stack, not a medical image.
const MAX_DEPTH: usize = 24;

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// What the structural scan learned about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// Transfer syntax UID from the file meta group.
    pub transfer_syntax_uid: String,
    /// Bytes of data set (after the meta group) before pixel data or the end; counted in
    /// inflated bytes for the deflated transfer syntax.
    pub header_bytes: u64,
    /// Whether the root data set has pixel data.
    pub has_pixel_data: bool,
}

/// Walk a whole Part 10 stream of `total_len` bytes (preamble included) and check that
/// every declared length fits. `max_header_bytes` bounds the part before pixel data.
pub fn scan_part10<R: Read>(
    reader: R,
    total_len: u64,
    max_header_bytes: u64,
) -> Result<ScanSummary, DicomError> {
    let mut r = Counted::new(reader, 0);
    let mut prefix = [0u8; 132];
    read_exact_or(&mut r, &mut prefix, || {
        DicomError::NotPart10(format!(
            "only {total_len} bytes, shorter than the 132-byte preamble and DICM prefix"
        ))
    })?;
    if &prefix[128..132] != b"DICM" {
        return Err(DicomError::NotPart10(
            "no \"DICM\" prefix at offset 128".into(),
        ));
    }
    let ts = scan_meta_group(&mut r, total_len)?;
    let meta_end = r.pos;
    let mut summary = ScanSummary {
        transfer_syntax_uid: ts.clone(),
        header_bytes: 0,
        has_pixel_data: false,
    };
    let limit = max_header_bytes;
    let stop = match ts.as_str() {
        DEFLATED_EXPLICIT_VR_LE => {
            let inflated = flate2::read::DeflateDecoder::new(&mut r);
            // The inflated size is unknown: bound it by the header limit instead.
            let mut w = Walker {
                r: Counted::new(inflated.take(limit.saturating_add(1)), 0),
                explicit: true,
                big_endian: false,
                end_of_data: limit.saturating_add(1),
                limit,
            };
            let stop = w.walk_data_set(None, 0)?;
            summary.header_bytes = w.r.pos;
            stop
        }
        _ => {
            let mut w = Walker {
                r: Counted::new(&mut r, meta_end),
                explicit: ts != IMPLICIT_VR_LE,
                big_endian: ts == EXPLICIT_VR_BE,
                end_of_data: total_len,
                limit: meta_end.saturating_add(limit),
            };
            let stop = w.walk_data_set(None, 0)?;
            summary.header_bytes = w.r.pos - meta_end;
            stop
        }
    };
    summary.has_pixel_data = stop == Stop::PixelData;
    if summary.header_bytes > limit {
        return Err(DicomError::TooLarge(format!(
            "{} bytes before pixel data, more than the {limit} accepted",
            summary.header_bytes
        )));
    }
    Ok(summary)
}

/// The file meta group is always explicit VR little endian.
fn scan_meta_group<R: Read>(r: &mut Counted<R>, total_len: u64) -> Result<String, DicomError> {
    let mut ts = None;
    loop {
        let mut tag_bytes = [0u8; 4];
        match r.read_exact(&mut tag_bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let group = u16::from_le_bytes([tag_bytes[0], tag_bytes[1]]);
        if group != 0x0002 {
            r.push_back(tag_bytes);
            break;
        }
        let tag = Tag(group, u16::from_le_bytes([tag_bytes[2], tag_bytes[3]]));
        let (_, len) = read_explicit_vr_len(r, false)?;
        if len == UNDEFINED {
            return Err(DicomError::Malformed(format!(
                "file meta element {tag} has undefined length"
            )));
        }
        check_fits(tag, u64::from(len), r.pos, total_len)?;
        let uid_attribute = match tag.element() {
            0x0002 => Some("MediaStorageSOPClassUID"),
            0x0003 => Some("MediaStorageSOPInstanceUID"),
            0x0010 => Some("TransferSyntaxUID"),
            _ => None,
        };
        if let Some(attribute) = uid_attribute {
            // A UID is at most 64 characters plus padding; refuse before reading more.
            if len > 66 {
                return Err(DicomError::InvalidUid {
                    attribute,
                    source: UidError::TooLong(format!("{len} bytes")),
                });
            }
            let mut buf = vec![0u8; len as usize];
            r.read_exact(&mut buf).map_err(truncated_header)?;
            let uid = Uid::parse(&String::from_utf8_lossy(&buf))
                .map_err(|source| DicomError::InvalidUid { attribute, source })?;
            if tag == TRANSFER_SYNTAX_UID {
                ts = Some(uid.into_string());
            }
        } else {
            r.skip(u64::from(len))?;
        }
    }
    ts.ok_or_else(|| {
        DicomError::NotPart10("file meta group has no TransferSyntaxUID (0002,0010)".into())
    })
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Stop {
    /// The end of the data or of a defined-length item.
    End,
    /// An item delimitation item closed an undefined-length item.
    ItemDelimiter,
    /// A sequence delimitation item closed an undefined-length sequence.
    SequenceDelimiter,
    /// Pixel data in the root data set.
    PixelData,
}

struct Walker<R: Read> {
    r: Counted<R>,
    explicit: bool,
    big_endian: bool,
    /// Absolute position where the data ends.
    end_of_data: u64,
    /// Absolute position past which header bytes are refused.
    limit: u64,
}

impl<R: Read> Walker<R> {
    /// Walk elements until `end` (absolute, for defined-length items), a delimiter, or
    /// the end of the data.
    fn walk_data_set(&mut self, end: Option<u64>, depth: usize) -> Result<Stop, DicomError> {
        if depth > MAX_DEPTH {
            return Err(DicomError::Malformed(format!(
                "sequences nested deeper than {MAX_DEPTH} levels"
            )));
        }
        loop {
            if let Some(end) = end {
                if self.r.pos == end {
                    return Ok(Stop::End);
                }
            }
            if self.r.pos > self.limit {
                return Err(DicomError::TooLarge(format!(
                    "data set header runs past {} bytes without reaching pixel data",
                    self.limit
                )));
            }
            let tag = match self.read_tag() {
                Ok(tag) => tag,
                Err(e)
                    if e.kind() == io::ErrorKind::UnexpectedEof && end.is_none() && depth == 0 =>
                {
                    return Ok(Stop::End);
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(DicomError::Truncated(format!(
                        "data ends inside a sequence item at byte {}",
                        self.r.pos
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if tag == ITEM_DELIMITER || tag == SEQUENCE_DELIMITER {
                self.read_u32()?;
                if depth == 0 {
                    return Err(DicomError::Malformed(format!(
                        "delimiter {tag} outside any sequence"
                    )));
                }
                return Ok(if tag == ITEM_DELIMITER {
                    Stop::ItemDelimiter
                } else {
                    Stop::SequenceDelimiter
                });
            }
            let (vr, len) = if self.explicit {
                read_explicit_vr_len(&mut self.r, self.big_endian)?
            } else {
                let vr = StandardDataDictionary
                    .by_tag(tag)
                    .map(|e| e.vr.relaxed())
                    .unwrap_or(VR::UN);
                (vr, self.read_u32()?)
            };
            let bound = end.unwrap_or(self.end_of_data);
            if depth == 0 && tag == PIXEL_DATA {
                // Not parsed for indexing, but a file cut short must not pass as whole.
                if len != UNDEFINED {
                    check_fits(tag, u64::from(len), self.r.pos, bound)?;
                }
                return Ok(Stop::PixelData);
            }
            if vr == VR::SQ || (len == UNDEFINED && vr == VR::UN) {
                // An undefined-length UN is a sequence in implicit VR (PS3.5 6.2.2).
                let saved = self.explicit;
                if vr == VR::UN {
                    self.explicit = false;
                }
                let seq_end = if len == UNDEFINED {
                    None
                } else {
                    check_fits(tag, u64::from(len), self.r.pos, bound)?;
                    Some(self.r.pos + u64::from(len))
                };
                self.walk_sequence(tag, seq_end, depth + 1)?;
                self.explicit = saved;
            } else if len == UNDEFINED {
                return Err(DicomError::Malformed(format!(
                    "element {tag} ({vr}) has undefined length, allowed only for sequences and pixel data"
                )));
            } else {
                check_fits(tag, u64::from(len), self.r.pos, bound)?;
                self.r.skip(u64::from(len))?;
            }
        }
    }

    fn walk_sequence(
        &mut self,
        seq: Tag,
        end: Option<u64>,
        depth: usize,
    ) -> Result<(), DicomError> {
        loop {
            if let Some(end) = end {
                if self.r.pos == end {
                    return Ok(());
                }
            }
            let tag = self.read_tag().map_err(|e| eof_as_truncated(e, seq))?;
            let len = self.read_u32().map_err(|e| eof_as_truncated(e, seq))?;
            match tag {
                SEQUENCE_DELIMITER if end.is_none() => return Ok(()),
                ITEM if len == UNDEFINED => match self.walk_data_set(None, depth)? {
                    Stop::ItemDelimiter => {}
                    other => {
                        return Err(DicomError::Malformed(format!(
                            "item of sequence {seq} not closed by an item delimiter ({other:?})"
                        )))
                    }
                },
                ITEM => {
                    let bound = end.unwrap_or(self.end_of_data);
                    check_fits(seq, u64::from(len), self.r.pos, bound)?;
                    let item_end = self.r.pos + u64::from(len);
                    if self.walk_data_set(Some(item_end), depth)? != Stop::End
                        || self.r.pos != item_end
                    {
                        return Err(DicomError::Malformed(format!(
                            "item of sequence {seq} overruns its length"
                        )));
                    }
                }
                other => {
                    return Err(DicomError::Malformed(format!(
                        "sequence {seq} contains {other} where an item was expected"
                    )))
                }
            }
            if let Some(end) = end {
                if self.r.pos > end {
                    return Err(DicomError::Malformed(format!(
                        "sequence {seq} overruns its length"
                    )));
                }
            }
        }
    }

    fn read_tag(&mut self) -> io::Result<Tag> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        Ok(if self.big_endian {
            Tag(
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            )
        } else {
            Tag(
                u16::from_le_bytes([b[0], b[1]]),
                u16::from_le_bytes([b[2], b[3]]),
            )
        })
    }

    fn read_u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
}

fn eof_as_truncated(e: io::Error, seq: Tag) -> DicomError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        DicomError::Truncated(format!("data ends inside sequence {seq}"))
    } else {
        e.into()
    }
}

fn check_fits(tag: Tag, len: u64, pos: u64, bound: u64) -> Result<(), DicomError> {
    let available = bound.saturating_sub(pos);
    if len > available {
        Err(DicomError::Truncated(format!(
            "element {tag} declares {len} bytes but only {available} remain"
        )))
    } else {
        Ok(())
    }
}

/// Read an explicit VR and its length; VRs with a 4-byte length have 2 reserved bytes.
fn read_explicit_vr_len<R: Read>(
    r: &mut Counted<R>,
    big_endian: bool,
) -> Result<(VR, u32), DicomError> {
    let mut vr_bytes = [0u8; 2];
    r.read_exact(&mut vr_bytes).map_err(truncated_header)?;
    let vr = VR::from_binary(vr_bytes).unwrap_or(VR::UN);
    let long = matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    );
    if long {
        let mut b = [0u8; 6];
        r.read_exact(&mut b).map_err(truncated_header)?;
        let len = [b[2], b[3], b[4], b[5]];
        Ok((
            vr,
            if big_endian {
                u32::from_be_bytes(len)
            } else {
                u32::from_le_bytes(len)
            },
        ))
    } else {
        let mut b = [0u8; 2];
        r.read_exact(&mut b).map_err(truncated_header)?;
        let len = if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        };
        Ok((vr, u32::from(len)))
    }
}

fn truncated_header(e: io::Error) -> DicomError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        DicomError::Truncated("data ends inside an element header".into())
    } else {
        e.into()
    }
}

fn read_exact_or<R: Read>(
    r: &mut Counted<R>,
    buf: &mut [u8],
    on_eof: impl FnOnce() -> DicomError,
) -> Result<(), DicomError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            on_eof()
        } else {
            e.into()
        }
    })
}

/// A reader that counts its position and can push back one tag.
struct Counted<R> {
    inner: R,
    pos: u64,
    pushed_back: Vec<u8>,
}

impl<R> Counted<R> {
    fn new(inner: R, pos: u64) -> Self {
        Counted {
            inner,
            pos,
            pushed_back: Vec::new(),
        }
    }

    fn push_back(&mut self, bytes: [u8; 4]) {
        self.pushed_back.extend_from_slice(&bytes);
        self.pos -= 4;
    }
}

impl<R: Read> Counted<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut self.by_ref().take(n), &mut io::sink())?;
        if copied < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.pushed_back.is_empty() {
            let n = buf.len().min(self.pushed_back.len());
            buf[..n].copy_from_slice(&self.pushed_back[..n]);
            self.pushed_back.drain(..n);
            self.pos += n as u64;
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}
