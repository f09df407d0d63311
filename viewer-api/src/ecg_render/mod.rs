//! The standard 12-lead ECG printout, as SVG and as PNG.
//!
//! The page is what a cart prints: a header (patient, acquisition time, site, the
//! measurements, paper speed and gain), a 3x4 grid of leads (rows `I aVR V1 V4`,
//! `II aVL V2 V5`, `III aVF V3 V6`; column k shows seconds 2.5k to 2.5(k+1) of the
//! recording), a full-width 10 s rhythm strip (lead II unless asked otherwise), a 1 mV
//! calibration pulse at the start of every row, and the 1 mm / 5 mm grid.
//!
//! # Geometry
//! Everything is laid out in millimetres of paper. In the SVG one user unit is one
//! millimetre (`viewBox` in mm, `width`/`height` in `mm`), so the printout is at true
//! paper scale when printed at 100 % and every distance can be checked from the numbers
//! in the file: a sample of `v` µV is drawn at `y = baseline − v / 1000 × gain_mm_mv`, at
//! `x = TRACE_LEFT_MM + t × speed_mm_s` where `t` is its time in the recording.
//!
//! The page is [`PAPER_WIDTH_MM`] × [`PAPER_HEIGHT_MM`] (US Letter landscape, the paper
//! of most carts, within 5 mm of A4) at 12.5 and 25 mm/s. The whole first 10 s are
//! always shown, so at 50 mm/s the page is wider ([`paper_size_mm`]: 530 mm), as a paper
//! roll simply runs longer; a 12.5 mm/s tracing uses the left half of the page.
//! A record longer than 10 s is cut at 10 s; a shorter one is drawn as far as it goes.
//!
//! The PNG is rasterised from the very same drawing (one display list, two back ends),
//! with tiny-skia and glyph outlines from the CJK report font, so its geometry is the
//! SVG's scaled by `px_per_mm`.
//!
//! [`render_rhythm_strip_rgb`] draws just a rhythm strip (grid, calibration pulse,
//! tracing; no text) with the same code, as raw pixels for embedding in the report PDF.

mod page;
mod raster;
mod svg;

#[cfg(test)]
mod tests;

use formats::ecg::{Ecg, Origin, Reading};
use serde::{Deserialize, Serialize};

pub use raster::{render_png_with_font, PngFont, MAX_PIXELS};

/// Width of the page in mm at 12.5 and 25 mm/s (at 50 mm/s see [`paper_size_mm`]).
pub const PAPER_WIDTH_MM: f64 = 280.0;
/// Height of the page in mm, at every speed and gain.
pub const PAPER_HEIGHT_MM: f64 = 215.0;
/// Paper speeds a cardiologist may choose, mm/s.
pub const SPEEDS_MM_S: [f64; 3] = [12.5, 25.0, 50.0];
/// Gains a cardiologist may choose, mm/mV.
pub const GAINS_MM_MV: [f64; 3] = [5.0, 10.0, 20.0];
/// Seconds of recording shown, in the 3x4 grid and in the rhythm strip alike.
pub const SHOWN_SECONDS: f64 = 10.0;

/// Paper speed, gain and rhythm lead of a printout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Layout {
    /// Paper speed in mm/s: 12.5, 25 or 50.
    pub speed_mm_s: f64,
    /// Gain in mm/mV: 5, 10 or 20.
    pub gain_mm_mv: f64,
    /// Label of the lead drawn in the rhythm strip, as normalised by the readers.
    pub rhythm_lead: String,
}

impl Default for Layout {
    /// 25 mm/s, 10 mm/mV, rhythm strip of lead II: the standard printout.
    fn default() -> Self {
        Layout {
            speed_mm_s: 25.0,
            gain_mm_mv: 10.0,
            rhythm_lead: "II".to_string(),
        }
    }
}

/// What the header of the printout says. Fields that are `None` are left out.
#[derive(Debug, Clone, Default)]
pub struct Header<'a> {
    /// Patient name; DICOM `Family^Given` carets are shown as spaces.
    pub patient_name: Option<&'a str>,
    /// Patient ID.
    pub patient_id: Option<&'a str>,
    /// `M`, `F`, `O`, `U` (shown in Chinese) or free text.
    pub sex: Option<&'a str>,
    /// Age (free text, e.g. `56岁`) or birth date (`YYYYMMDD` is shown as `YYYY-MM-DD`).
    pub age_or_birth: Option<&'a str>,
    /// Acquisition time; DICOM DT / HL7 TS (`YYYYMMDDHHMMSS...`) is shown as
    /// `YYYY-MM-DD HH:MM:SS`, anything else as given.
    pub acquired_at: Option<&'a str>,
    /// Site (township hospital) where the ECG was recorded.
    pub site: &'a str,
    /// Measurements shown in the header, in order, as (group, values), e.g.
    /// `("设备测量", "HR 75 bpm, PR 157 ms")` (see [`measurement_pairs`]).
    pub measurements: Vec<(String, String)>,
    /// A remark shown in the header, e.g. `自动测量，非诊断`.
    pub note: Option<&'a str>,
}

