//! The printable PDF of a signed report version (A4, Simplified Chinese).
//!
//! The township prints this and files it, so it carries everything a paper report needs:
//! the patient and exam identifiers, the text field by field, the critical-finding banner,
//! the status (初诊 / 终审 / 修正 with the amendment reason), who read and signed it and
//! when (China Standard Time), and the electronic signature with its verification result.
//!
//! Why it is written by hand on `pdf-writer` + `subsetter` rather than a higher-level crate:
//! a CJK font is 5-20 MB, so only the glyphs actually used may be embedded (a subset), and
//! the text must stay extractable (a `ToUnicode` map) for search, copy and screen readers.
//! Those two crates are what Typst and krilla build on, compile in seconds and need no
//! shaping engine: Chinese needs no shaping beyond the `cmap` lookup, so one font,
//! one glyph per character and a simple line breaker (at character boundaries, with the
//! usual Chinese rules for punctuation) are all a report needs.
//!
//! An ECG report also carries a rhythm strip ([`Tracing`], made by [`ecg_strip`]) as an
//! image at true paper scale, so the township can measure it with an ECG ruler.

pub mod ecg_strip;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::write::ZlibEncoder;
use flate2::Compression;
use formats::report::{
    payload_sha256, verify, ExamRef, ReportError, ReportPayload, ReportStatus, SignedReport,
    VerifyingKey,
};
use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, TextRenderingMode, UnicodeCmap};
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use ttf_parser::{Face, GlyphId, RawFace, Tag};

/// Where [`ReportFont::load`] looks when given no path, in order (Debian packages
/// `fonts-wqy-microhei`, `fonts-noto-cjk`, `fonts-wqy-zenhei`).
pub const DEFAULT_FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
];

/// Why a printout could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PrintoutError {
    /// No path was given and none of [`DEFAULT_FONT_PATHS`] exists.
    #[error("no CJK font found; looked for {0}")]
    NoFont(String),
    /// The font file could not be read.
    #[error("reading font {path}: {source}")]
    FontIo {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a usable font for Chinese reports.
    #[error("font {path}: {reason}")]
    BadFont {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The font could not be subset for embedding.
    #[error("subsetting font {path}: {reason}")]
    Subset {
        /// The file.
        path: PathBuf,
        /// The subsetter's error.
        reason: String,
    },
    /// Compressing a PDF stream failed.
    #[error("compressing a PDF stream: {0}")]
    Compress(#[source] std::io::Error),
    /// The tracing cannot be placed: its pixels do not match its size, or it does not
    /// fit the page at true scale (which is the point of printing it).
    #[error("tracing: {0}")]
    Tracing(String),
}

/// A font loaded for printing: the whole file (a collection is fine, face 0 is used).
///
/// Load it once and keep it: reading a CJK font is a few MB of I/O, rendering only reads it.
pub struct ReportFont {
    data: Vec<u8>,
    index: u32,
    path: PathBuf,
    /// PostScript name, reduced to characters a PDF name needs no escaping for.
    postscript_name: String,
    /// CFF outlines (OpenType/CFF, e.g. Noto CJK) rather than TrueType `glyf` (WenQuanYi):
    /// the two are embedded differently in a PDF.
    cff: bool,
}

impl fmt::Debug for ReportFont {
    // By hand: the derived form would print megabytes of font data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportFont")
            .field("path", &self.path)
            .field("index", &self.index)
            .field("postscript_name", &self.postscript_name)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl ReportFont {
    /// Load from a path, or when `None` from the first of [`DEFAULT_FONT_PATHS`] that exists.
    /// TrueType collections (`.ttc`) are handled: face 0 is used.
    pub fn load(path: Option<&Path>) -> Result<Self, PrintoutError> {
        match path {
            Some(path) => Self::from_file(path),
            None => {
                let found = DEFAULT_FONT_PATHS
                    .iter()
                    .map(Path::new)
                    .find(|p| p.is_file());
                match found {
                    Some(path) => Self::from_file(path),
                    None => Err(PrintoutError::NoFont(DEFAULT_FONT_PATHS.join(", "))),
                }
            }
        }
    }

    fn from_file(path: &Path) -> Result<Self, PrintoutError> {
        let data = std::fs::read(path).map_err(|source| PrintoutError::FontIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(data, path.to_path_buf())
    }

    /// Use font data already in memory (`origin` names it in errors). In a collection the
    /// Simplified Chinese face is used if one is recognisable by its PostScript name
    /// (Noto Sans CJK puts Japanese first, whose glyph forms differ for some characters),
    /// else face 0 (WenQuanYi: 0 is the proportional face, 1 the monospaced one).
    pub fn from_bytes(data: Vec<u8>, origin: PathBuf) -> Result<Self, PrintoutError> {
        let index = simplified_chinese_face(&data);
        let bad = |reason: String| PrintoutError::BadFont {
            path: origin.clone(),
            reason,
        };
        let face = Face::parse(&data, index).map_err(|e| bad(e.to_string()))?;
        let cff = if face.raw_face().table(Tag::from_bytes(b"glyf")).is_some() {
            false
        } else if face.raw_face().table(Tag::from_bytes(b"CFF ")).is_some() {
            true
        } else {
            // CFF2 (variable) fonts would need the subsetter's variable-font feature.
            return Err(bad("neither TrueType nor CFF outlines".into()));
        };
        // A Latin-only font would print every Chinese character as an empty box: refuse it
        // at load time rather than produce an unreadable report.
        for c in ['中', '检', '查', '报', '告'] {
            if face.glyph_index(c).is_none() {
                return Err(bad(format!("no glyph for {c:?}: not a Chinese font")));
            }
        }
        let postscript_name = postscript_name(&face)
            .map(|n| {
                n.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(60)
                    .collect::<String>()
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "CJKFont".to_string());
        Ok(ReportFont {
            data,
            index,
            path: origin,
            postscript_name,
            cff,
        })
    }

    /// Index of the face used within the file (0 unless a collection).
    pub fn face_index(&self) -> u32 {
        self.index
    }

    /// PostScript name of the face used.
    pub fn postscript_name(&self) -> &str {
        &self.postscript_name
    }

    /// Where the font came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn face(&self) -> Result<Face<'_>, PrintoutError> {
        Face::parse(&self.data, self.index).map_err(|e| PrintoutError::BadFont {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

fn postscript_name(face: &Face) -> Option<String> {
    face.names()
        .into_iter()
        .filter(|n| n.name_id == ttf_parser::name_id::POST_SCRIPT_NAME)
        .find_map(|n| n.to_string())
}

/// The face of a collection to use: the first proportional face whose PostScript name
/// marks it Simplified Chinese (`NotoSansCJKsc-Regular`, `SourceHanSansCN-Regular`),
/// else 0. A single font is face 0.
fn simplified_chinese_face(data: &[u8]) -> u32 {
    let count = ttf_parser::fonts_in_collection(data).unwrap_or(1);
    (0..count)
        .find(|&i| {
            Face::parse(data, i)
                .ok()
                .and_then(|f| postscript_name(&f))
                .is_some_and(|name| {
                    let name = name.to_ascii_lowercase();
                    let family = name.split('-').next().unwrap_or("");
                    !family.contains("mono")
                        && ["sc", "cn", "gb"].iter().any(|t| family.ends_with(t))
                })
        })
        .unwrap_or(0)
}

/// Result of checking a report version's signature, as the printout states it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum VerificationState {
    /// The signature verifies with a trusted key.
    Valid {
        /// Id of the key that verified it.
        key_id: String,
    },
    /// It does not: printed prominently so nobody acts on an unverified paper.
    Invalid {
        /// Why, in words for the reader of the paper.
        reason: String,
    },
}

impl VerificationState {
    /// Verify `signed` against the trusted keys and state the result in Chinese.
    pub fn check(signed: &SignedReport, trusted: &[VerifyingKey]) -> Self {
        match verify(signed, trusted) {
            Ok(_) => VerificationState::Valid {
                key_id: signed.key_id.clone(),
            },
            Err(e) => VerificationState::Invalid {
                reason: match e {
                    ReportError::UnknownKey(k) => format!("签名密钥 {k} 不是可信密钥"),
                    ReportError::BadSignature => "签名与报告内容不符（内容可能被篡改）".into(),
                    ReportError::NotCanonical(d) => format!("报告内容不是规范格式（{d}）"),
                    ReportError::Malformed(d) => format!("报告格式错误（{d}）"),
                },
            },
        }
    }

    /// Whether the signature verified.
    pub fn is_valid(&self) -> bool {
        matches!(self, VerificationState::Valid { .. })
    }
}

/// Everything the printout shows: the signed version and the context the hub adds.
#[derive(Debug, Clone, Copy)]
pub struct Printout<'a> {
    /// The payload of the version (parsed from `signed.payload`).
    pub payload: &'a ReportPayload,
    /// The version as signed.
    pub signed: &'a SignedReport,
    /// Result of verifying `signed`.
    pub verification: &'a VerificationState,
    /// Name of the reading centre, e.g. "县人民医院 区域诊断中心".
    pub hospital_name: &'a str,
    /// Name of the township site that sent the exam.
    pub site_name: &'a str,
    /// `(field key, Chinese label)` in template order, e.g. `("findings", "检查所见")`;
    /// fields of the content not listed are printed after, labelled with their key.
    pub field_labels: &'a [(String, String)],
    /// Short lines about earlier versions (e.g. "v1 初诊 王医生 2026-11-23 10:02").
    pub history: &'a [String],
    /// An image printed under the report fields at true paper scale (for an ECG, a
    /// rhythm strip); `None` for none.
    pub tracing: Option<Tracing<'a>>,
}

/// Widest tracing that fits between the page margins, mm (about 170 mm on A4): a
/// tracing is never scaled to fit, so a wider one is refused.
pub const TRACING_MAX_WIDTH_MM: f64 = (CONTENT_W as f64) * MM_PER_PT;
/// Tallest tracing accepted, mm: anything taller is not a strip, and this always fits
/// on a page of its own with its caption.
pub const TRACING_MAX_HEIGHT_MM: f64 = 150.0;
const MM_PER_PT: f64 = 25.4 / 72.0;

/// A raster image printed at a given size on paper, with a caption under it.
#[derive(Clone, Copy)]
pub struct Tracing<'a> {
    /// 8-bit RGB, row by row from the top, no padding: `width_px × height_px × 3` bytes.
    pub rgb: &'a [u8],
    /// Width in pixels.
    pub width_px: u32,
    /// Height in pixels.
    pub height_px: u32,
    /// Printed width, mm (at most [`TRACING_MAX_WIDTH_MM`]). For an ECG it must be the
    /// width the image was drawn for, so that its grid measures 1 mm on paper.
    pub width_mm: f64,
    /// Printed height, mm (at most [`TRACING_MAX_HEIGHT_MM`]).
    pub height_mm: f64,
    /// Printed under the image, e.g. "II 导联节律条 25 mm/s 10 mm/mV".
    pub caption: &'a str,
}

impl fmt::Debug for Tracing<'_> {
    // By hand: the derived form would print every pixel.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("width_px", &self.width_px)
            .field("height_px", &self.height_px)
            .field("width_mm", &self.width_mm)
            .field("height_mm", &self.height_mm)
            .field("caption", &self.caption)
            .field("rgb_bytes", &self.rgb.len())
            .finish()
    }
}

impl Tracing<'_> {
    /// Refuse what cannot be printed faithfully: pixel data of the wrong length, or a
    /// size that does not fit the page at true scale.
    fn check(&self) -> Result<(), PrintoutError> {
        let bad = |reason: String| Err(PrintoutError::Tracing(reason));
        let expected = u64::from(self.width_px) * u64::from(self.height_px) * 3;
        if self.width_px == 0 || self.height_px == 0 {
            return bad("an image without pixels".into());
        }
        if self.rgb.len() as u64 != expected {
            return bad(format!(
                "{} bytes of RGB for {}x{} pixels (expected {expected})",
                self.rgb.len(),
                self.width_px,
                self.height_px
            ));
        }
        // i32 is what a PDF integer can hold; no real tracing comes near it.
        if i32::try_from(self.width_px).is_err() || i32::try_from(self.height_px).is_err() {
            return bad("too many pixels".into());
        }
        // A hair of tolerance: a width computed as exactly the maximum may round up.
        let fits = |v: f64, max: f64| v.is_finite() && v > 0.0 && v <= max + 1e-6;
        if !fits(self.width_mm, TRACING_MAX_WIDTH_MM)
            || !fits(self.height_mm, TRACING_MAX_HEIGHT_MM)
        {
            return bad(format!(
                "{} x {} mm does not fit {TRACING_MAX_WIDTH_MM:.1} x {TRACING_MAX_HEIGHT_MM} mm at true scale",
                self.width_mm, self.height_mm
            ));
        }
        Ok(())
    }
}

/// The kind of exam a report is about, from [`ExamRef::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExamKind {
    /// `imaging`.
    Imaging,
    /// `ecg`.
    Ecg,
    /// `lab`.
    Lab,
    /// Anything else (printed and exported generically).
    Other,
}

impl ExamKind {
    /// Classify the exam kind string.
    pub fn of(exam: &ExamRef) -> Self {
        match exam.kind.to_ascii_lowercase().as_str() {
            "imaging" => ExamKind::Imaging,
            "ecg" => ExamKind::Ecg,
            "lab" => ExamKind::Lab,
            _ => ExamKind::Other,
        }
    }
}

/// The report's title by exam kind and modality, e.g. "CT 检查报告", "心电图报告".
pub fn report_title(exam: &ExamRef) -> String {
    match ExamKind::of(exam) {
        ExamKind::Ecg => "心电图报告".into(),
        ExamKind::Lab => "检验报告".into(),
        ExamKind::Imaging => {
            let modality = exam.modality.as_deref().unwrap_or("").trim().to_uppercase();
            match modality.as_str() {
                "CT" => "CT 检查报告".into(),
                "MR" => "MR 检查报告".into(),
                "CR" | "DX" | "DR" | "RF" => "X 线检查报告".into(),
                "MG" => "乳腺 X 线检查报告".into(),
                "US" => "超声检查报告".into(),
                "XA" => "血管造影检查报告".into(),
                "NM" => "核医学检查报告".into(),
                "PT" => "PET 检查报告".into(),
                "ES" => "内镜检查报告".into(),
                _ => "影像检查报告".into(),
            }
        }
        ExamKind::Other => "检查报告".into(),
    }
}

/// Chinese name of a status, as printed.
pub fn status_label(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Preliminary => "初诊",
        ReportStatus::Final => "终审",
        ReportStatus::Amended => "修正",
    }
}

