//! From a stored Part 10 file to 8-bit pixels: decode (dicom-pixeldata), Modality LUT,
//! VOI window, MONOCHROME1 inversion, colour conversion, fit into the viewport.
//!
//! Window/level and palettes are done here rather than with dicom-pixeldata's image
//! conversion: its min-max `Normalize` turns signed images black and it renders PALETTE
//! COLOR as grey (see DEPENDENCIES.md), and a LUT over the stored range is faster.

use std::io::Cursor;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{DecodedPixelData, PixelDecoder};

use super::params::{RenderParams, Window, WindowFunction};

/// Header bytes we accept before the pixel data: as in the ECG reader, generous for real
/// headers, bounded against declared lengths the file cannot back.
const MAX_HEADER_BYTES: u64 = 64 * 1024 * 1024;

/// Why an instance could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The stored transfer syntax has no decoder in this build.
    #[error("transfer syntax {uid} ({name}) cannot be decoded by this server")]
    UnsupportedTransferSyntax {
        /// UID.
        uid: String,
        /// Human name, if known.
        name: String,
    },
    /// No pixel data (SR, waveform, encapsulated document...).
    #[error("instance has no pixel data to render")]
    NoPixelData,
    /// Frame number out of range.
    #[error("frame {requested} does not exist (the instance has {available})")]
    NoSuchFrame {
        /// 1-based requested frame.
        requested: u32,
        /// Frames in the instance.
        available: u32,
    },
    /// An image layout we do not render (e.g. 32-bit colour).
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// The file or its pixel data is broken.
    #[error("unreadable image: {0}")]
    Corrupt(String),
}

/// 8-bit pixels ready for encoding, rows top to bottom, interleaved samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    /// `width * height * channels` bytes.
    pub pixels: Vec<u8>,
}

/// Parse a stored Part 10 file completely (pixel data included), after the structural
/// scan that refuses lengths the bytes cannot back, so a hostile header cannot make
/// dicom-object allocate what it merely declares.
pub fn open(bytes: &[u8]) -> Result<DefaultDicomObject, RenderError> {
    // A Cursor is already buffered: no BufReader (and no extra copy) in between.
    formats::dicom::scan_part10(Cursor::new(bytes), bytes.len() as u64, MAX_HEADER_BYTES)
        .map_err(|e| RenderError::Corrupt(e.to_string()))?;
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(Cursor::new(bytes))
        .map_err(|e| RenderError::Corrupt(e.to_string()))
}

/// Number of frames (1 when NumberOfFrames is absent).
pub fn number_of_frames(obj: &InMemDicomObject) -> u32 {
    obj.element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Decode frame `frame` (1-based) to native little-endian samples, as dicom-pixeldata
/// gives them. Shared by rendering and WADO-RS frames.
pub fn decode_frame(
    obj: &DefaultDicomObject,
    frame: u32,
) -> Result<DecodedPixelData<'_>, RenderError> {
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(RenderError::NoPixelData);
    }
    let available = number_of_frames(obj);
    if frame == 0 || frame > available {
        return Err(RenderError::NoSuchFrame {
            requested: frame,
            available,
        });
    }
    let ts_uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    // Asking the registry first gives the client the syntax's name, where
    // dicom-pixeldata's error would only say "unsupported".
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
    match TransferSyntaxRegistry.get(&ts_uid) {
        Some(ts) if ts.can_decode_all() => {}
        found => {
            return Err(RenderError::UnsupportedTransferSyntax {
                name: found.map_or_else(|| "unknown".to_string(), |t| t.name().to_string()),
                uid: ts_uid,
            })
        }
    }
    obj.decode_pixel_data_frame(frame - 1)
        .map_err(|e| RenderError::Corrupt(e.to_string()))
}

/// Render frame `frame` (1-based) of `obj` with `params` to 8-bit pixels.
pub fn render(
    obj: &DefaultDicomObject,
    frame: u32,
    params: &RenderParams,
) -> Result<Image, RenderError> {
    let image = match native_grey(obj, frame, params)? {
        Some(image) => image,
        None => render_decoded(obj, frame, params)?,
    };
    Ok(match params.viewport {
        Some((vw, vh)) => fit(&image, vw, vh),
        None => image,
    })
}

/// Uncompressed little-endian transfer syntaxes, whose pixel data dicom-object holds as
/// plain values once parsed (the deflated one is inflated while parsing).
const NATIVE_LE: [&str; 3] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
];

