//! JPEG-LS (ITU-T T.87; transfer syntaxes 1.2.840.10008.1.2.4.80 lossless and .81
//! near-lossless) decoded in pure Rust with `pure_jpegls` (library `jpegls`, MIT OR
//! Apache-2.0, no `unsafe`, thiserror its only dependency): single-component streams,
//! 2 to 16 bits, lossless and NEAR > 0, LSE preset parameters. dicom-pixeldata's own
//! JPEG-LS support needs CharLS (C++, cmake), which `scripts/run` does not want.
//!
//! Colour (multi-component) streams, restart markers and point transforms are refused
//! with a 406 naming the syntax and what is missing.
//!
//! The stream comes from outside, so before the decoder sees it: its declared size must
//! be the header's Rows x Columns, bounded; its precision must fit Bits Allocated; every
//! marker segment up to the scan must fit the bytes there. The decoder runs under
//! `catch_unwind`, so a stream that trips it still gives an error, not a dead worker.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::params::WindowFunction;
use super::pipeline::{checked_window, number_of_frames, transfer_syntax, DecodedFrame};
use super::RenderError;

/// JPEG-LS Lossless Image Compression.
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
/// JPEG-LS Lossy (Near-Lossless) Image Compression.
pub const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";

/// Largest frame we decode, in pixels: 64 Mi (a 8192 x 8192 mammogram fits), 128 MiB of
/// 16-bit samples. The decoder allocates this before it reads a bit of the scan.
const MAX_PIXELS: u64 = 1 << 26;

/// Whether `ts` is one of the JPEG-LS transfer syntaxes.
pub fn is_jpegls(ts: &str) -> bool {
    ts == JPEG_LS_LOSSLESS || ts == JPEG_LS_NEAR_LOSSLESS
}

fn syntax_name(ts: &str) -> &'static str {
    if ts == JPEG_LS_NEAR_LOSSLESS {
        "JPEG-LS Lossy (Near-Lossless) Image Compression"
    } else {
        "JPEG-LS Lossless Image Compression"
    }
}

fn unsupported(ts: &str, what: impl Into<String>) -> RenderError {
    RenderError::UnsupportedVariant {
        uid: ts.to_string(),
        name: syntax_name(ts).to_string(),
        what: what.into(),
    }
}

fn corrupt(what: impl std::fmt::Display) -> RenderError {
    RenderError::Corrupt(format!("JPEG-LS: {what}"))
}

fn element(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemElement> {
    obj.element_opt(tag).ok().flatten()
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    element(obj, tag).and_then(|e| e.to_int::<u32>().ok())
}

/// `tag` for frame `frame` (1-based): in the frame's item of the per-frame functional
/// groups, else the shared ones (inside the macro sequence `macro_seq`), else the root
/// data set, as PS3.3 C.7.6.16 has it for enhanced objects.
fn frame_element(
    obj: &InMemDicomObject,
    frame: u32,
    macro_seq: Tag,
    tag: Tag,
) -> Option<&InMemElement> {
    let in_group = |group: Tag, index: usize| {
        element(obj, group)
            .and_then(|g| g.items()?.get(index))
            .and_then(|item| element(item, macro_seq))
            .and_then(|m| m.items()?.first())
            .and_then(|item| element(item, tag))
    };
    in_group(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        frame as usize - 1,
    )
    .or_else(|| in_group(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, 0))
    .or_else(|| element(obj, tag))
}

fn frame_f64(obj: &InMemDicomObject, frame: u32, macro_seq: Tag, tag: Tag) -> Option<f64> {
    frame_element(obj, frame, macro_seq, tag)
        .and_then(|e| e.to_multi_float64().ok())
        .and_then(|v| v.first().copied())
        .filter(|v| v.is_finite())
}

/// The compressed bytes of frame `frame` (1-based): one frame is one fragment, or all
/// fragments of a single-frame object, or the fragments between two offsets of the basic
/// offset table.
fn frame_bytes(
    obj: &InMemDicomObject,
    frame: u32,
    frames: u32,
) -> Result<Cow<'_, [u8]>, RenderError> {
    let pixel = element(obj, tags::PIXEL_DATA).ok_or(RenderError::NoPixelData)?;
    let fragments = pixel
        .value()
        .fragments()
        .ok_or_else(|| corrupt("pixel data is not encapsulated"))?;
    let index = frame as usize - 1;
    if frames == 1 {
        return Ok(match fragments {
            [one] => Cow::Borrowed(one.as_slice()),
            many => Cow::Owned(many.concat()),
        });
    }
    if fragments.len() == frames as usize {
        return Ok(Cow::Borrowed(fragments[index].as_slice()));
    }
    // Several fragments per frame: the basic offset table says where each frame starts
    // (offsets from the first fragment's item tag; each item has an 8-byte header).
    let table = pixel.value().offset_table().unwrap_or_default();
    if table.len() != frames as usize {
        return Err(corrupt(format!(
            "{} fragments for {frames} frames and no usable offset table",
            fragments.len()
        )));
    }
    let (start, end) = (
        u64::from(table[index]),
        table.get(index + 1).map_or(u64::MAX, |e| u64::from(*e)),
    );
    let mut pos = 0u64;
    let mut out = Vec::new();
    for f in fragments {
        if pos >= start && pos < end {
            out.extend_from_slice(f);
        }
        pos += 8 + f.len() as u64;
    }
    if out.is_empty() {
        return Err(corrupt(format!(
            "no fragment at the offset of frame {frame}"
        )));
    }
    Ok(Cow::Owned(out))
}