/// China Standard Time (UTC+8, no daylight saving) broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CstTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

/// Milliseconds since the Unix epoch → China Standard Time. Done by hand (days to civil
/// date, Howard Hinnant's algorithm): a fixed +8 h offset needs no time-zone database.
pub(crate) fn cst(ms: i64) -> CstTime {
    let local_ms = ms.saturating_add(8 * 3_600_000);
    let days = local_ms.div_euclid(86_400_000);
    let ms_of_day = local_ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    CstTime {
        year,
        month: month as u32,
        day: day as u32,
        hour: (ms_of_day / 3_600_000) as u32,
        minute: (ms_of_day / 60_000 % 60) as u32,
        second: (ms_of_day / 1000 % 60) as u32,
        millis: (ms_of_day % 1000) as u32,
    }
}

/// A hub timestamp (ms since the epoch) as printed: `YYYY-MM-DD HH:MM`, China Standard Time.
pub fn format_cst(ms: i64) -> String {
    let t = cst(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

/// A hub timestamp as ISO 8601 with the `+08:00` offset (milliseconds when not zero).
pub fn iso8601_cst(ms: i64) -> String {
    let t = cst(ms);
    let frac = if t.millis == 0 {
        String::new()
    } else {
        format!(".{:03}", t.millis)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}+08:00",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// The patient's name for print: the ideographic group of a DICOM PN if present, else
/// the alphabetic one.
pub(crate) fn patient_display_name(exam: &ExamRef) -> String {
    exam.patient_name
        .as_deref()
        .and_then(|pn| crate::fhir::PersonName::parse(pn).display())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Page geometry (PDF points, origin bottom left).

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN_X: f32 = 56.0;
const MARGIN_TOP: f32 = 54.0;
/// Bottom of the text area; the footer lives below it.
const MARGIN_BOTTOM: f32 = 64.0;
const CONTENT_W: f32 = PAGE_W - 2.0 * MARGIN_X;

const BODY: f32 = 11.0;
const BODY_LH: f32 = 18.0;
const SMALL: f32 = 9.0;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rgb(f32, f32, f32);

const INK: Rgb = Rgb(0.08, 0.08, 0.08);
const GREY: Rgb = Rgb(0.4, 0.4, 0.4);
const RULE: Rgb = Rgb(0.55, 0.55, 0.55);
const RED: Rgb = Rgb(0.78, 0.06, 0.06);
const GREEN: Rgb = Rgb(0.0, 0.45, 0.2);
const WHITE: Rgb = Rgb(1.0, 1.0, 1.0);
const PALE: Rgb = Rgb(0.94, 0.95, 0.97);

/// How a run of text looks: size, line height, weight and colour.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Style {
    size: f32,
    lh: f32,
    bold: bool,
    color: Rgb,
}

const fn style(size: f32, lh: f32, bold: bool, color: Rgb) -> Style {
    Style {
        size,
        lh,
        bold,
        color,
    }
}

const BODY_STYLE: Style = style(BODY, BODY_LH, false, INK);

/// One drawing operation, laid out before the PDF is written: the glyphs used must be
/// known before the font subset (and with it the glyph numbering) exists.
#[derive(Debug, Clone)]
enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        bold: bool,
        color: Rgb,
        text: String,
    },
    Fill {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        color: Rgb,
    },
    Line {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        width: f32,
        color: Rgb,
    },
    /// The [`Tracing`] image with its lower left corner at `(x, y)`, `w` × `h` points.
    Image { x: f32, y: f32, w: f32, h: f32 },
}

/// Glyph lookups and widths on the font's face.
struct Metrics<'f> {
    face: Face<'f>,
    upem: f32,
    /// What a character without a glyph is printed as: '□' if the font has it.
    replacement: char,
}

