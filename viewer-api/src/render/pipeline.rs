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
use formats::dicom::ScanSummary;

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
    /// The transfer syntax is decoded, but not this form of it (e.g. colour JPEG-LS).
    #[error("transfer syntax {uid} ({name}) cannot be decoded by this server for {what}")]
    UnsupportedVariant {
        /// UID.
        uid: String,
        /// Human name.
        name: String,
        /// What this image has that the decoder lacks.
        what: String,
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
    open_scanned(bytes).map(|(obj, _)| obj)
}

/// [`open`], also returning what the structural scan learnt (for [`native_plan`]).
pub fn open_scanned(bytes: &[u8]) -> Result<(DefaultDicomObject, ScanSummary), RenderError> {
    // A Cursor is already buffered: no BufReader (and no extra copy) in between.
    let scan =
        formats::dicom::scan_part10(Cursor::new(bytes), bytes.len() as u64, MAX_HEADER_BYTES)
            .map_err(|e| RenderError::Corrupt(e.to_string()))?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(Cursor::new(bytes))
        .map_err(|e| RenderError::Corrupt(e.to_string()))?;
    Ok((obj, scan))
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

/// One decoded frame: its samples in native little-endian layout and what is needed to
/// read them. Made by dicom-pixeldata's decoders or by our JPEG-LS decoder, so rendering
/// and WADO-RS frames do not care which.
#[derive(Debug, Clone)]
pub struct DecodedFrame {
    /// `rows * columns * samples_per_pixel` samples of `bits_allocated / 8` bytes each.
    pub data: Vec<u8>,
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub columns: u32,
    /// 1 (monochrome, palette) or 3 (colour).
    pub samples_per_pixel: u16,
    /// Bits allocated per sample (8, 16 or 32).
    pub bits_allocated: u16,
    /// Bits stored per sample (bits above are masked).
    pub bits_stored: u16,
    /// Pixel Representation 1: two's complement samples.
    pub signed: bool,
    /// Planar Configuration 1: colour planes one after the other.
    pub planar: bool,
    /// Photometric Interpretation, trimmed and upper case (decoded JPEG colour is `RGB`).
    pub photometric: String,
    /// Modality LUT of this frame: (slope, intercept).
    pub rescale: Option<(f64, f64)>,
    /// First window of this frame's header with its VOI LUT function.
    pub window: Option<Window>,
}

impl DecodedFrame {
    /// Bytes one frame must have.
    fn expected_len(&self) -> usize {
        self.rows as usize
            * self.columns as usize
            * usize::from(self.samples_per_pixel)
            * usize::from(self.bits_allocated.div_ceil(8))
    }

    /// From dicom-pixeldata's result for one frame.
    fn from_pixeldata(px: DecodedPixelData<'_>) -> Result<Self, RenderError> {
        let window = px.window().ok().flatten().and_then(|w| w.first().copied());
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
        let mut frame = DecodedFrame {
            rows: px.rows(),
            columns: px.columns(),
            samples_per_pixel: px.samples_per_pixel(),
            bits_allocated: px.bits_allocated(),
            bits_stored: px.bits_stored(),
            signed: px.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed,
            planar: px.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst,
            photometric: px
                .photometric_interpretation()
                .as_str()
                .trim()
                .to_ascii_uppercase(),
            rescale: px
                .rescale()
                .ok()
                .and_then(|r| r.first().copied())
                .map(|r| (r.slope, r.intercept)),
            window: window.and_then(|w| checked_window(w.center, w.width, function)),
            data: Vec::new(),
        };
        // decode_pixel_data_frame has cropped the data to the frame already.
        frame.data = px.into_data();
        frame.check_len()?;
        Ok(frame)
    }

    /// Refuse a frame shorter than its header says; drop any excess (odd-length padding).
    pub(crate) fn check_len(&mut self) -> Result<(), RenderError> {
        let want = self.expected_len();
        if self.data.len() < want {
            return Err(RenderError::Corrupt(format!(
                "frame has {} bytes of pixel data, {want} expected",
                self.data.len()
            )));
        }
        self.data.truncate(want);
        Ok(())
    }
}

/// A window if it is usable (PS3.3 C.11.2.1.2: width >= 1 for LINEAR, > 0 otherwise).
pub(crate) fn checked_window(center: f64, width: f64, function: WindowFunction) -> Option<Window> {
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

/// The transfer syntax UID of `obj`'s file, without padding.
pub(crate) fn transfer_syntax(obj: &DefaultDicomObject) -> &str {
    obj.meta().transfer_syntax().trim_end_matches('\0')
}

/// Decode frame `frame` (1-based) to native little-endian samples. Shared by rendering
/// and WADO-RS frames. JPEG-LS is decoded by `super::jpegls` (pure Rust), everything
/// else by dicom-pixeldata.
pub fn decode_frame(obj: &DefaultDicomObject, frame: u32) -> Result<DecodedFrame, RenderError> {
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
    let ts_uid = transfer_syntax(obj);
    if super::jpegls::is_jpegls(ts_uid) {
        return super::jpegls::decode_frame(obj, frame);
    }
    // Asking the registry first gives the client the syntax's name, where
    // dicom-pixeldata's error would only say "unsupported".
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
    match TransferSyntaxRegistry.get(ts_uid) {
        Some(ts) if ts.can_decode_all() => {}
        found => {
            return Err(RenderError::UnsupportedTransferSyntax {
                name: found.map_or_else(|| "unknown".to_string(), |t| t.name().to_string()),
                uid: ts_uid.to_string(),
            })
        }
    }
    let px = obj
        .decode_pixel_data_frame(frame - 1)
        .map_err(|e| RenderError::Corrupt(e.to_string()))?;
    DecodedFrame::from_pixeldata(px)
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

/// What the fast path needs from a header to render any frame of an uncompressed
/// monochrome object from its raw little-endian samples.
#[derive(Debug, Clone, PartialEq)]
pub struct GreyLayout {
    rows: u32,
    cols: u32,
    /// Bits allocated: 8 or 16.
    alloc: u32,
    stored_bits: u32,
    signed: bool,
    slope: f64,
    intercept: f64,
    /// MONOCHROME1.
    invert: bool,
    /// The header's first window.
    window: Option<Window>,
    frames: u32,
}

impl GreyLayout {
    /// Bytes of one frame.
    fn frame_bytes(&self) -> usize {
        self.rows as usize * self.cols as usize * (self.alloc as usize / 8)
    }

    fn check_frame(&self, frame: u32) -> Result<(), RenderError> {
        if frame == 0 || frame > self.frames {
            return Err(RenderError::NoSuchFrame {
                requested: frame,
                available: self.frames,
            });
        }
        Ok(())
    }
}

/// The layout of `obj` if the fast path applies: an uncompressed monochrome object with
/// one rescale for all frames and no LUT sequences. `None`: the general path.
fn grey_layout(obj: &DefaultDicomObject) -> Option<GreyLayout> {
    if !NATIVE_LE.contains(&transfer_syntax(obj)) {
        return None;
    }
    let pi = obj
        .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_ascii_uppercase()));
    let invert = match pi.as_deref() {
        Some("MONOCHROME1") => true,
        Some("MONOCHROME2") => false,
        _ => return None,
    };
    let rows = header_int(obj, tags::ROWS)?;
    let cols = header_int(obj, tags::COLUMNS)?;
    let alloc = header_int(obj, tags::BITS_ALLOCATED)?;
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
        return None;
    }
    Some(GreyLayout {
        rows,
        cols,
        alloc,
        stored_bits,
        signed: header_int(obj, tags::PIXEL_REPRESENTATION) == Some(1),
        slope: header_f64s(obj, tags::RESCALE_SLOPE)
            .and_then(|v| v.first().copied())
            .filter(|s| *s != 0.0 && s.is_finite())
            .unwrap_or(1.0),
        intercept: header_f64s(obj, tags::RESCALE_INTERCEPT)
            .and_then(|v| v.first().copied())
            .filter(|i| i.is_finite())
            .unwrap_or(0.0),
        invert,
        window: header_window_of(obj),
        frames: number_of_frames(obj),
    })
}