/// What the stream declares: width, height, precision, components.
#[derive(Debug, PartialEq, Eq)]
struct StreamHeader {
    width: u32,
    height: u32,
    precision: u8,
    components: u8,
}

/// Walk the marker segments up to the scan, checking that each fits the bytes there, and
/// read SOF55 and SOS. Refuses what the decoder would misread or choke on.
fn stream_header(ts: &str, data: &[u8]) -> Result<StreamHeader, RenderError> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err(corrupt("the frame does not start with SOI"));
    }
    let mut pos = 2usize;
    let mut header: Option<StreamHeader> = None;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while data.get(pos) == Some(&0xFF) && data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (data.get(pos), data.get(pos + 1)) else {
            return Err(corrupt(format!("no marker at byte {pos}")));
        };
        let len = data
            .get(pos + 2..pos + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .filter(|l| *l >= 2)
            .ok_or_else(|| corrupt(format!("truncated segment at byte {pos}")))?;
        let seg = data
            .get(pos + 4..pos + 2 + len)
            .ok_or_else(|| corrupt(format!("segment 0xFF{marker:02X} longer than the frame")))?;
        match marker {
            0xF7 => {
                // SOF55: P, Y, X, Nf, then Nf x (C, H/V, Tq).
                if seg.len() < 6 {
                    return Err(corrupt("SOF55 segment too short"));
                }
                let components = seg[5];
                if seg.len() < 6 + 3 * usize::from(components) {
                    return Err(corrupt("SOF55 segment shorter than its components"));
                }
                header = Some(StreamHeader {
                    precision: seg[0],
                    height: u32::from(u16::from_be_bytes([seg[1], seg[2]])),
                    width: u32::from(u16::from_be_bytes([seg[3], seg[4]])),
                    components,
                });
            }
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(corrupt(format!(
                    "the frame is JPEG (SOF 0xFF{marker:02X}), not JPEG-LS"
                )));
            }
            0xDD => return Err(unsupported(ts, "restart intervals (DRI)")),
            0xDA => {
                // SOS: Ns, Ns x (Cs, Tm), NEAR, ILV, Al/Ah.
                let ns = usize::from(*seg.first().unwrap_or(&0));
                let tail = seg
                    .get(1 + 2 * ns..1 + 2 * ns + 3)
                    .ok_or_else(|| corrupt("SOS segment too short"))?;
                let h = header.ok_or_else(|| corrupt("scan before the SOF55 frame header"))?;
                if h.components != 1 || ns != 1 {
                    return Err(unsupported(
                        ts,
                        format!(
                            "colour ({} components; only single-component JPEG-LS is decoded)",
                            h.components
                        ),
                    ));
                }
                if tail[1] != 0 {
                    return Err(corrupt(format!(
                        "interleave mode {} in a single-component scan",
                        tail[1]
                    )));
                }
                if tail[2] & 0x0F != 0 {
                    return Err(unsupported(ts, "a point transform (Al != 0)"));
                }
                return Ok(h);
            }
            0xD9 => return Err(corrupt("EOI before the scan")),
            _ => {}
        }
        pos += 2 + len;
    }
}