impl<'f> Metrics<'f> {
    fn new(face: Face<'f>) -> Self {
        let upem = f32::from(face.units_per_em().max(1));
        let replacement = if face.glyph_index('□').is_some() {
            '□'
        } else {
            '?'
        };
        Metrics {
            face,
            upem,
            replacement,
        }
    }

    /// The text as it will be drawn: tabs become spaces, control and invisible format
    /// characters go, and characters the font lacks become the replacement box, so what
    /// is measured, drawn and extracted agree (and nothing silently vanishes).
    fn sanitize(&self, text: &str) -> String {
        text.chars()
            .filter_map(|c| match c {
                '\t' => Some(' '),
                c if c.is_control() => None,
                '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{206F}' | '\u{FE00}'..='\u{FE0F}' => None,
                '\u{FEFF}' => None,
                c if self.face.glyph_index(c).is_some() => Some(c),
                _ => Some(self.replacement),
            })
            .collect()
    }

    fn glyph(&self, c: char) -> GlyphId {
        self.face.glyph_index(c).unwrap_or(GlyphId(0))
    }

    fn advance(&self, c: char) -> f32 {
        f32::from(self.face.glyph_hor_advance(self.glyph(c)).unwrap_or(0))
    }

    fn width(&self, text: &str, size: f32) -> f32 {
        text.chars().map(|c| self.advance(c)).sum::<f32>() * size / self.upem
    }

    /// Break one paragraph (no newlines; sanitized) into lines no wider than `width`.
    fn wrap(&self, text: &str, size: f32, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        let mut line_w = 0.0;
        for unit in break_units(text) {
            let unit_w = self.width(unit, size);
            let ink_w = self.width(unit.trim_end(), size);
            if !line.is_empty() && line_w + ink_w > width {
                lines.push(line.trim_end().to_string());
                line.clear();
                line_w = 0.0;
            }
            if line.is_empty() && ink_w > width {
                // A run with no break opportunity wider than the line (a long number or
                // URL): cut it at character boundaries rather than run off the page.
                for c in unit.chars() {
                    let w = self.advance(c) * size / self.upem;
                    if !line.is_empty() && line_w + w > width && !c.is_whitespace() {
                        lines.push(line.trim_end().to_string());
                        line.clear();
                        line_w = 0.0;
                    }
                    line.push(c);
                    line_w += w;
                }
                continue;
            }
            line.push_str(unit);
            line_w += unit_w;
        }
        let last = line.trim_end();
        if !last.is_empty() || lines.is_empty() {
            lines.push(last.to_string());
        }
        lines
    }
}

/// Han characters, kana, CJK punctuation and full-width forms: a line may break before or
/// after any of them (Chinese has no spaces between words).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x2FDF | 0x3000..=0x303F | 0x3040..=0x9FFF | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF)
}

/// Characters that must not begin a line (closing punctuation; 行首禁则).
fn no_line_start(c: char) -> bool {
    "，。、；：？！）】》」』”’〕〉〗…‥·％,.;:?!)]}%»".contains(c)
}

/// Characters that must not end a line (opening punctuation; 行尾禁则).
fn no_line_end(c: char) -> bool {
    "（【《「『“‘〔〈〖([{«".contains(c)
}

/// Split a paragraph into units between which a line may break: after a space, and
/// before or after a CJK character, except before closing or after opening punctuation.
/// Latin words and numbers ("3.5cm", "CT") stay whole. Spaces stay at the end of the unit
/// they follow, so they are dropped at a line end.
fn break_units(text: &str) -> Vec<&str> {
    let mut units = Vec::new();
    let mut start = 0;
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        if let Some(p) = prev {
            let allowed = !c.is_whitespace()
                && !no_line_start(c)
                && !no_line_end(p)
                && (p.is_whitespace() || is_cjk(p) || is_cjk(c));
            if allowed {
                units.push(&text[start..i]);
                start = i;
            }
        }
        prev = Some(c);
    }
    if start < text.len() {
        units.push(&text[start..]);
    }
    units
}

/// A flowing layout onto pages, top to bottom.
struct Layout<'m, 'f> {
    m: &'m Metrics<'f>,
    pages: Vec<Vec<Op>>,
    /// Top of the next line, in PDF coordinates.
    y: f32,
    /// Printed at the top of every page after the first.
    continuation: String,
}

impl<'m, 'f> Layout<'m, 'f> {
    fn new(m: &'m Metrics<'f>, continuation: String) -> Self {
        let mut layout = Layout {
            m,
            pages: Vec::new(),
            y: 0.0,
            continuation,
        };
        layout.new_page();
        layout
    }

    fn ops(&mut self) -> &mut Vec<Op> {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = PAGE_H - MARGIN_TOP;
        if self.pages.len() > 1 {
            // Which report a loose sheet belongs to, if the pages get separated.
            let text = self.m.sanitize(&self.continuation);
            let y = self.y - SMALL;
            self.ops().push(Op::Text {
                x: MARGIN_X,
                y,
                size: SMALL,
                bold: false,
                color: GREY,
                text,
            });
            self.y -= 16.0;
            self.rule(0.5);
        }
    }

    /// Start a new page unless `h` more points fit on this one.
    fn ensure(&mut self, h: f32) {
        if self.y - h < MARGIN_BOTTOM {
            self.new_page();
        }
    }

    fn gap(&mut self, h: f32) {
        self.y -= h;
    }

    fn rule(&mut self, width: f32) {
        self.ensure(8.0);
        let y = self.y - 4.0;
        self.ops().push(Op::Line {
            x1: MARGIN_X,
            y1: y,
            x2: PAGE_W - MARGIN_X,
            y2: y,
            width,
            color: RULE,
        });
        self.y -= 8.0;
    }

    /// Baseline of a line of height `lh` whose top is at `top`: text sits a little above
    /// the bottom of its line box, leaving the leading below.
    fn baseline(top: f32, size: f32, lh: f32) -> f32 {
        top - (lh - size) / 2.0 - size * 0.86
    }

    fn text(&mut self, x: f32, top: f32, text: &str, st: Style) {
        let text = self.m.sanitize(text);
        if text.trim().is_empty() {
            return;
        }
        let y = Self::baseline(top, st.size, st.lh);
        self.ops().push(Op::Text {
            x,
            y,
            size: st.size,
            bold: st.bold,
            color: st.color,
            text,
        });
    }

    /// One line, centred on the page.
    fn centered(&mut self, text: &str, st: Style) {
        for line in self.m.wrap(&self.m.sanitize(text), st.size, CONTENT_W) {
            self.ensure(st.lh);
            let x = MARGIN_X + (CONTENT_W - self.m.width(&line, st.size)).max(0.0) / 2.0;
            let top = self.y;
            self.text(x, top, &line, st);
            self.y -= st.lh;
        }
    }

    /// Text wrapped into `width` from `x`; each `\n` starts a paragraph, an empty line
    /// leaves half a line of space.
    fn paragraphs(&mut self, x: f32, width: f32, text: &str, st: Style) {
        for para in text.split('\n') {
            let para = self.m.sanitize(para);
            if para.trim().is_empty() {
                self.gap(st.lh / 2.0);
                continue;
            }
            for line in self.m.wrap(&para, st.size, width) {
                self.ensure(st.lh);
                let top = self.y;
                self.text(x, top, &line, st);
                self.y -= st.lh;
            }
        }
    }

    /// "label：value" with the value wrapped in a hanging indent after the label.
    fn labelled(&mut self, x: f32, width: f32, label: &str, value: &str, size: f32, lh: f32) {
        let lines = self.labelled_lines(width, label, value, size);
        self.ensure(lh * lines.len() as f32);
        let top = self.y;
        self.labelled_at(x, top, label, &lines, size, lh);
        self.y -= lh * lines.len() as f32;
    }

    fn labelled_lines(&self, width: f32, label: &str, value: &str, size: f32) -> Vec<String> {
        let label_w = self.m.width(&self.m.sanitize(label), size);
        let value = self.m.sanitize(value);
        let value = if value.trim().is_empty() {
            "—".to_string()
        } else {
            value
        };
        self.m.wrap(&value, size, (width - label_w).max(size * 4.0))
    }

    fn labelled_at(&mut self, x: f32, top: f32, label: &str, lines: &[String], size: f32, lh: f32) {
        let label = self.m.sanitize(label);
        let label_w = self.m.width(&label, size);
        self.text(x, top, &label, style(size, lh, true, GREY));
        for (i, line) in lines.iter().enumerate() {
            self.text(
                x + label_w,
                top - lh * i as f32,
                line,
                style(size, lh, false, INK),
            );
        }
    }