/// Why a printout could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The paper speed is not one of [`SPEEDS_MM_S`].
    #[error("paper speed {0} mm/s is not one of 12.5, 25 or 50 mm/s")]
    Speed(f64),
    /// The gain is not one of [`GAINS_MM_MV`].
    #[error("gain {0} mm/mV is not one of 5, 10 or 20 mm/mV")]
    Gain(f64),
    /// The rhythm lead label is empty or unreasonably long.
    #[error("rhythm lead {0:?} is not a lead label")]
    RhythmLead(String),
    /// The recording has no lead of that name: an empty strip would read as asystole.
    #[error("rhythm lead {lead:?} is not in this recording; its leads are {available}")]
    NoSuchLead {
        /// The lead asked for.
        lead: String,
        /// The recording's leads, comma-separated.
        available: String,
    },
    /// The recording's sampling rate cannot place samples in time.
    #[error("sampling rate {0} Hz is not usable")]
    SampleRate(f64),
    /// The PNG resolution is outside what [`render_png`] accepts.
    #[error("{0} px/mm is outside the accepted 1 to 20 px/mm")]
    Resolution(f64),
    /// The PNG would have more than [`MAX_PIXELS`] pixels.
    #[error("a PNG of {width}x{height} pixels is larger than the {MAX_PIXELS} pixels accepted")]
    TooLarge {
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
    },
    /// No font for the PNG's text (the SVG needs none).
    #[error("no CJK font for the PNG's text; looked for {0}")]
    NoFont(String),
    /// The font file cannot be read or used.
    #[error("font {path}: {reason}")]
    Font {
        /// Where the font came from.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The rhythm strip's length is not a positive number of seconds up to a minute.
    #[error("a rhythm strip of {0} s is not 0 to 60 s long")]
    StripSeconds(f64),
    /// The rhythm strip's lead is not in the recording or has no sample to draw.
    #[error("lead {0} has no samples to draw")]
    NoTracing(String),
    /// Writing the SVG text or encoding the PNG failed.
    #[error("encoding the {format}: {reason}")]
    Encode {
        /// `SVG` or `PNG`.
        format: &'static str,
        /// The encoder's message.
        reason: String,
    },
}

/// Accept only the standard speeds and gains: a tracing at a non-standard scale would be
/// misread by anyone who measures it with an ECG ruler.
pub fn validate(layout: &Layout) -> Result<(), RenderError> {
    let standard = |v: f64, set: &[f64]| set.iter().any(|s| (v - s).abs() < 1e-9);
    if !standard(layout.speed_mm_s, &SPEEDS_MM_S) {
        return Err(RenderError::Speed(layout.speed_mm_s));
    }
    if !standard(layout.gain_mm_mv, &GAINS_MM_MV) {
        return Err(RenderError::Gain(layout.gain_mm_mv));
    }
    let label = layout.rhythm_lead.trim();
    if label.is_empty() || label.chars().count() > 16 {
        return Err(RenderError::RhythmLead(layout.rhythm_lead.clone()));
    }
    Ok(())
}

/// Check that the recording has the rhythm strip's lead (spelled as the readers spell
/// labels, so `avr` or `MDC_ECG_LEAD_II` find it).
pub fn check_rhythm_lead(ecg: &Ecg, layout: &Layout) -> Result<(), RenderError> {
    let label = formats::ecg::normalize_label(&layout.rhythm_lead);
    if ecg.lead(&label).is_some() {
        return Ok(());
    }
    let available: Vec<&str> = ecg.leads.iter().map(|l| l.label.as_str()).collect();
    Err(RenderError::NoSuchLead {
        lead: layout.rhythm_lead.clone(),
        available: available.join(", "),
    })
}

/// Width and height in mm of the page for this layout (see the module documentation).
pub fn paper_size_mm(layout: &Layout) -> (f64, f64) {
    (page::paper_width(layout.speed_mm_s), PAPER_HEIGHT_MM)
}

/// The printout as an SVG document in millimetres (one user unit = 1 mm).
///
/// Elements carry classes (`grid-minor`, `grid-major`, `cal`, `trace`, `rhythm`,
/// `lead-label`, `missing`, `header`) and `data-lead` / `data-row` / `data-col`
/// attributes, so the drawing can be styled and checked.
pub fn render_svg(ecg: &Ecg, layout: &Layout, header: &Header) -> Result<String, RenderError> {
    let drawing = page::build(ecg, layout, header)?;
    svg::write(&drawing).map_err(|_| RenderError::Encode {
        format: "SVG",
        reason: "formatting failed".into(),
    })
}