/// Decode one JPEG-LS stream of `cols` x `rows` samples of at most `alloc` bits, after
/// the header checks of [`stream_header`].
fn decode_stream(
    ts: &str,
    data: &[u8],
    cols: u32,
    rows: u32,
    alloc: u32,
) -> Result<Vec<u16>, RenderError> {
    let h = stream_header(ts, data)?;
    if (h.width, h.height) != (cols, rows) {
        return Err(corrupt(format!(
            "the stream is {}x{}, the header says {cols}x{rows}",
            h.width, h.height
        )));
    }
    if h.precision < 2 || u32::from(h.precision) > alloc {
        return Err(corrupt(format!(
            "{}-bit samples in {alloc} bits allocated",
            h.precision
        )));
    }
    // pure_jpegls checks what it reads, but is young: a stream that trips an index or an
    // arithmetic overflow must end in an error for this request, not in a dead worker.
    let (samples, w, h) = catch_unwind(AssertUnwindSafe(|| jpegls::decode(data, cols, rows)))
        .map_err(|_| corrupt("the decoder failed on this stream"))?
        .map_err(|e| match e {
            jpegls::CodecError::Unsupported(what) => unsupported(ts, what),
            other => corrupt(other),
        })?;
    if (w, h) != (cols, rows) || samples.len() != rows as usize * cols as usize {
        return Err(corrupt("the decoder returned another size"));
    }
    Ok(samples)
}