    /// A row of two labelled cells side by side.
    fn grid_row(&mut self, left: (&str, &str), right: (&str, &str)) {
        let col_w = CONTENT_W / 2.0 - 8.0;
        let l = self.labelled_lines(col_w, left.0, left.1, BODY);
        let r = self.labelled_lines(col_w, right.0, right.1, BODY);
        let h = BODY_LH * l.len().max(r.len()) as f32;
        self.ensure(h);
        let top = self.y;
        self.labelled_at(MARGIN_X + 6.0, top, left.0, &l, BODY, BODY_LH);
        self.labelled_at(
            MARGIN_X + CONTENT_W / 2.0 + 6.0,
            top,
            right.0,
            &r,
            BODY,
            BODY_LH,
        );
        self.y -= h;
    }

    /// A full-width coloured box with wrapped text, kept on one page.
    fn banner(&mut self, text: &str, size: f32, bg: Rgb, fg: Rgb) {
        let lh = size * 1.5;
        let pad = 7.0;
        let lines = self
            .m
            .wrap(&self.m.sanitize(text), size, CONTENT_W - 2.0 * pad);
        let h = lh * lines.len() as f32 + 2.0 * pad;
        self.ensure(h);
        let top = self.y;
        self.ops().push(Op::Fill {
            x: MARGIN_X,
            y: top - h,
            w: CONTENT_W,
            h,
            color: bg,
        });
        for (i, line) in lines.iter().enumerate() {
            self.text(
                MARGIN_X + pad,
                top - pad - lh * i as f32,
                line,
                style(size, lh, true, fg),
            );
        }
        self.y -= h;
    }

    /// The tracing at its size on paper, centred, with its caption under it; kept on
    /// one page with the caption.
    fn tracing(&mut self, t: &Tracing) {
        let (w, h) = (
            (t.width_mm / MM_PER_PT) as f32,
            (t.height_mm / MM_PER_PT) as f32,
        );
        let caption = style(SMALL, 14.0, false, GREY);
        let lines = self.m.wrap(&self.m.sanitize(t.caption), SMALL, CONTENT_W);
        let caption_h = caption.lh * lines.iter().filter(|l| !l.is_empty()).count() as f32;
        self.ensure(h + 4.0 + caption_h);
        let top = self.y;
        self.ops().push(Op::Image {
            x: MARGIN_X + (CONTENT_W - w).max(0.0) / 2.0,
            y: top - h,
            w,
            h,
        });
        self.y -= h + 4.0;
        for line in lines.iter().filter(|l| !l.is_empty()) {
            let x = MARGIN_X + (CONTENT_W - self.m.width(line, SMALL)).max(0.0) / 2.0;
            let top = self.y;
            self.text(x, top, line, caption);
            self.y -= caption.lh;
        }
    }

    /// A section heading with a small coloured mark before it.
    fn heading(&mut self, text: &str) {
        let lh = 22.0;
        // Keep a heading with at least two lines of what follows it.
        self.ensure(lh + 2.0 * BODY_LH);
        let top = self.y;
        self.ops().push(Op::Fill {
            x: MARGIN_X,
            y: top - lh + 5.0,
            w: 3.0,
            h: lh - 9.0,
            color: GREEN,
        });
        self.text(MARGIN_X + 9.0, top, text, style(12.0, lh, true, INK));
        self.y -= lh;
    }
}

/// Render the printable PDF of a signed report version.
///
/// A [`Tracing`] that cannot be printed at true scale is an error, not shrunk: a caller
/// that would rather have the report without it renders again with `tracing: None`.
pub fn render_pdf(p: &Printout, font: &ReportFont) -> Result<Vec<u8>, PrintoutError> {
    if let Some(t) = &p.tracing {
        t.check()?;
    }
    let face = font.face()?;
    let metrics = Metrics::new(face);
    let payload = p.payload;
    let exam = &payload.exam;
    let title = report_title(exam);
    let patient = patient_display_name(exam);
    let patient_id = exam.patient_id.clone().unwrap_or_default();
    let version_text = format!("{} 第 {} 版", payload.report_id, payload.version);

    let mut l = Layout::new(
        &metrics,
        format!(
            "{}（续）  {}  患者ID {}  报告 {}",
            title, patient, patient_id, version_text
        ),
    );

    // An unverified paper must not be mistaken for a valid one: say so before anything.
    if let VerificationState::Invalid { reason } = p.verification {
        l.banner(
            &format!("签名验证失败：{reason}。本报告未通过电子签名验证，请勿作为诊疗依据。"),
            13.0,
            RED,
            WHITE,
        );
        l.gap(8.0);
    }

    l.centered(p.hospital_name, style(14.0, 22.0, true, INK));
    l.centered(&title, style(20.0, 32.0, true, INK));
    l.gap(2.0);
    l.rule(1.0);
    l.gap(4.0);

    if payload.critical {
        l.banner(
            "危急值：本报告含危急值，请立即通知临床医生处置，并在系统中回执确认。",
            13.0,
            RED,
            WHITE,
        );
        l.gap(8.0);
    }

    // Patient and exam block on a pale background, so it reads as one unit.
    let block_top = l.y;
    let page_before = l.pages.len();
    l.gap(5.0);
    let modality = match (ExamKind::of(exam), exam.modality.as_deref()) {
        (_, Some(m)) if !m.trim().is_empty() => m.trim().to_string(),
        (ExamKind::Ecg, _) => "ECG 心电图".into(),
        (ExamKind::Lab, _) => "检验".into(),
        _ => exam.kind.clone(),
    };
    let accession = exam
        .accession_number
        .clone()
        .unwrap_or_else(|| format!("E{}", exam.exam_id));
    l.grid_row(("姓名：", &patient), ("患者ID：", &patient_id));
    l.grid_row(("检查号：", &accession), ("检查类型：", &modality));
    l.grid_row(("送检单位：", p.site_name), ("报告编号：", &version_text));
    l.gap(5.0);
    if l.pages.len() == page_before {
        let h = block_top - l.y;
        let bg = Op::Fill {
            x: MARGIN_X,
            y: l.y,
            w: CONTENT_W,
            h,
            color: PALE,
        };
        // Drawn first so the text lies on top of it.
        if let Some(page) = l.pages.last_mut() {
            page.insert(0, bg);
        }
    }
    l.gap(6.0);

    let mut status = format!("报告状态：{}", status_label(payload.status));
    if payload.status == ReportStatus::Preliminary {
        status.push_str("（待上级医师审核）");
    }
    if let Some(prev) = &payload.supersedes {
        status.push_str(&format!("，替代第 {} 版", prev.version));
    }
    l.paragraphs(
        MARGIN_X,
        CONTENT_W,
        &status,
        style(BODY, BODY_LH, true, INK),
    );
    if let Some(reason) = payload.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        let label = if payload.status == ReportStatus::Amended {
            "修正原因："
        } else {
            "变更说明："
        };
        l.labelled(MARGIN_X, CONTENT_W, label, reason, BODY, BODY_LH);
    }
    l.gap(4.0);
    l.rule(0.5);
    l.gap(4.0);

    // The fields in template order, then any the template does not list.
    let mut printed = BTreeSet::new();
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for (key, label) in p.field_labels {
        if let Some(text) = payload.content.get(key) {
            if printed.insert(key.as_str()) {
                fields.push((label.as_str(), text.as_str()));
            }
        }
    }
    for (key, text) in &payload.content {
        if printed.insert(key.as_str()) {
            fields.push((key.as_str(), text.as_str()));
        }
    }
    for (label, text) in fields {
        if text.trim().is_empty() {
            continue;
        }
        l.heading(label);
        l.paragraphs(MARGIN_X + 9.0, CONTENT_W - 9.0, text, BODY_STYLE);
        l.gap(8.0);
    }
    // After the text it illustrates, before the signatures that close the report.
    if let Some(t) = &p.tracing {
        l.tracing(t);
        l.gap(8.0);
    }

    l.rule(0.5);
    l.gap(4.0);
    let signer = &payload.signer;
    if let Some(junior) = &payload.preliminary_by {
        l.labelled(
            MARGIN_X,
            CONTENT_W,
            "初诊医师：",
            &format!(
                "{}    {}",
                junior.display_name,
                format_cst(junior.signed_at_ms)
            ),
            BODY,
            BODY_LH,
        );
    }
    let role = match payload.status {
        ReportStatus::Preliminary => "初诊医师：",
        ReportStatus::Final => "审核医师：",
        ReportStatus::Amended => "修正医师：",
    };
    l.labelled(
        MARGIN_X,
        CONTENT_W,
        role,
        &format!(
            "{}    {}",
            signer.display_name,
            format_cst(signer.signed_at_ms)
        ),
        BODY,
        BODY_LH,
    );

    if !p.history.is_empty() {
        l.gap(4.0);
        l.ensure(BODY_LH * 2.0);
        let top = l.y;
        l.text(
            MARGIN_X,
            top,
            "版本记录",
            style(SMALL + 1.0, 15.0, true, GREY),
        );
        l.y -= 15.0;
        for line in p.history {
            l.paragraphs(
                MARGIN_X + 9.0,
                CONTENT_W - 9.0,
                line,
                style(SMALL, 13.0, false, GREY),
            );
        }
    }
    l.gap(10.0);

    signature_block(&mut l, p);

    let pages = add_footers(l.pages, &metrics, &patient, &patient_id, &version_text);
    let doc_title = format!("{title} {patient} {version_text}");
    write_pdf(&pages, &metrics, font, &doc_title, p.tracing.as_ref())
}

