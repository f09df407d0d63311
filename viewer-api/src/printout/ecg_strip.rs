//! The rhythm strip printed in an ECG report, so the township has the tracing the
//! report is about on the same sheet (the issue: "the township receives the report with
//! a small rendered tracing in the PDF").
//!
//! The strip is lead II at the standard 25 mm/s and 10 mm/mV, printed at true scale.
//! A4 portrait leaves about 170 mm between the margins, so it shows the first 6 s
//! (10 mm of calibration lead-in + 150 mm) rather than a cart's 10 s; the full 10 s are
//! on the 12-lead printout (`/api/exams/{id}/ecg.png`).
//!
//! Everything here is best effort: a recording that is missing or unreadable leaves the
//! report printed without its strip (and a warning in the log), never unprinted.

use formats::ecg::{read_any, Ecg};
use storage::ecg::Source;

use super::{Tracing, TRACING_MAX_WIDTH_MM};
use crate::ecg_render::{
    render_rhythm_strip_rgb, rhythm_strip_size_mm, Layout, RenderError, RgbStrip,
};
use crate::ViewerState;

/// Resolution of the strip's pixels: 10 px/mm is 254 dpi, enough for crisp 1 mm grid
/// lines and a smooth tracing on a township's laser printer, at a few tens of KB.
pub const PX_PER_MM: f64 = 10.0;
/// The most of the recording shown, s: a cart's rhythm strip.
const MAX_SECONDS: u32 = 10;

/// A rendered strip and its caption, owned; [`EcgTracing::as_tracing`] lends it to a
/// [`super::Printout`].
#[derive(Debug, Clone)]
pub struct EcgTracing {
    /// The pixels and their size on paper.
    pub strip: RgbStrip,
    /// Seconds of the recording shown.
    pub seconds: u32,
    /// E.g. "II 导联节律条（前 6 秒）  25 mm/s  10 mm/mV".
    pub caption: String,
}

impl EcgTracing {
    /// The strip as the printout takes it.
    pub fn as_tracing(&self) -> Tracing<'_> {
        Tracing {
            rgb: &self.strip.rgb,
            width_px: self.strip.width_px,
            height_px: self.strip.height_px,
            width_mm: self.strip.width_mm,
            height_mm: self.strip.height_mm,
            caption: &self.caption,
        }
    }
}

/// The most whole seconds (up to [`MAX_SECONDS`]) whose strip, with its extra edge
/// pixel, fits [`TRACING_MAX_WIDTH_MM`] at `layout`'s speed; at least 1.
fn seconds_that_fit(layout: &Layout) -> u32 {
    (1..=MAX_SECONDS)
        .rev()
        .find(|&s| {
            let (w, _) = rhythm_strip_size_mm(layout, f64::from(s));
            w + 1.0 / PX_PER_MM <= TRACING_MAX_WIDTH_MM
        })
        .unwrap_or(1)
}

/// The strip for a report from a parsed recording: lead II, or when the recording has
/// no usable II (a single-lead township device records I) the first lead that has
/// samples, so the report still shows the rhythm; the caption names the lead drawn.
pub fn strip_for_report(ecg: &Ecg) -> Result<EcgTracing, RenderError> {
    let standard = Layout::default();
    let seconds = seconds_that_fit(&standard);
    let candidates = std::iter::once(standard.rhythm_lead.clone()).chain(
        ecg.leads
            .iter()
            .filter(|l| l.label != standard.rhythm_lead)
            .map(|l| l.label.clone()),
    );
    let mut last = RenderError::NoTracing(standard.rhythm_lead.clone());
    for lead in candidates {
        let layout = Layout {
            rhythm_lead: lead,
            ..standard.clone()
        };
        match render_rhythm_strip_rgb(ecg, &layout, f64::from(seconds), PX_PER_MM) {
            Ok(strip) => {
                let caption = format!(
                    "{} 导联节律条（前 {seconds} 秒）  {} mm/s  {} mm/mV",
                    strip.lead, layout.speed_mm_s, layout.gain_mm_mv
                );
                return Ok(EcgTracing {
                    strip,
                    seconds,
                    caption,
                });
            }
            // Only a lead with nothing to draw is worth another try; anything else
            // (a bad sampling rate) fails every lead alike.
            Err(e @ RenderError::NoTracing(_)) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The strip of ECG exam `exam_id`'s recording, or `None` (logged) if there is no
/// recording yet or it cannot be read or drawn: the report prints without it.
pub async fn load(state: &ViewerState, exam_id: i64) -> Option<EcgTracing> {
    match try_load(state, exam_id).await {
        Ok(t) => Some(t),
        Err(reason) => {
            tracing::warn!(exam_id, %reason, "ECG report printed without its rhythm strip");
            None
        }
    }
}

async fn try_load(state: &ViewerState, exam_id: i64) -> Result<EcgTracing, String> {
    let source = storage::ecg::source(&state.storage.db, exam_id)
        .await
        .map_err(|e| format!("looking up the recording: {e}"))?
        .ok_or_else(|| "the exam has no recording".to_string())?;
    let key = match &source {
        Source::File(key, _) | Source::Dicom(key) => key,
    };
    let bytes = state
        .storage
        .blobs
        .get_bytes(key)
        .await
        .map_err(|e| format!("reading blob {key}: {e}"))?;
    // DICOM blobs are whole Part 10 files, which `read_any` recognises.
    let ecg = read_any(&bytes).map_err(|e| format!("parsing the recording: {e}"))?;
    strip_for_report(&ecg).map_err(|e| format!("drawing the strip: {e}"))
}