/// Decode frame `frame` (1-based, already checked against NumberOfFrames) of a JPEG-LS
/// object to native little-endian samples.
pub fn decode_frame(obj: &DefaultDicomObject, frame: u32) -> Result<DecodedFrame, RenderError> {
    let ts = transfer_syntax(obj);
    let rows = int(obj, tags::ROWS).filter(|r| *r > 0);
    let cols = int(obj, tags::COLUMNS).filter(|c| *c > 0);
    let (Some(rows), Some(cols)) = (rows, cols) else {
        return Err(RenderError::Corrupt(
            "Rows or Columns missing or zero".into(),
        ));
    };
    let spp = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if spp != 1 {
        return Err(unsupported(
            ts,
            format!("colour ({spp} samples per pixel; only single-component JPEG-LS is decoded)"),
        ));
    }
    let alloc = int(obj, tags::BITS_ALLOCATED).unwrap_or(0);
    if alloc != 8 && alloc != 16 {
        return Err(corrupt(format!(
            "{alloc} bits allocated (8 or 16 expected)"
        )));
    }
    let stored = int(obj, tags::BITS_STORED).unwrap_or(alloc);
    if stored == 0 || stored > alloc {
        return Err(corrupt(format!(
            "{stored} bits stored of {alloc} allocated"
        )));
    }
    if u64::from(rows) * u64::from(cols) > MAX_PIXELS {
        return Err(RenderError::Unsupported(format!(
            "{cols}x{rows} JPEG-LS frame is larger than {MAX_PIXELS} pixels"
        )));
    }
    let frames = number_of_frames(obj);
    let data = frame_bytes(obj, frame, frames)?;
    let samples = decode_stream(ts, &data, cols, rows, alloc)?;
    let data: Vec<u8> = if alloc == 16 {
        samples.iter().flat_map(|v| v.to_le_bytes()).collect()
    } else {
        // Precision <= 8 was checked: every sample fits a byte.
        samples.iter().map(|&v| v as u8).collect()
    };
    let photometric = element(obj, tags::PHOTOMETRIC_INTERPRETATION)
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_ascii_uppercase()))
        .unwrap_or_else(|| "MONOCHROME2".to_string());
    let slope = frame_f64(
        obj,
        frame,
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        tags::RESCALE_SLOPE,
    );
    let intercept = frame_f64(
        obj,
        frame,
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        tags::RESCALE_INTERCEPT,
    );
    let rescale = match (slope, intercept) {
        (None, None) => None,
        (s, i) => Some((s.filter(|s| *s != 0.0).unwrap_or(1.0), i.unwrap_or(0.0))),
    };
    let center = frame_f64(obj, frame, tags::FRAME_VOILUT_SEQUENCE, tags::WINDOW_CENTER);
    let width = frame_f64(obj, frame, tags::FRAME_VOILUT_SEQUENCE, tags::WINDOW_WIDTH);
    let function = frame_element(
        obj,
        frame,
        tags::FRAME_VOILUT_SEQUENCE,
        tags::VOILUT_FUNCTION,
    )
    .and_then(|e| e.to_str().ok().and_then(|f| WindowFunction::parse(&f)))
    .unwrap_or_default();
    let window = match (center, width) {
        (Some(c), Some(w)) => checked_window(c, w, function),
        _ => None,
    };
    let mut out = DecodedFrame {
        data,
        rows,
        columns: cols,
        samples_per_pixel: 1,
        bits_allocated: alloc as u16,
        bits_stored: stored as u16,
        signed: int(obj, tags::PIXEL_REPRESENTATION) == Some(1),
        planar: false,
        photometric,
        rescale,
        window,
    };
    out.check_len()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = JPEG_LS_LOSSLESS;

    fn seg(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, marker];
        v.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn stream(sof: &[u8], sos: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend(seg(0xF7, sof));
        v.extend(seg(0xDA, sos));
        v.extend_from_slice(&[0, 0, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn jpegls_header_checks_before_decoding() {
        let ok = stream(&[12, 0, 4, 0, 8, 1, 1, 0x11, 0], &[1, 1, 0, 0, 0, 0]);
        assert_eq!(
            stream_header(TS, &ok).unwrap(),
            StreamHeader {
                width: 8,
                height: 4,
                precision: 12,
                components: 1
            }
        );
        // Three components: refused as unsupported (406), naming colour.
        let rgb = stream(
            &[8, 0, 4, 0, 8, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0],
            &[3, 1, 0, 2, 0, 3, 0, 0, 2, 0],
        );
        match stream_header(TS, &rgb) {
            Err(e @ RenderError::UnsupportedVariant { .. }) => {
                let text = e.to_string();
                assert!(text.contains(TS) && text.contains("colour"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // Point transform, restart interval: unsupported; broken lengths: corrupt.
        let al = stream(&[8, 0, 4, 0, 8, 1, 1, 0x11, 0], &[1, 1, 0, 0, 0, 1]);
        assert!(matches!(
            stream_header(TS, &al),
            Err(RenderError::UnsupportedVariant { .. })
        ));
        let mut dri = vec![0xFF, 0xD8];
        dri.extend(seg(0xDD, &[0, 4]));
        assert!(matches!(
            stream_header(TS, &dri),
            Err(RenderError::UnsupportedVariant { .. })
        ));
        for bad in [
            vec![0xFF, 0xD8, 0xFF, 0xF7, 0xFF, 0xFF, 1, 2],
            vec![0xFF, 0xD8, 0xFF, 0xF7, 0x00],
            vec![0x00, 0x01],
            seg(0xF7, &[8, 0, 4, 0, 8, 1]),
            stream(&[8, 0, 4, 0, 8, 1, 1, 0x11, 0], &[1]),
        ] {
            assert!(
                matches!(stream_header(TS, &bad), Err(RenderError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    /// Streams the encoder made, then damaged at every byte: the decoder gives an error
    /// or an image, never a panic that escapes.
    #[test]
    fn jpegls_damaged_streams_do_not_panic() {
        let pixels: Vec<u16> = (0..32 * 16).map(|i| ((i * 37) % 4096) as u16).collect();
        let mut clean = Vec::new();
        jpegls::encode(&pixels, 32, 16, &mut clean).unwrap();
        assert_eq!(decode_stream(TS, &clean, 32, 16, 16).unwrap(), pixels);
        assert!(
            decode_stream(TS, &clean, 16, 32, 16).is_err(),
            "size mismatch"
        );
        assert!(
            decode_stream(TS, &clean, 32, 16, 8).is_err(),
            "precision over allocated"
        );
        let mut errors = 0;
        for i in 0..clean.len() {
            for x in [0x00u8, 0xFF, 0x55] {
                let mut bad = clean.clone();
                bad[i] = x;
                errors += usize::from(decode_stream(TS, &bad, 32, 16, 16).is_err());
            }
            errors += usize::from(decode_stream(TS, &clean[..i], 32, 16, 16).is_err());
        }
        assert!(errors > 0);
    }
}