/// The signature box: key id, payload digest, and the verification result in colour.
/// Kept on one page so the result is never separated from what it is about.
fn signature_block(l: &mut Layout, p: &Printout) {
    let digest = payload_sha256(&p.signed.payload);
    let digest16 = digest.get(..16).unwrap_or(&digest).to_string();
    let lines = [
        ("签名密钥：", p.signed.key_id.clone()),
        ("报告摘要（SHA-256 前 16 位）：", digest16),
        (
            "签名时间：",
            format!("{}（北京时间）", format_cst(p.payload.signer.signed_at_ms)),
        ),
    ];
    let (result, color) = match p.verification {
        VerificationState::Valid { key_id } => {
            (format!("电子签名验证通过（验证密钥 {key_id}）"), GREEN)
        }
        VerificationState::Invalid { reason } => (format!("签名验证失败：{reason}"), RED),
    };
    let result_lines = l.m.wrap(&l.m.sanitize(&result), 13.0, CONTENT_W - 20.0);
    let h = 22.0 + BODY_LH * lines.len() as f32 + 20.0 * result_lines.len() as f32 + 14.0;
    l.ensure(h);
    let top = l.y;
    let ops = l.ops();
    for (x1, y1, x2, y2) in [
        (MARGIN_X, top, PAGE_W - MARGIN_X, top),
        (MARGIN_X, top - h, PAGE_W - MARGIN_X, top - h),
        (MARGIN_X, top, MARGIN_X, top - h),
        (PAGE_W - MARGIN_X, top, PAGE_W - MARGIN_X, top - h),
    ] {
        ops.push(Op::Line {
            x1,
            y1,
            x2,
            y2,
            width: 0.8,
            color,
        });
    }
    l.y -= 6.0;
    let t = l.y;
    l.text(MARGIN_X + 10.0, t, "电子签名", style(12.0, 20.0, true, INK));
    l.y -= 20.0;
    for (label, value) in &lines {
        l.labelled(
            MARGIN_X + 10.0,
            CONTENT_W - 20.0,
            label,
            value,
            BODY,
            BODY_LH,
        );
    }
    for line in result_lines {
        let t = l.y;
        l.text(MARGIN_X + 10.0, t, &line, style(13.0, 20.0, true, color));
        l.y -= 20.0;
    }
    l.y = top - h - 6.0;
}

/// Footer on every page: whose report it is, and page n of m.
fn add_footers(
    mut pages: Vec<Vec<Op>>,
    m: &Metrics,
    patient: &str,
    patient_id: &str,
    version_text: &str,
) -> Vec<Vec<Op>> {
    let total = pages.len();
    for (i, ops) in pages.iter_mut().enumerate() {
        let y = MARGIN_BOTTOM - 26.0;
        ops.push(Op::Line {
            x1: MARGIN_X,
            y1: MARGIN_BOTTOM - 12.0,
            x2: PAGE_W - MARGIN_X,
            y2: MARGIN_BOTTOM - 12.0,
            width: 0.5,
            color: RULE,
        });
        ops.push(Op::Text {
            x: MARGIN_X,
            y,
            size: SMALL,
            bold: false,
            color: GREY,
            text: m.sanitize(&format!(
                "{patient}  患者ID {patient_id}  报告 {version_text}"
            )),
        });
        let page = m.sanitize(&format!("第 {} 页 / 共 {} 页", i + 1, total));
        let w = m.width(&page, SMALL);
        ops.push(Op::Text {
            x: PAGE_W - MARGIN_X - w,
            y,
            size: SMALL,
            bold: false,
            color: GREY,
            text: page,
        });
    }
    pages
}

fn deflate(data: &[u8]) -> Result<Vec<u8>, PrintoutError> {
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).map_err(PrintoutError::Compress)?;
    enc.finish().map_err(PrintoutError::Compress)
}

/// Six capital letters naming the subset (PDF 9.6.4): derived from the glyph set (FNV-1a,
/// a name needs no cryptographic hash), so the same report renders to the same bytes.
fn subset_tag(gids: &[u16]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in gids.iter().flat_map(|g| g.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (0..6)
        .map(|_| {
            let letter = char::from(b'A' + (hash % 26) as u8);
            hash /= 26;
            letter
        })
        .collect()
}

/// Write the laid-out pages as a PDF with the font embedded as a CID-keyed subset
/// (Identity-H, 2-byte glyph codes) and a ToUnicode map for text extraction.
fn write_pdf(
    pages: &[Vec<Op>],
    m: &Metrics,
    font: &ReportFont,
    doc_title: &str,
    tracing: Option<&Tracing>,
) -> Result<Vec<u8>, PrintoutError> {
    // Glyphs used, and the character each stands for (the first seen, if several).
    let mut to_unicode: BTreeMap<u16, char> = BTreeMap::new();
    for op in pages.iter().flatten() {
        if let Op::Text { text, .. } = op {
            for c in text.chars() {
                to_unicode.entry(m.glyph(c).0).or_insert(c);
            }
        }
    }
    let gids: Vec<u16> = to_unicode.keys().copied().collect();
    let remapper = subsetter::GlyphRemapper::new_from_glyphs_sorted(&gids);
    let subset = subsetter::subset(&font.data, font.index, &remapper).map_err(|e| {
        PrintoutError::Subset {
            path: font.path.clone(),
            reason: e.to_string(),
        }
    })?;
    let font_program = if font.cff {
        // A CFF font is embedded as its bare CFF table (FontFile3 / CIDFontType0C).
        RawFace::parse(&subset, 0)
            .ok()
            .and_then(|raw| raw.table(Tag::from_bytes(b"CFF ")))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| PrintoutError::Subset {
                path: font.path.clone(),
                reason: "subset has no CFF table".into(),
            })?
    } else {
        subset
    };

    let mut next = 1;
    let mut alloc = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let catalog_id = alloc();
    let pages_id = alloc();
    let info_id = alloc();
    let type0_id = alloc();
    let cid_id = alloc();
    let descriptor_id = alloc();
    let cmap_id = alloc();
    let font_file_id = alloc();
    let page_ids: Vec<(Ref, Ref)> = pages.iter().map(|_| (alloc(), alloc())).collect();
    let image_id = tracing.map(|_| alloc());
    let font_name = Name(b"F1");
    let image_name = Name(b"Im1");

    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id)
        .pages(pages_id)
        .lang(TextStr("zh-CN"));
    pdf.document_info(info_id)
        .title(TextStr(doc_title))
        .producer(TextStr("county-hub viewer-api"));
    pdf.pages(pages_id)
        .kids(page_ids.iter().map(|(page, _)| *page))
        .count(page_ids.len() as i32);

    for (ops, (page_id, content_id)) in pages.iter().zip(&page_ids) {
        let mut content = Content::new();
        for op in ops {
            match op {
                Op::Fill { x, y, w, h, color } => {
                    content
                        .set_fill_rgb(color.0, color.1, color.2)
                        .rect(*x, *y, *w, *h)
                        .fill_nonzero();
                }
                Op::Line {
                    x1,
                    y1,
                    x2,
                    y2,
                    width,
                    color,
                } => {
                    content
                        .set_stroke_rgb(color.0, color.1, color.2)
                        .set_line_width(*width)
                        .move_to(*x1, *y1)
                        .line_to(*x2, *y2)
                        .stroke();
                }
                Op::Text {
                    x,
                    y,
                    size,
                    bold,
                    color,
                    text,
                } => {
                    let mut codes = Vec::with_capacity(text.len() * 2);
                    for c in text.chars() {
                        let gid = remapper.get(m.glyph(c).0).unwrap_or(0);
                        codes.extend_from_slice(&gid.to_be_bytes());
                    }
                    content.begin_text();
                    content.set_font(font_name, *size);
                    content.set_fill_rgb(color.0, color.1, color.2);
                    if *bold {
                        // The font has one weight: embolden by also stroking the outline,
                        // which keeps it one text run (extraction sees it once).
                        content
                            .set_text_rendering_mode(TextRenderingMode::FillStroke)
                            .set_stroke_rgb(color.0, color.1, color.2)
                            .set_line_width(size * 0.035);
                    } else {
                        content.set_text_rendering_mode(TextRenderingMode::Fill);
                    }
                    content.set_text_matrix([1.0, 0.0, 0.0, 1.0, *x, *y]);
                    content.show(Str(&codes));
                    content.end_text();
                }
                Op::Image { x, y, w, h } => {
                    // The image's unit square scaled to its size in points: this matrix
                    // alone decides the printed size, hence the ECG grid's 1 mm.
                    if image_id.is_some() {
                        content
                            .save_state()
                            .transform([*w, 0.0, 0.0, *h, *x, *y])
                            .x_object(image_name)
                            .restore_state();
                    }
                }
            }
        }
        let stream = deflate(&content.finish())?;
        pdf.stream(*content_id, &stream).filter(Filter::FlateDecode);
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
            .parent(pages_id)
            .contents(*content_id);
        let mut resources = page.resources();
        resources.fonts().pair(font_name, type0_id);
        if let Some(image_id) = image_id {
            if ops.iter().any(|op| matches!(op, Op::Image { .. })) {
                resources.x_objects().pair(image_name, image_id);
            }
        }
        resources.finish();
        page.finish();
    }

    let base_font = format!("{}+{}", subset_tag(&gids), font.postscript_name);
    let system_info = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    };
    // Glyph space to the 1000-unit text space PDF uses for CID font metrics.
    let scale = 1000.0 / m.upem;

    let type0_base = if font.cff {
        format!("{base_font}-Identity-H")
    } else {
        base_font.clone()
    };
    pdf.type0_font(type0_id)
        .base_font(Name(type0_base.as_bytes()))
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(cid_id)
        .to_unicode(cmap_id);

    let mut cid = pdf.cid_font(cid_id);
    cid.subtype(if font.cff {
        CidFontType::Type0
    } else {
        CidFontType::Type2
    })
    .base_font(Name(base_font.as_bytes()))
    .system_info(system_info)
    .font_descriptor(descriptor_id)
    .default_width(1000.0);
    if !font.cff {
        // The subset's glyph ids are the CIDs.
        cid.cid_to_gid_map_predefined(Name(b"Identity"));
    }
    let widths: Vec<f32> = remapper
        .remapped_gids()
        .map(|old| f32::from(m.face.glyph_hor_advance(GlyphId(old)).unwrap_or(0)) * scale)
        .collect();
    cid.widths().consecutive(0, widths);
    cid.finish();

    let bbox = m.face.global_bounding_box();
    let ascent = f32::from(m.face.ascender()) * scale;
    let descent = f32::from(m.face.descender()) * scale;
    let cap_height = m
        .face
        .capital_height()
        .map(|h| f32::from(h) * scale)
        .unwrap_or(ascent);
    let mut descriptor = pdf.font_descriptor(descriptor_id);
    descriptor
        .name(Name(base_font.as_bytes()))
        .flags(FontFlags::SYMBOLIC)
        .bbox(Rect::new(
            f32::from(bbox.x_min) * scale,
            f32::from(bbox.y_min) * scale,
            f32::from(bbox.x_max) * scale,
            f32::from(bbox.y_max) * scale,
        ))
        .italic_angle(m.face.italic_angle())
        .ascent(ascent)
        .descent(descent)
        .cap_height(cap_height)
        .stem_v(80.0);
    if font.cff {
        descriptor.font_file3(font_file_id);
    } else {
        descriptor.font_file2(font_file_id);
    }
    descriptor.finish();

    let mut cmap = UnicodeCmap::new(Name(b"Custom"), system_info);
    for (old, c) in &to_unicode {
        if let Some(new) = remapper.get(*old) {
            if new != 0 {
                cmap.pair(new, *c);
            }
        }
    }
    let cmap = deflate(&cmap.finish())?;
    pdf.cmap(cmap_id, &cmap).filter(Filter::FlateDecode);

    let program_len = font_program.len();
    let program = deflate(&font_program)?;
    let mut stream = pdf.stream(font_file_id, &program);
    stream.filter(Filter::FlateDecode);
    if font.cff {
        stream.pair(Name(b"Subtype"), Name(b"CIDFontType0C"));
    } else {
        // Required for embedded TrueType programs (PDF 1.7 table 127).
        stream.pair(
            Name(b"Length1"),
            i32::try_from(program_len).unwrap_or(i32::MAX),
        );
    }
    stream.finish();

    if let (Some(t), Some(image_id)) = (tracing, image_id) {
        let samples = deflate(t.rgb)?;
        let mut image = pdf.image_xobject(image_id, &samples);
        image.filter(Filter::FlateDecode);
        // Checked in `Tracing::check`; the fallback is never reached.
        image.width(i32::try_from(t.width_px).unwrap_or(i32::MAX));
        image.height(i32::try_from(t.height_px).unwrap_or(i32::MAX));
        image.color_space().device_rgb();
        image.bits_per_component(8);
        image.finish();
    }

    Ok(pdf.finish())
}