fn header_f64s(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_float64().ok())
}

fn header_int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
}

/// The fast path of the common case (CT, MR, CR, DX...): an uncompressed monochrome
/// frame with one rescale for the whole object. One lookup table from every possible
/// stored value to the output byte (Modality LUT, window, MONOCHROME1 folded in), then
/// one pass over the stored samples, read in place from the parsed object: no decoded
/// copy, no intermediate buffer. `None` when the object needs the general path
/// (compressed, colour, per-frame functional groups, LUT sequences, odd layouts).
fn native_grey(
    obj: &DefaultDicomObject,
    frame: u32,
    params: &RenderParams,
) -> Result<Option<Image>, RenderError> {
    use dicom_core::value::{PrimitiveValue, Value};
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
    if !NATIVE_LE.contains(&ts) {
        return Ok(None);
    }
    let pi = obj
        .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_ascii_uppercase()));
    let invert = match pi.as_deref() {
        Some("MONOCHROME1") => true,
        Some("MONOCHROME2") => false,
        _ => return Ok(None),
    };
    let (Some(rows), Some(cols), Some(alloc)) = (
        header_int(obj, tags::ROWS),
        header_int(obj, tags::COLUMNS),
        header_int(obj, tags::BITS_ALLOCATED),
    ) else {
        return Ok(None);
    };
    let stored_bits = header_int(obj, tags::BITS_STORED).unwrap_or(alloc);
    let spp = header_int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let has = |t| obj.element_opt(t).ok().flatten().is_some();
    if spp != 1
        || !(alloc == 8 || alloc == 16)
        || stored_bits == 0
        || stored_bits > alloc
        || has(tags::MODALITY_LUT_SEQUENCE)
        || has(tags::VOILUT_SEQUENCE)
        || has(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        || has(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
    {
        return Ok(None);
    }
    let Some(pixel) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Err(RenderError::NoPixelData);
    };
    let available = number_of_frames(obj);
    if frame == 0 || frame > available {
        return Err(RenderError::NoSuchFrame {
            requested: frame,
            available,
        });
    }
    let n = rows as usize * cols as usize;
    let start = n * (frame as usize - 1);
    let signed = header_int(obj, tags::PIXEL_REPRESENTATION) == Some(1);
    let slope = header_f64s(obj, tags::RESCALE_SLOPE)
        .and_then(|v| v.first().copied())
        .filter(|s| *s != 0.0 && s.is_finite())
        .unwrap_or(1.0);
    let intercept = header_f64s(obj, tags::RESCALE_INTERCEPT)
        .and_then(|v| v.first().copied())
        .filter(|i| i.is_finite())
        .unwrap_or(0.0);
    let mask: u32 = if stored_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << stored_bits) - 1
    };
    // The stored value of a raw sample: bits above BitsStored masked (overlays or
    // garbage), then sign-extended from the stored high bit.
    let value = |raw: u32| -> i32 {
        let v = raw & mask;
        if signed && v & (1 << (stored_bits - 1)) != 0 {
            (v | !mask) as i32
        } else {
            v as i32
        }
    };
    // The samples of this frame, borrowed from the parsed element.
    enum Frame<'a> {
        Bytes(&'a [u8]),
        Words(&'a [u16]),
        /// 16-bit samples held as bytes (e.g. OB in implicit VR): little-endian pairs.
        BytePairs(&'a [u8]),
    }
    let short = || RenderError::Corrupt(format!("frame {frame} lies beyond the pixel data"));
    let data = match (pixel.value(), alloc) {
        (Value::Primitive(PrimitiveValue::U8(b)), 8) => {
            Frame::Bytes(b.get(start..start + n).ok_or_else(short)?)
        }
        (Value::Primitive(PrimitiveValue::U16(w)), 16) => {
            Frame::Words(w.get(start..start + n).ok_or_else(short)?)
        }
        (Value::Primitive(PrimitiveValue::U8(b)), 16) => {
            Frame::BytePairs(b.get(start * 2..(start + n) * 2).ok_or_else(short)?)
        }
        _ => return Ok(None),
    };
    let explicit = params.window.or_else(|| header_window_of(obj));
    let window = match explicit {
        Some(w) => w,
        None => {
            // No window anywhere: span the frame's own range so something is visible.
            let (lo, hi) = match &data {
                Frame::Bytes(b) => min_max(b.iter().map(|&r| value(u32::from(r)))),
                Frame::Words(w) => min_max(w.iter().map(|&r| value(u32::from(r)))),
                Frame::BytePairs(b) => min_max(
                    b.chunks_exact(2)
                        .map(|c| value(u32::from(u16::from_le_bytes([c[0], c[1]])))),
                ),
            };
            let (a, b) = (
                f64::from(lo) * slope + intercept,
                f64::from(hi) * slope + intercept,
            );
            let (a, b) = (a.min(b), a.max(b));
            Window {
                center: (a + b) / 2.0 + 0.5,
                width: (b - a + 1.0).max(1.0),
                function: WindowFunction::Linear,
            }
        }
    };
    // One entry per stored value (at most 2^16 evaluations), then indexed by the raw
    // sample: the table covers every u8/u16 so the index needs no bounds check.
    let stored_span = (mask.min(0xFFFF) + 1) as usize;
    let small: Vec<u8> = (0..stored_span as u32)
        .map(|raw| {
            let y = voi(f64::from(value(raw)) * slope + intercept, &window);
            if invert {
                255 - y
            } else {
                y
            }
        })
        .collect();
    let pixels = match data {
        Frame::Bytes(b) => {
            let lut: Vec<u8> = (0..256usize).map(|r| small[r % stored_span]).collect();
            b.iter().map(|&r| lut[usize::from(r)]).collect()
        }
        Frame::Words(w) => {
            let lut = full_lut16(&small);
            w.iter().map(|&r| lut[usize::from(r)]).collect()
        }
        Frame::BytePairs(b) => {
            let lut = full_lut16(&small);
            b.chunks_exact(2)
                .map(|c| lut[usize::from(u16::from_le_bytes([c[0], c[1]]))])
                .collect()
        }
    };
    Ok(Some(Image {
        width: cols,
        height: rows,
        channels: 1,
        pixels,
    }))
}

/// A 65536-entry table from a table over the stored bits (raw values repeat it above).
fn full_lut16(small: &[u8]) -> Box<[u8; 65536]> {
    let mut lut = Box::new([0u8; 65536]);
    // `small` has a power-of-two length up to 65536, so the chunks are exact.
    for chunk in lut.chunks_mut(small.len()) {
        chunk.copy_from_slice(&small[..chunk.len()]);
    }
    lut
}

fn min_max(values: impl Iterator<Item = i32>) -> (i32, i32) {
    values.fold((i32::MAX, i32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The header's first window (PS3.3 C.11.2), read directly (fast path).
fn header_window_of(obj: &InMemDicomObject) -> Option<Window> {
    let center = *header_f64s(obj, tags::WINDOW_CENTER)?.first()?;
    let width = *header_f64s(obj, tags::WINDOW_WIDTH)?.first()?;
    let function = obj
        .element_opt(tags::VOILUT_FUNCTION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().and_then(|f| WindowFunction::parse(&f)))
        .unwrap_or_default();
    let min = if function == WindowFunction::Linear {
        1.0
    } else {
        f64::MIN_POSITIVE
    };
    (width.is_finite() && center.is_finite() && width >= min).then_some(Window {
        center,
        width,
        function,
    })
}

/// The general path: dicom-pixeldata decodes (any syntax it supports), then grey,
/// colour or palette conversion.
fn render_decoded(
    obj: &DefaultDicomObject,
    frame: u32,
    params: &RenderParams,
) -> Result<Image, RenderError> {
    let px = decode_frame(obj, frame)?;
    let (w, h) = (px.columns(), px.rows());
    let n = w as usize * h as usize;
    let data = px
        .frame_data(0)
        .map_err(|e| RenderError::Corrupt(e.to_string()))?;
    let pi = px
        .photometric_interpretation()
        .as_str()
        .trim()
        .to_ascii_uppercase();
    let image = match (px.samples_per_pixel(), pi.as_str()) {
        (1, "PALETTE COLOR") => palette(obj, &px, data, n)?,
        (1, _) => grey(&px, data, n, frame, params.window, pi == "MONOCHROME1")?,
        (3, _) => colour(&px, data, n, &pi)?,
        (s, _) => return Err(RenderError::Unsupported(format!("{s} samples per pixel"))),
    };
    Ok(Image {
        width: w,
        height: h,
        channels: if image.len() == n { 1 } else { 3 },
        pixels: image,
    })
}

/// Stored sample values of a monochrome or palette frame as i32, honouring bits
/// stored and pixel representation.
fn samples(px: &DecodedPixelData<'_>, data: &[u8], n: usize) -> Result<Vec<i32>, RenderError> {
    let bits_stored = u32::from(px.bits_stored()).clamp(1, 32);
    let signed = px.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    // Bits above BitsStored may carry overlays or garbage: mask them, then sign-extend
    // from the stored high bit.
    let fix = |raw: u32| -> i32 {
        if bits_stored >= 32 {
            return raw as i32;
        }
        let v = raw & ((1u32 << bits_stored) - 1);
        if signed && v & (1 << (bits_stored - 1)) != 0 {
            (v | !((1u32 << bits_stored) - 1)) as i32
        } else {
            v as i32
        }
    };
    let bytes_per = usize::from(px.bits_allocated().div_ceil(8));
    if data.len() < n * bytes_per {
        return Err(RenderError::Corrupt(format!(
            "frame has {} bytes of pixel data, {} expected",
            data.len(),
            n * bytes_per
        )));
    }
    Ok(match bytes_per {
        1 => data[..n].iter().map(|&b| fix(u32::from(b))).collect(),
        2 => data[..n * 2]
            .chunks_exact(2)
            .map(|c| fix(u32::from(u16::from_le_bytes([c[0], c[1]]))))
            .collect(),
        4 => data[..n * 4]
            .chunks_exact(4)
            .map(|c| fix(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        b => {
            return Err(RenderError::Unsupported(format!(
                "{} bits allocated",
                b * 8
            )))
        }
    })
}

/// Monochrome: rescale, window, invert for MONOCHROME1.
fn grey(
    px: &DecodedPixelData<'_>,
    data: &[u8],
    n: usize,
    frame: u32,
    window: Option<Window>,
    invert: bool,
) -> Result<Vec<u8>, RenderError> {
    let stored = samples(px, data, n)?;
    let (lo, hi) = stored
        .iter()
        .fold((i32::MAX, i32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    // Per-frame rescale for enhanced multi-frame objects, else the single value.
    let (slope, intercept) = px
        .rescale()
        .ok()
        .and_then(|r| r.get(frame as usize - 1).or(r.first()).copied())
        .map_or((1.0, 0.0), |r| (r.slope, r.intercept));
    let slope = if slope == 0.0 || !slope.is_finite() {
        1.0
    } else {
        slope
    };
    let window = window.or_else(|| header_window(px)).unwrap_or_else(|| {
        // No window anywhere: span the frame's own range so something is visible.
        let (a, b) = (
            f64::from(lo) * slope + intercept,
            f64::from(hi) * slope + intercept,
        );
        let (a, b) = (a.min(b), a.max(b));
        Window {
            center: (a + b) / 2.0 + 0.5,
            width: (b - a + 1.0).max(1.0),
            function: WindowFunction::Linear,
        }
    });
    let map = |v: i32| -> u8 {
        let y = voi(f64::from(v) * slope + intercept, &window);
        if invert {
            255 - y
        } else {
            y
        }
    };
    // A lookup table over the stored range costs at most 64 Ki evaluations for 16-bit
    // data and makes the per-pixel work a subtraction and an index.
    let span = (i64::from(hi) - i64::from(lo) + 1) as usize;
    if span <= 1 << 17 {
        let lut: Vec<u8> = (0..span).map(|i| map(lo + i as i32)).collect();
        Ok(stored.iter().map(|&v| lut[(v - lo) as usize]).collect())
    } else {
        Ok(stored.iter().map(|&v| map(v)).collect())
    }
}

/// First window of the header, with its VOI LUT function.
fn header_window(px: &DecodedPixelData<'_>) -> Option<Window> {
    let wl = px.window().ok().flatten()?.first().copied()?;
    let function = px
        .voi_lut_function()
        .ok()
        .flatten()
        .and_then(|f| f.first().copied())
        .map(|f| match f {
            dicom_pixeldata::VoiLutFunction::Linear => WindowFunction::Linear,
            dicom_pixeldata::VoiLutFunction::LinearExact => WindowFunction::LinearExact,
            dicom_pixeldata::VoiLutFunction::Sigmoid => WindowFunction::Sigmoid,
        })
        .unwrap_or_default();
    let min = if function == WindowFunction::Linear {
        1.0
    } else {
        f64::MIN_POSITIVE
    };
    (wl.width.is_finite() && wl.center.is_finite() && wl.width >= min).then_some(Window {
        center: wl.center,
        width: wl.width,
        function,
    })
}

/// VOI LUT functions of PS3.3 C.11.2.1.2, output range 0-255.
pub fn voi(x: f64, w: &Window) -> u8 {
    let y = match w.function {
        WindowFunction::Linear => {
            let (c, wd) = (w.center - 0.5, w.width - 1.0);
            if x <= c - wd / 2.0 {
                0.0
            } else if x > c + wd / 2.0 {
                255.0
            } else {
                ((x - c) / wd + 0.5) * 255.0
            }
        }
        WindowFunction::LinearExact => ((x - w.center) / w.width + 0.5) * 255.0,
        WindowFunction::Sigmoid => 255.0 / (1.0 + (-4.0 * (x - w.center) / w.width).exp()),
    };
    y.round().clamp(0.0, 255.0) as u8
}

/// Three samples per pixel: RGB as is, YBR_FULL and native YBR_FULL_422 converted.
/// (dicom-pixeldata already turns JPEG/JPEG 2000 colour into RGB and says so.)
fn colour(
    px: &DecodedPixelData<'_>,
    data: &[u8],
    n: usize,
    pi: &str,
) -> Result<Vec<u8>, RenderError> {
    let bytes_per = usize::from(px.bits_allocated().div_ceil(8));
    // 16-bit colour is rare; keep its high byte, which is what a display shows anyway.
    let sample = |i: usize| -> u8 {
        match bytes_per {
            1 => data[i],
            _ => {
                let v = u16::from_le_bytes([data[i * 2], data[i * 2 + 1]]);
                (u32::from(v) >> px.bits_stored().saturating_sub(8).min(8)) as u8
            }
        }
    };
    if bytes_per > 2 {
        return Err(RenderError::Unsupported(format!(
            "{}-bit colour",
            bytes_per * 8
        )));
    }
    if pi == "YBR_FULL_422" {
        // Native 4:2:2: two lumas share one Cb/Cr pair (Y1 Y2 Cb Cr), PS3.5 8.2.1.
        let pairs = n.div_ceil(2);
        if data.len() < pairs * 4 * bytes_per {
            return Err(RenderError::Corrupt("YBR_FULL_422 frame is short".into()));
        }
        let mut out = Vec::with_capacity(n * 3);
        for p in 0..pairs {
            let (y1, y2, cb, cr) = (
                sample(p * 4),
                sample(p * 4 + 1),
                sample(p * 4 + 2),
                sample(p * 4 + 3),
            );
            out.extend_from_slice(&ybr_to_rgb(y1, cb, cr));
            if p * 2 + 1 < n {
                out.extend_from_slice(&ybr_to_rgb(y2, cb, cr));
            }
        }
        return Ok(out);
    }
    if data.len() < n * 3 * bytes_per {
        return Err(RenderError::Corrupt("colour frame is short".into()));
    }
    let planar = px.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst;
    let ybr = pi == "YBR_FULL";
    let mut out = Vec::with_capacity(n * 3);
    for i in 0..n {
        // Planar configuration 1 stores all reds, then greens, then blues.
        let (a, b, c) = if planar {
            (sample(i), sample(n + i), sample(2 * n + i))
        } else {
            (sample(3 * i), sample(3 * i + 1), sample(3 * i + 2))
        };
        if ybr {
            out.extend_from_slice(&ybr_to_rgb(a, b, c));
        } else {
            out.extend_from_slice(&[a, b, c]);
        }
    }
    Ok(out)
}

/// YCbCr (full range, PS3.3 C.7.6.3.1.2) to RGB.
fn ybr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (f32::from(y), f32::from(cb) - 128.0, f32::from(cr) - 128.0);
    let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [
        c(y + 1.402 * cr),
        c(y - 0.344_136 * cb - 0.714_136 * cr),
        c(y + 1.772 * cb),
    ]
}

/// PALETTE COLOR through the red/green/blue lookup tables of the header.
fn palette(
    obj: &InMemDicomObject,
    px: &DecodedPixelData<'_>,
    data: &[u8],
    n: usize,
) -> Result<Vec<u8>, RenderError> {
    let stored = samples(px, data, n)?;
    let lut = |desc: dicom_core::Tag,
               table: dicom_core::Tag|
     -> Result<(i32, Vec<u8>), RenderError> {
        let d: Vec<i32> = obj
            .element_opt(desc)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_int::<i32>().ok())
            .filter(|d| d.len() == 3)
            .ok_or_else(|| RenderError::Unsupported("PALETTE COLOR without a usable LUT descriptor (segmented palettes are not supported)".into()))?;
        let entries = if d[0] == 0 {
            65536
        } else {
            d[0] as usize & 0xFFFF
        };
        let first = d[1];
        let bits = d[2];
        let raw = obj
            .element_opt(table)
            .ok()
            .flatten()
            .and_then(|e| e.to_bytes().ok().map(|b| b.into_owned()))
            .ok_or_else(|| {
                RenderError::Unsupported("PALETTE COLOR without lookup table data".into())
            })?;
        // 16-bit entries keep their high byte; 8-bit tables may be packed in OW words.
        let values: Vec<u8> = if bits > 8 {
            raw.chunks_exact(2)
                .take(entries)
                .map(|c| (u16::from_le_bytes([c[0], c[1]]) >> 8) as u8)
                .collect()
        } else if raw.len() >= entries * 2 {
            raw.chunks_exact(2).take(entries).map(|c| c[0]).collect()
        } else {
            raw.into_iter().take(entries).collect()
        };
        if values.is_empty() {
            return Err(RenderError::Corrupt("empty palette lookup table".into()));
        }
        Ok((first, values))
    };
    let r = lut(
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let g = lut(
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let b = lut(
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    // Values below the first mapped one take the first entry, above the table its last.
    let at =
        |(first, t): &(i32, Vec<u8>), v: i32| t[((v - first).max(0) as usize).min(t.len() - 1)];
    let mut out = Vec::with_capacity(n * 3);
    for &v in &stored {
        out.extend_from_slice(&[at(&r, v), at(&g, v), at(&b, v)]);
    }
    Ok(out)
}

/// Fit `img` into `vw` x `vh`, keeping its aspect: box averaging when shrinking (no
/// aliasing on thumbnails), bilinear when enlarging.
pub fn fit(img: &Image, vw: u32, vh: u32) -> Image {
    let (w, h) = (img.width.max(1), img.height.max(1));
    let scale = (f64::from(vw) / f64::from(w)).min(f64::from(vh) / f64::from(h));
    let ow = ((f64::from(w) * scale).round() as u32).clamp(1, vw);
    let oh = ((f64::from(h) * scale).round() as u32).clamp(1, vh);
    if (ow, oh) == (img.width, img.height) || img.pixels.is_empty() {
        return img.clone();
    }
    let ch = usize::from(img.channels);
    let (wu, hu) = (w as usize, h as usize);
    let src = &img.pixels;
    let mut out = Vec::with_capacity(ow as usize * oh as usize * ch);
    if scale < 1.0 {
        for oy in 0..oh as usize {
            let y0 = oy * hu / oh as usize;
            let y1 = ((oy + 1) * hu / oh as usize).max(y0 + 1).min(hu);
            for ox in 0..ow as usize {
                let x0 = ox * wu / ow as usize;
                let x1 = ((ox + 1) * wu / ow as usize).max(x0 + 1).min(wu);
                let count = ((y1 - y0) * (x1 - x0)) as u32;
                for c in 0..ch {
                    let mut sum = 0u32;
                    for y in y0..y1 {
                        let row = y * wu;
                        for x in x0..x1 {
                            sum += u32::from(src[(row + x) * ch + c]);
                        }
                    }
                    out.push(((sum + count / 2) / count) as u8);
                }
            }
        }
    } else {
        for oy in 0..oh {
            let sy = ((f64::from(oy) + 0.5) / scale - 0.5).clamp(0.0, f64::from(h - 1));
            let (y0, fy) = (sy.floor() as usize, sy.fract());
            let y1 = (y0 + 1).min(hu - 1);
            for ox in 0..ow {
                let sx = ((f64::from(ox) + 0.5) / scale - 0.5).clamp(0.0, f64::from(w - 1));
                let (x0, fx) = (sx.floor() as usize, sx.fract());
                let x1 = (x0 + 1).min(wu - 1);
                for c in 0..ch {
                    let p = |x: usize, y: usize| f64::from(src[(y * wu + x) * ch + c]);
                    let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
                    let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
                    out.push((top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8);
                }
            }
        }
    }
    Image {
        width: ow,
        height: oh,
        channels: img.channels,
        pixels: out,
    }
}