/// The printout as a PNG of `px_per_mm` pixels per millimetre (1 to 20; 4 is a screen
/// at roughly true size, 12 is 300 dpi print), text drawn with the first CJK font of
/// [`crate::printout::DEFAULT_FONT_PATHS`] (loaded once per process).
pub fn render_png(
    ecg: &Ecg,
    layout: &Layout,
    header: &Header,
    px_per_mm: f64,
) -> Result<Vec<u8>, RenderError> {
    // Layout and resolution first: a bad request should say so, not that a font is missing.
    validate(layout)?;
    raster::check_resolution(px_per_mm)?;
    let font = PngFont::system_default()?;
    render_png_with_font(ecg, layout, header, px_per_mm, font)
}

/// A rhythm strip as raw pixels, with the size it must be printed at.
#[derive(Clone, PartialEq)]
pub struct RgbStrip {
    /// Width in pixels.
    pub width_px: u32,
    /// Height in pixels.
    pub height_px: u32,
    /// Width on paper, mm (`width_px / px_per_mm`): printed at this width, the grid
    /// squares are 1 mm.
    pub width_mm: f64,
    /// Height on paper, mm (`height_px / px_per_mm`).
    pub height_mm: f64,
    /// 8-bit RGB, row by row from the top, no padding: `width_px × height_px × 3` bytes.
    pub rgb: Vec<u8>,
    /// The lead drawn, spelled as the readers normalise labels (e.g. `II`).
    pub lead: String,
}

impl std::fmt::Debug for RgbStrip {
    // By hand: the derived form would print every pixel.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RgbStrip")
            .field("width_px", &self.width_px)
            .field("height_px", &self.height_px)
            .field("width_mm", &self.width_mm)
            .field("height_mm", &self.height_mm)
            .field("lead", &self.lead)
            .finish()
    }
}

/// Width and height in mm of the grid of a rhythm strip of `seconds` at `layout`'s
/// speed (the image of [`render_rhythm_strip_rgb`] is one pixel more each way): the
/// calibration pulse's lead-in (10 mm at 25 mm/s) plus `seconds × speed`, by 40 mm.
/// For choosing how many seconds fit a given width.
pub fn rhythm_strip_size_mm(layout: &Layout, seconds: f64) -> (f64, f64) {
    page::strip_size(layout, seconds)
}

/// The first `seconds` (up to 60) of `layout.rhythm_lead` at `layout`'s speed and gain
/// as a strip of ECG paper: 1 mm / 5 mm grid, 1 mV calibration pulse before the
/// tracing, baseline 25 mm below the top of a 40 mm strip. No text: whoever shows it
/// captions it with the lead, speed and gain. `Layout::default()` with 10 s is the
/// standard strip (II, 25 mm/s, 10 mm/mV).
///
/// Drawn by the same code as the printout's rhythm strip, rasterised at `px_per_mm`
/// (1 to 20). A lead the recording lacks (or without a finite sample in the time) is
/// [`RenderError::NoTracing`]: an empty strip would read as asystole.
pub fn render_rhythm_strip_rgb(
    ecg: &Ecg,
    layout: &Layout,
    seconds: f64,
    px_per_mm: f64,
) -> Result<RgbStrip, RenderError> {
    let (width_px, height_px, rgb) = raster::strip_rgb(ecg, layout, seconds, px_per_mm)?;
    Ok(RgbStrip {
        width_px,
        height_px,
        width_mm: f64::from(width_px) / px_per_mm,
        height_mm: f64::from(height_px) / px_per_mm,
        rgb,
        lead: formats::ecg::normalize_label(&layout.rhythm_lead),
    })
}

/// Header measurements as shown (see [`Reading`]), grouped by who measured them so the
/// printout says which values are the device's and which are ours, then what was set
/// aside and why: `("设备测量", "HR 75 bpm, PR 157 ms, P/QRS/T 29/53/56°")`.
pub fn measurement_pairs(reading: &Reading) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for origin in [Origin::Device, Origin::Automatic] {
        let mine: Vec<_> = reading
            .shown
            .iter()
            .filter(|s| s.origin == origin)
            .collect();
        let mut parts: Vec<String> = mine
            .iter()
            .filter(|s| s.quantity.unit() != "°")
            .map(|s| format!("{} {}", s.quantity.label(), s.quantity.format(s.value)))
            .collect();
        let axes: Vec<_> = mine.iter().filter(|s| s.quantity.unit() == "°").collect();
        if !axes.is_empty() {
            let names: Vec<&str> = axes
                .iter()
                .map(|s| s.quantity.label().trim_end_matches(" axis"))
                .collect();
            let values: Vec<String> = axes.iter().map(|s| format!("{:.0}", s.value)).collect();
            parts.push(format!("{} {}°", names.join("/"), values.join("/")));
        }
        if !parts.is_empty() {
            out.push((origin.label_zh().to_string(), parts.join(", ")));
        }
    }
    if !reading.set_aside.is_empty() {
        let aside: Vec<String> = reading
            .set_aside
            .iter()
            .map(|s| {
                let what = s.quantity.aside_text(s.value, &s.reason);
                format!("{what}（{}）", s.reason.text_zh())
            })
            .collect();
        out.push(("未采用".to_string(), aside.join(", ")));
    }
    out
}