/// Report fixtures shared by the printout and FHIR tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use formats::report::{
        key_id, sign, ExamRef, ReportPayload, ReportStatus, SignedReport, Signer, SigningKey,
        Supersedes, FORMAT,
    };

    pub fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    /// 2026-11-23 10:02 China Standard Time.
    pub const SIGNED_AT_MS: i64 = 1_795_399_320_000;

    pub fn labels() -> Vec<(String, String)> {
        [("findings", "检查所见"), ("impression", "诊断意见")]
            .into_iter()
            .map(|(k, l)| (k.to_string(), l.to_string()))
            .collect()
    }

    /// A final report of the given kind and modality with short text.
    pub fn payload(kind: &str, modality: Option<&str>) -> ReportPayload {
        ReportPayload {
            format: FORMAT.into(),
            report_id: "r-2026-0042".into(),
            version: 1,
            status: ReportStatus::Final,
            supersedes: None,
            reason: None,
            exam: ExamRef {
                exam_id: 42,
                kind: kind.into(),
                site: "township-a".into(),
                patient_id: Some("PID0001".into()),
                patient_name: Some("Zhang^San=张^三".into()),
                study_uid: Some("1.2.826.0.1.3680043.8.498.1".into()),
                accession_number: Some("ACC20261123".into()),
                modality: modality.map(str::to_string),
            },
            template: kind.into(),
            content: [
                (
                    "findings".to_string(),
                    "双肺纹理清晰，未见明显实质性病变。".to_string(),
                ),
                (
                    "impression".to_string(),
                    "胸部 CT 平扫未见明显异常。".to_string(),
                ),
            ]
            .into(),
            critical: false,
            preliminary_by: Some(Signer {
                username: "li".into(),
                display_name: "李医生".into(),
                grade: "junior".into(),
                signed_at_ms: SIGNED_AT_MS - 3_600_000,
            }),
            signer: Signer {
                username: "wang".into(),
                display_name: "王医生".into(),
                grade: "senior".into(),
                signed_at_ms: SIGNED_AT_MS,
            },
            key_id: key_id(&key().verifying_key()),
        }
    }

    /// An amended version 2 with a critical finding and a reason.
    pub fn amended(mut p: ReportPayload, previous: &SignedReport) -> ReportPayload {
        p.version = 2;
        p.status = ReportStatus::Amended;
        p.supersedes = Some(Supersedes {
            version: 1,
            payload_sha256: formats::report::payload_sha256(&previous.payload),
        });
        p.reason = Some("补充右肺下叶结节描述，并更正结节大小（原报告误写为 5 mm）。".into());
        p.critical = true;
        p
    }

    pub fn signed(p: &ReportPayload) -> SignedReport {
        sign(p, &key()).expect("sign")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use std::process::Command;

    /// Several long paragraphs, so the findings wrap and the report runs to two pages.
    fn long_findings() -> String {
        let sentences = [
            "右肺下叶背段见一大小约 12 mm×9 mm 的实性结节，边缘可见分叶及短毛刺，邻近胸膜牵拉凹陷。",
            "双肺纹理增多、增粗，两肺上叶可见少许条索状高密度影，考虑陈旧性病变。",
            "纵隔内未见明显肿大淋巴结，气管及主要支气管通畅，管壁未见增厚。",
            "心影大小、形态未见异常，心包未见积液；主动脉壁可见散在钙化斑块。",
            "扫描范围内肝脏密度均匀，胆囊不大，双侧肾上腺形态未见异常（CT 值约 35 HU）。",
        ];
        (1..=9)
            .map(|i| {
                let mut para = format!("（{i}）");
                for (j, s) in sentences.iter().enumerate() {
                    if (i + j) % 3 != 0 {
                        para.push_str(s);
                    }
                }
                para.push_str(&format!("第{i}段复查建议：三个月后低剂量 CT 随访。"));
                para
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn font() -> ReportFont {
        ReportFont::load(None).expect("a CJK font (Debian package fonts-wqy-microhei)")
    }

    fn tool(name: &str, args: &[&str], pdf: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("report.pdf");
        std::fs::write(&path, pdf).expect("write pdf");
        if let Some(keep) = std::env::var_os("PRINTOUT_SAMPLE_DIR") {
            let n = pdf.len();
            let _ = std::fs::write(Path::new(&keep).join(format!("sample-{n}.pdf")), pdf);
        }
        let out = Command::new(name)
            .args(args)
            .arg(&path)
            .args(if name == "pdftotext" {
                &["-"][..]
            } else {
                &[][..]
            })
            .output()
            .unwrap_or_else(|e| panic!("running {name} (Debian package poppler-utils): {e}"));
        assert!(
            out.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn squash(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    fn render(payload: &ReportPayload, verification: &VerificationState) -> Vec<u8> {
        let signed = signed(payload);
        let labels = labels();
        let history = vec![
            "v1 终审 王医生 2026-11-23 10:02".to_string(),
            "v2 修正 王医生 2026-11-23 15:40".to_string(),
        ];
        let p = Printout {
            payload,
            signed: &signed,
            verification,
            hospital_name: "县人民医院 区域诊断中心",
            site_name: "青石镇卫生院",
            field_labels: &labels,
            history: &history,
            tracing: None,
        };
        render_pdf(&p, &font()).expect("render")
    }

    #[test]
    fn cst_formatting() {
        assert_eq!(format_cst(SIGNED_AT_MS), "2026-11-23 10:02");
        assert_eq!(iso8601_cst(SIGNED_AT_MS), "2026-11-23T10:02:00+08:00");
        assert_eq!(
            iso8601_cst(SIGNED_AT_MS + 5),
            "2026-11-23T10:02:00.005+08:00"
        );
        // 2023-11-14T22:13:20Z is the next morning in Beijing.
        assert_eq!(format_cst(1_700_000_000_000), "2023-11-15 06:13");
        assert_eq!(format_cst(0), "1970-01-01 08:00");
        assert_eq!(format_cst(-8 * 3_600_000 - 60_000), "1969-12-31 23:59");
        // Leap day.
        assert_eq!(
            format_cst(951_782_400_000 - 8 * 3_600_000),
            "2000-02-29 00:00"
        );
    }

    #[test]
    fn default_font_is_found_and_a_latin_font_is_refused() {
        let f = font();
        assert!(f.path().is_file());
        let err = ReportFont::load(Some(Path::new("/nonexistent/font.ttf"))).unwrap_err();
        assert!(matches!(err, PrintoutError::FontIo { .. }), "{err}");
        let err = ReportFont::from_bytes(b"not a font".to_vec(), "mem".into()).unwrap_err();
        assert!(matches!(err, PrintoutError::BadFont { .. }), "{err}");
    }

    #[test]
    fn chinese_wraps_at_characters_and_keeps_punctuation_rules() {
        let f = font();
        let m = Metrics::new(f.face().expect("face"));
        let text = m.sanitize(&long_findings().replace('\n', ""));
        let width = 200.0;
        let lines = m.wrap(&text, BODY, width);
        assert!(lines.len() > 20, "{} lines", lines.len());
        for line in &lines {
            let first = line.chars().next().expect("no empty lines");
            assert!(!no_line_start(first), "line starts with {first:?}: {line}");
            let last = line.chars().last().expect("no empty lines");
            assert!(!no_line_end(last), "line ends with {last:?}: {line}");
            // A closing mark may hang a little past the measure, nothing more.
            assert!(
                m.width(line, BODY) <= width + BODY * 2.0,
                "too wide: {line}"
            );
        }
        assert_eq!(squash(&lines.concat()), squash(&text), "no character lost");
        // Latin words and numbers are not split.
        let units = break_units("大小约 12.5 mm，CT 值 35HU。");
        assert!(units.contains(&"12.5 "), "{units:?}");
        assert!(units.contains(&"mm，"), "{units:?}");
        assert!(units.contains(&"35HU。"), "{units:?}");
        // A run without break opportunities is still cut to fit.
        let url = "https://hub.example/".repeat(10);
        for line in m.wrap(&url, BODY, 100.0) {
            assert!(m.width(&line, BODY) <= 100.0 + 0.01, "{line}");
        }
        // Characters the font lacks become a visible box, not nothing.
        assert_eq!(m.sanitize("a\u{1F600}b\u{200B}\tc"), "a□b c");
    }

    #[test]
    fn amended_critical_report_is_small_multi_page_and_extractable() {
        let v1 = payload("imaging", Some("CT"));
        let signed_v1 = signed(&v1);
        let mut p = amended(v1, &signed_v1);
        p.content.insert("findings".into(), long_findings());
        p.content.insert(
            "impression".into(),
            "右肺下叶背段实性结节，考虑周围型肺癌可能性大，建议进一步增强 CT 检查。".into(),
        );
        p.content
            .insert("recommendation".into(), "建议胸外科会诊。".into());
        let key_id = p.key_id.clone();
        let pdf = render(
            &p,
            &VerificationState::Valid {
                key_id: key_id.clone(),
            },
        );
        eprintln!("amended critical report: {} bytes", pdf.len());
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(pdf.len() < 300 * 1024, "PDF is {} bytes", pdf.len());
        // No clock or random state goes in: the same version prints to the same bytes.
        assert!(
            pdf == render(
                &p,
                &VerificationState::Valid {
                    key_id: key_id.clone()
                }
            )
        );

        let info = tool("pdfinfo", &[], &pdf);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        assert_eq!(field("Pages:"), "2", "{info}");
        assert!(
            field("Page size:").starts_with("595.28 x 841.89"),
            "A4: {info}"
        );
        let fonts = tool("pdffonts", &[], &pdf);
        // name type encoding emb sub uni: embedded, subset, with a ToUnicode map.
        let row = fonts.lines().nth(2).expect("one font");
        let row = row.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(row.contains("CID TrueType"), "{fonts}");
        assert!(row.contains("Identity-H yes yes yes"), "{fonts}");
        assert!(row
            .split_whitespace()
            .next()
            .is_some_and(|n| n.len() > 7 && n.as_bytes()[6] == b'+'));

        let text = tool("pdftotext", &["-enc", "UTF-8"], &pdf);
        let flat = squash(&text);
        for needle in [
            "县人民医院区域诊断中心",
            "CT检查报告",
            "检查所见",
            "诊断意见",
            "张三",
            "PID0001",
            "ACC20261123",
            "青石镇卫生院",
            "危急值",
            "报告状态：修正，替代第1版",
            "修正原因：补充右肺下叶结节描述，并更正结节大小（原报告误写为5mm）。",
            "右肺下叶背段实性结节，考虑周围型肺癌可能性大，建议进一步增强CT检查。",
            "recommendation",
            "建议胸外科会诊。",
            "初诊医师：李医生2026-11-2309:02",
            "修正医师：王医生2026-11-2310:02",
            "v1终审王医生2026-11-2310:02",
            "电子签名验证通过",
            "第1页/共2页",
            "第2页/共2页",
        ] {
            assert!(flat.contains(needle), "missing {needle:?} in:\n{text}");
        }
        let digest = formats::report::payload_sha256(&signed(&p).payload);
        assert!(flat.contains(&digest[..16]), "digest prefix missing");
        assert!(
            !flat.contains(&digest[..17]),
            "only 16 hex digits are printed"
        );
        assert!(flat.contains(&key_id));

        // The whole findings text comes back, in order, once the running header and
        // footers (which interrupt it at the page break) are taken out.
        let mut body = flat.clone();
        for running in [
            "CT检查报告（续）张三患者ID PID0001报告r-2026-0042第2版".to_string(),
            "张三患者IDPID0001报告r-2026-0042第2版".to_string(),
            "第1页/共2页".to_string(),
            "第2页/共2页".to_string(),
        ] {
            body = body.replace(&squash(&running), "");
        }
        assert!(
            body.contains(&squash(&long_findings())),
            "findings not extracted whole:\n{text}"
        );
    }

    #[test]
    fn failed_verification_is_stated() {
        let p = payload("ecg", Some("ECG"));
        let mut tampered = signed(&p);
        tampered.payload = tampered.payload.replace("双肺", "左肺");
        let state = VerificationState::check(&tampered, &[key().verifying_key()]);
        assert!(!state.is_valid());
        let pdf = render(&p, &state);
        let flat = squash(&tool("pdftotext", &["-enc", "UTF-8"], &pdf));
        assert!(flat.contains("心电图报告"), "{flat}");
        assert!(
            flat.contains("签名验证失败：签名与报告内容不符（内容可能被篡改）"),
            "{flat}"
        );
        assert!(!flat.contains("电子签名验证通过"));
        assert!(flat.contains("报告状态：终审"));
        assert!(!flat.contains("危急值"));

        let good = VerificationState::check(&signed(&p), &[key().verifying_key()]);
        assert_eq!(
            good,
            VerificationState::Valid {
                key_id: p.key_id.clone()
            }
        );
        let unknown = VerificationState::check(&signed(&p), &[]);
        assert!(
            matches!(unknown, VerificationState::Invalid { reason } if reason.contains("不是可信密钥"))
        );
    }

    /// The OpenType/CFF path (Noto Sans CJK, package fonts-noto-cjk), when that font is
    /// installed: the CI machine has only WenQuanYi, so this checks nothing there.
    #[test]
    fn cff_collection_font_when_installed() {
        let path = Path::new(DEFAULT_FONT_PATHS[1]);
        if !path.is_file() {
            eprintln!("{} not installed: CFF path not exercised", path.display());
            return;
        }
        let font = ReportFont::load(Some(path)).expect("noto");
        assert_eq!(font.postscript_name(), "NotoSansCJKsc-Regular");
        assert_eq!(font.face_index(), 2);
        let mut p = payload("imaging", Some("MR"));
        p.content.insert("findings".into(), long_findings());
        let s = signed(&p);
        let labels = labels();
        let state = VerificationState::Valid {
            key_id: p.key_id.clone(),
        };
        let printout = Printout {
            payload: &p,
            signed: &s,
            verification: &state,
            hospital_name: "县人民医院 区域诊断中心",
            site_name: "青石镇卫生院",
            field_labels: &labels,
            history: &[],
            tracing: None,
        };
        let pdf = render_pdf(&printout, &font).expect("render");
        eprintln!("Noto CFF report: {} bytes", pdf.len());
        assert!(pdf.len() < 300 * 1024);
        let fonts = tool("pdffonts", &[], &pdf);
        let row = fonts.lines().nth(2).expect("one font");
        let row = row.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            row.contains("CID Type 0C Identity-H yes yes yes"),
            "{fonts}"
        );
        let flat = squash(&tool("pdftotext", &["-enc", "UTF-8"], &pdf));
        assert!(flat.contains("MR检查报告"), "{flat}");
        assert!(flat.contains("双肺纹理增多、增粗，两肺上叶可见少许条索状高密度影"));
    }

    /// A 12-lead-free recording: the given leads, 10 s of a 1 mV square wave at 500 Hz.
    fn square_ecg(leads: &[&str]) -> formats::ecg::Ecg {
        use formats::ecg::{
            Ecg, Filters, Lead, Measurements, OrderInfo, PatientInfo, SourceFormat,
        };
        let samples: Vec<f32> = (0..5000)
            .map(|i| if (i / 50) % 2 == 1 { 1000.0 } else { 0.0 })
            .collect();
        Ecg {
            leads: leads
                .iter()
                .map(|l| Lead {
                    label: l.to_string(),
                    samples_uv: samples.clone(),
                    derived: false,
                })
                .collect(),
            sample_rate_hz: 500.0,
            acquired_at: None,
            acquired_at_ms: None,
            filters: Filters::default(),
            device_measurements: Measurements::default(),
            statements: Vec::new(),
            patient: PatientInfo::default(),
            order: OrderInfo::default(),
            device: None,
            source_format: SourceFormat::HL7aECG,
        }
    }

    fn render_with(
        payload: &ReportPayload,
        tracing: Option<Tracing>,
    ) -> Result<Vec<u8>, PrintoutError> {
        let signed = signed(payload);
        let labels = labels();
        let state = VerificationState::Valid {
            key_id: payload.key_id.clone(),
        };
        let p = Printout {
            payload,
            signed: &signed,
            verification: &state,
            hospital_name: "县人民医院 区域诊断中心",
            site_name: "青石镇卫生院",
            field_labels: &labels,
            history: &[],
            tracing,
        };
        render_pdf(&p, &font())
    }

    /// Every `cm` operator in the PDF's (Flate-compressed) content streams, as its six
    /// numbers.
    fn cm_matrices(pdf: &[u8]) -> Vec<[f64; 6]> {
        use std::io::Read as _;
        let mut out = Vec::new();
        let mut rest = pdf;
        while let Some(start) = find(rest, b"stream\n") {
            let body = &rest[start + 7..];
            let Some(end) = find(body, b"\nendstream") else {
                break;
            };
            let mut text = String::new();
            let mut dec = flate2::read::ZlibDecoder::new(&body[..end]);
            if dec.read_to_string(&mut text).is_ok() {
                for line in text.lines().filter(|l| l.ends_with(" cm")) {
                    let n: Vec<f64> = line
                        .split_whitespace()
                        .take(6)
                        .map(|v| v.parse().expect("number"))
                        .collect();
                    out.push([n[0], n[1], n[2], n[3], n[4], n[5]]);
                }
            }
            rest = &body[end..];
        }
        out
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn ecg_report_carries_one_rhythm_strip_at_true_scale() {
        let p = payload("ecg", Some("ECG"));
        let strip = ecg_strip::strip_for_report(&square_ecg(&["I", "II", "V1"])).expect("strip");
        // 6 s at 25 mm/s after a 10 mm lead-in, plus the edge pixel: the most that fits A4.
        assert_eq!(strip.seconds, 6);
        assert_eq!((strip.strip.width_px, strip.strip.height_px), (1601, 401));
        assert_eq!(strip.strip.lead, "II");
        assert_eq!(strip.caption, "II 导联节律条（前 6 秒）  25 mm/s  10 mm/mV");
        let t = strip.as_tracing();
        let pdf = render_with(&p, Some(t)).expect("render");
        eprintln!("ECG report with strip: {} bytes", pdf.len());
        assert!(pdf.len() < 300 * 1024, "PDF is {} bytes", pdf.len());
        assert!(
            pdf == render_with(&p, Some(t)).expect("again"),
            "deterministic"
        );

        // page num type width height color comp bpc enc interp object ID x-ppi y-ppi ...
        let list = tool("pdfimages", &["-list"], &pdf);
        let rows: Vec<Vec<&str>> = list
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 1, "exactly one image:\n{list}");
        let row = &rows[0];
        assert_eq!(
            &row[2..9],
            ["image", "1601", "401", "rgb", "3", "8", "image"],
            "{list}"
        );
        // 10 px/mm is 254 dpi: what pdfimages computes from the placed size.
        assert_eq!((row[12], row[13]), ("254", "254"), "{list}");

        // Placed at its size in mm: the image matrix is width × height in points.
        let pt = |mm: f64| mm * 72.0 / 25.4;
        let images: Vec<_> = cm_matrices(&pdf)
            .into_iter()
            .filter(|m| m[1] == 0.0 && m[2] == 0.0 && m[0] > 100.0)
            .collect();
        assert_eq!(images.len(), 1, "{images:?}");
        let [w, _, _, h, x, y] = images[0];
        assert!((w - pt(160.1)).abs() < 0.01, "width {w} pt");
        assert!((h - pt(40.1)).abs() < 0.01, "height {h} pt");
        assert!((w - pt(t.width_mm)).abs() < 0.01 && (h - pt(t.height_mm)).abs() < 0.01);
        // On the page, between the margins.
        assert!(x >= f64::from(MARGIN_X) - 0.01 && x + w <= f64::from(PAGE_W - MARGIN_X) + 0.01);
        assert!(y >= f64::from(MARGIN_BOTTOM) && y + h <= f64::from(PAGE_H - MARGIN_TOP));

        let text = tool("pdftotext", &["-enc", "UTF-8"], &pdf);
        let flat = squash(&text);
        for needle in [
            "心电图报告",
            "检查所见",
            "双肺纹理清晰，未见明显实质性病变。",
            "II导联节律条（前6秒）25mm/s10mm/mV",
            "电子签名验证通过",
        ] {
            assert!(flat.contains(needle), "missing {needle:?} in:\n{text}");
        }
        // The strip comes after the fields and before the signatures.
        let at = |s: &str| flat.find(s).expect(s);
        assert!(at("诊断意见") < at("II导联节律条") && at("II导联节律条") < at("审核医师"));

        // Without a tracing there is no image at all.
        let plain = render_with(&p, None).expect("render");
        assert_eq!(tool("pdfimages", &["-list"], &plain).lines().count(), 2);
    }

    #[test]
    fn strip_falls_back_to_a_recorded_lead() {
        let strip = ecg_strip::strip_for_report(&square_ecg(&["I"])).expect("strip");
        assert_eq!(strip.strip.lead, "I");
        assert!(
            strip.caption.starts_with("I 导联节律条"),
            "{}",
            strip.caption
        );
        let err = ecg_strip::strip_for_report(&square_ecg(&[])).unwrap_err();
        assert!(
            matches!(err, crate::ecg_render::RenderError::NoTracing(_)),
            "{err}"
        );
    }

    #[test]
    fn a_tracing_that_cannot_print_at_true_scale_is_refused() {
        let p = payload("ecg", Some("ECG"));
        let rgb = vec![255u8; 30 * 10 * 3];
        let ok = Tracing {
            rgb: &rgb,
            width_px: 30,
            height_px: 10,
            width_mm: 150.0,
            height_mm: 50.0,
            caption: "test",
        };
        assert!(render_with(&p, Some(ok)).is_ok());
        for bad in [
            // A 10 s strip (260 mm) is wider than A4's text width.
            Tracing {
                width_mm: 260.0,
                ..ok
            },
            Tracing {
                height_mm: 200.0,
                ..ok
            },
            Tracing {
                width_mm: f64::NAN,
                ..ok
            },
            Tracing {
                height_px: 11,
                ..ok
            },
            Tracing {
                rgb: &rgb[1..],
                ..ok
            },
            Tracing {
                width_px: 0,
                height_px: 0,
                rgb: &[],
                ..ok
            },
        ] {
            let err = render_with(&p, Some(bad)).unwrap_err();
            assert!(matches!(err, PrintoutError::Tracing(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn titles_by_kind_and_modality() {
        let t = |kind, m| report_title(&payload(kind, m).exam);
        assert_eq!(t("imaging", Some("CT")), "CT 检查报告");
        assert_eq!(t("imaging", Some("dx")), "X 线检查报告");
        assert_eq!(t("imaging", None), "影像检查报告");
        assert_eq!(t("ecg", Some("ECG")), "心电图报告");
        assert_eq!(t("lab", None), "检验报告");
    }
}