/// The raw samples of one frame.
enum Samples<'a> {
    Bytes(&'a [u8]),
    Words(&'a [u16]),
    /// 16-bit samples as little-endian byte pairs (OB in implicit VR, or the file).
    BytePairs(&'a [u8]),
}

/// The fast path of the common case (CT, MR, CR, DX...): an uncompressed monochrome
/// frame read in place from the parsed object (no decoded copy). `None` when the object
/// needs the general path (compressed, colour, per-frame functional groups, LUT
/// sequences, odd layouts).
fn native_grey(
    obj: &DefaultDicomObject,
    frame: u32,
    params: &RenderParams,
) -> Result<Option<Image>, RenderError> {
    use dicom_core::value::{PrimitiveValue, Value};
    let Some(layout) = grey_layout(obj) else {
        return Ok(None);
    };
    let Some(pixel) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Err(RenderError::NoPixelData);
    };
    layout.check_frame(frame)?;
    let n = layout.rows as usize * layout.cols as usize;
    let start = n * (frame as usize - 1);
    let short = || RenderError::Corrupt(format!("frame {frame} lies beyond the pixel data"));
    let data = match (pixel.value(), layout.alloc) {
        (Value::Primitive(PrimitiveValue::U8(b)), 8) => {
            Samples::Bytes(b.get(start..start + n).ok_or_else(short)?)
        }
        (Value::Primitive(PrimitiveValue::U16(w)), 16) => {
            Samples::Words(w.get(start..start + n).ok_or_else(short)?)
        }
        (Value::Primitive(PrimitiveValue::U8(b)), 16) => {
            Samples::BytePairs(b.get(start * 2..(start + n) * 2).ok_or_else(short)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(grey_samples(&layout, data, params)))
}

/// Rescale, window and invert one frame through one lookup table from every possible
/// stored value to the output byte, then one pass over the samples.
fn grey_samples(layout: &GreyLayout, data: Samples<'_>, params: &RenderParams) -> Image {
    let GreyLayout {
        stored_bits,
        signed,
        slope,
        intercept,
        invert,
        ..
    } = *layout;
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
    let window = match params.window.or(layout.window) {
        Some(w) => w,
        None => {
            // No window anywhere: span the frame's own range so something is visible.
            let (lo, hi) = match &data {
                Samples::Bytes(b) => min_max(b.iter().map(|&r| value(u32::from(r)))),
                Samples::Words(w) => min_max(w.iter().map(|&r| value(u32::from(r)))),
                Samples::BytePairs(b) => min_max(
                    b.chunks_exact(2)
                        .map(|c| value(u32::from(u16::from_le_bytes([c[0], c[1]])))),
                ),
            };
            range_window(lo, hi, slope, intercept)
        }
    };
    // One entry per stored value (at most 2^16 evaluations), indexed by the raw sample
    // masked to the stored bits: the index of a u8/u16 stays below 2^16, so the lookups
    // need no bounds check, and only the stored range of the table (4 KiB for 12 bits)
    // is ever touched, which stays in L1 cache.
    let index_mask = mask.min(0xFFFF) as usize;
    let mut table = [0u8; 1 << 16];
    for (raw, entry) in (0..=index_mask as u32).zip(table.iter_mut()) {
        let y = voi(f64::from(value(raw)) * slope + intercept, &window);
        *entry = if invert { 255 - y } else { y };
    }
    let pixels = match data {
        Samples::Bytes(b) => b
            .iter()
            .map(|&r| table[usize::from(r) & index_mask])
            .collect(),
        Samples::Words(w) => {
            let mut out = vec![0u8; w.len()];
            for (o, r) in out.iter_mut().zip(w) {
                *o = table[usize::from(*r) & index_mask];
            }
            out
        }
        // Written into a zeroed vector: a third faster than collecting the iterator.
        Samples::BytePairs(b) => {
            let mut out = vec![0u8; b.len() / 2];
            for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = table[usize::from(u16::from_le_bytes([c[0], c[1]])) & index_mask];
            }
            out
        }
    };
    Image {
        width: layout.cols,
        height: layout.rows,
        channels: 1,
        pixels,
    }
}

/// Where the samples of an uncompressed monochrome original lie in its file, with its
/// [`GreyLayout`]: learnt from the first full parse of an original, then used to render
/// straight from the file's bytes, without the structural scan and the parse (a fifth of
/// the CPU of a rendered CT slice before).
#[derive(Debug, Clone, PartialEq)]
pub struct NativePlan {
    layout: GreyLayout,
    /// Offset of the pixel data value in the file.
    offset: usize,
}

/// Where the pixel data value of a file in implicit or explicit VR little endian
/// begins: after the meta group (its group length says where it ends) and the
/// `header_bytes` the scan walked, which end just after the pixel data element's header. `None` for anything
/// unusual (no group length, deflate, undefined length): the caller parses instead.
fn pixel_value_offset(bytes: &[u8], scan: &ScanSummary) -> Option<usize> {
    let ts = scan.transfer_syntax_uid.trim_end_matches('\0');
    let explicit = match ts {
        "1.2.840.10008.1.2" => false,
        "1.2.840.10008.1.2.1" => true,
        _ => return None,
    };
    if !scan.has_pixel_data {
        return None;
    }
    // The meta group starts at 132 with (0002,0000) UL: its length says where it ends.
    let meta = bytes.get(132..144)?;
    if meta[..8] != [0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0] {
        return None;
    }
    let group_len = u32::from_le_bytes([meta[8], meta[9], meta[10], meta[11]]) as usize;
    // The scan stops just after the pixel data element's header: the value starts there.
    let value = 144usize
        .checked_add(group_len)?
        .checked_add(usize::try_from(scan.header_bytes).ok()?)?;
    let head = bytes.get(value.checked_sub(if explicit { 12 } else { 8 })?..value)?;
    if head[..4] != [0xE0, 0x7F, 0x10, 0x00] {
        return None;
    }
    if explicit && &head[4..6] != b"OW" && &head[4..6] != b"OB" {
        return None;
    }
    let l = &head[head.len() - 4..];
    let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
    (len != u32::MAX && value.checked_add(len as usize)? <= bytes.len()).then_some(value)
}

/// The plan of a parsed original, if the fast path applies and its pixel data is where
/// the scan says, checked against what the parser read (so a plan can never render
/// other bytes than a parse would).
pub fn native_plan(
    obj: &DefaultDicomObject,
    bytes: &[u8],
    scan: &ScanSummary,
) -> Option<NativePlan> {
    let layout = grey_layout(obj)?;
    let offset = pixel_value_offset(bytes, scan)?;
    let need = layout.frame_bytes().checked_mul(layout.frames as usize)?;
    let file = bytes.get(offset..offset.checked_add(need)?)?;
    let parsed = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()?
        .to_bytes()
        .ok()?;
    (parsed.get(..need)? == file).then_some(NativePlan { layout, offset })
}

/// Render frame `frame` of the original in `bytes` with its plan: the samples are read
/// from the file in place.
pub fn render_planned(
    plan: &NativePlan,
    bytes: &[u8],
    frame: u32,
    params: &RenderParams,
) -> Result<Image, RenderError> {
    let layout = &plan.layout;
    layout.check_frame(frame)?;
    let size = layout.frame_bytes();
    let start = plan.offset + size * (frame as usize - 1);
    let data = bytes
        .get(start..start + size)
        .ok_or_else(|| RenderError::Corrupt(format!("frame {frame} lies beyond the file")))?;
    let samples = if layout.alloc == 8 {
        Samples::Bytes(data)
    } else {
        Samples::BytePairs(data)
    };
    let image = grey_samples(layout, samples, params);
    Ok(match params.viewport {
        Some((vw, vh)) => fit(&image, vw, vh),
        None => image,
    })
}

/// A linear window spanning stored values `lo..=hi` after the rescale (for frames whose
/// header names no window).
fn range_window(lo: i32, hi: i32, slope: f64, intercept: f64) -> Window {
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
    checked_window(center, width, function)
}

/// The general path: any transfer syntax we decode (dicom-pixeldata, or JPEG-LS), then
/// grey, colour or palette conversion.
fn render_decoded(
    obj: &DefaultDicomObject,
    frame: u32,
    params: &RenderParams,
) -> Result<Image, RenderError> {
    let px = decode_frame(obj, frame)?;
    let (w, h) = (px.columns, px.rows);
    let n = w as usize * h as usize;
    let image = match (px.samples_per_pixel, px.photometric.as_str()) {
        (1, "PALETTE COLOR") => palette(obj, &px, n)?,
        (1, pi) => grey(&px, n, params.window, pi == "MONOCHROME1")?,
        (3, _) => colour(&px, n)?,
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
fn samples(px: &DecodedFrame, n: usize) -> Result<Vec<i32>, RenderError> {
    let data = &px.data;
    let bits_stored = u32::from(px.bits_stored).clamp(1, 32);
    let signed = px.signed;
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
    let bytes_per = usize::from(px.bits_allocated.div_ceil(8));
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
    px: &DecodedFrame,
    n: usize,
    window: Option<Window>,
    invert: bool,
) -> Result<Vec<u8>, RenderError> {
    let stored = samples(px, n)?;
    let (lo, hi) = stored
        .iter()
        .fold((i32::MAX, i32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    // Per-frame rescale for enhanced multi-frame objects, else the single value.
    let (slope, intercept) = px.rescale.unwrap_or((1.0, 0.0));
    let slope = if slope == 0.0 || !slope.is_finite() {
        1.0
    } else {
        slope
    };
    // No window anywhere: span the frame's own range so something is visible.
    let window = window
        .or(px.window)
        .unwrap_or_else(|| range_window(lo, hi, slope, intercept));
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
fn colour(px: &DecodedFrame, n: usize) -> Result<Vec<u8>, RenderError> {
    let (data, pi) = (&px.data, px.photometric.as_str());
    let bytes_per = usize::from(px.bits_allocated.div_ceil(8));
    // 16-bit colour is rare; keep its high byte, which is what a display shows anyway.
    let sample = |i: usize| -> u8 {
        match bytes_per {
            1 => data[i],
            _ => {
                let v = u16::from_le_bytes([data[i * 2], data[i * 2 + 1]]);
                (u32::from(v) >> px.bits_stored.saturating_sub(8).min(8)) as u8
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
    let planar = px.planar;
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
fn palette(obj: &InMemDicomObject, px: &DecodedFrame, n: usize) -> Result<Vec<u8>, RenderError> {
    let stored = samples(px, n)?;
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
