//! Automatic measurements of a resting ECG: QRS detection, median beats, wave
//! delineation, intervals, frontal axes and triage findings.
//!
//! The pipeline, each step in its own file:
//! 1. `filter`: every lead is conditioned with zero-phase filters (baseline wander
//!    and 50/60 Hz mains removed, QRS left sharp).
//! 2. `detect`: Pan-Tompkins QRS detection on each lead ([`detect_r_peaks`] is the
//!    single-lead detector), then `beats`: a multi-lead consensus, alignment of the
//!    beats on the QRS of all leads and a median beat per lead.
//! 3. `delineate`: P onset, QRS onset and offset and T end on the median beats, all
//!    leads at once (global boundaries, as devices report them).
//! 4. Intervals, QTc (Bazett and Fridericia), frontal axes from net areas in I and aVF,
//!    and [`Finding`]s for triage (`findings`).
//!
//! The results are suggestions for the cardiologist, who confirms or corrects them; the
//! findings are automatic flags for ordering the worklist, not diagnoses.

mod beats;
mod delineate;
mod detect;
mod filter;
mod findings;

#[cfg(test)]
mod synth;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use super::shown::{Origin, Quantity, SetAside};
use super::Ecg;
use detect::median;
use filter::samples;
pub(crate) use findings::value_findings;

/// Lowest sampling rate accepted: the detector's 15 Hz band and the QRS need it.
pub const MIN_RATE_HZ: f64 = 100.0;
/// Highest sampling rate accepted (no ECG cart samples faster).
pub const MAX_RATE_HZ: f64 = 20_000.0;
/// Shortest record measured: two seconds hold at least one beat down to 30 bpm.
pub const MIN_SECONDS: f64 = 2.0;
/// Longest stretch measured, from the start: resting ECGs last 10 s; this bounds the
/// work on a long (ambulatory) record, whose later part is not analysed.
pub const MAX_SECONDS: f64 = 300.0;

/// Automatic measurements of one recording. Durations in ms, rate in beats per minute,
/// axes in degrees (−180, 180]; `None` where the wave was not found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Automatic {
    /// Fiducial point (R peak of the combined leads) of every beat, as sample indices.
    pub r_peaks: Vec<usize>,
    /// Ventricular rate, 60 000 / `rr_ms`.
    pub heart_rate_bpm: Option<f64>,
    /// Average RR interval.
    pub rr_ms: Option<f64>,
    /// PR interval: QRS onset − P onset.
    pub pr_ms: Option<f64>,
    /// QRS duration: QRS offset − QRS onset.
    pub qrs_ms: Option<f64>,
    /// QT interval: T end − QRS onset.
    pub qt_ms: Option<f64>,
    /// QT / √RR (RR in seconds).
    pub qtc_bazett_ms: Option<f64>,
    /// QT / ∛RR (RR in seconds).
    pub qtc_fridericia_ms: Option<f64>,
    /// Frontal P axis.
    pub p_axis: Option<f64>,
    /// Frontal QRS axis.
    pub qrs_axis: Option<f64>,
    /// Frontal T axis.
    pub t_axis: Option<f64>,
    /// Median beat per lead (label, µV), in the recording's lead order, from
    /// [`Automatic::median_fiducial`] samples before the fiducial to 0.7 s after it.
    pub median_beat: Vec<(String, Vec<f32>)>,
    /// Index of the fiducial point in each median beat.
    pub median_fiducial: usize,
    /// Wave boundaries in the median beat, ms relative to the fiducial point.
    pub boundaries: Boundaries,
    /// Automatic triage flags (not diagnostic), decided on the values as kept.
    pub findings: Vec<Finding>,
    /// Values we computed but do not trust (see [`crate::ecg::shown`]): they are `None`
    /// above and listed here with the reason.
    #[serde(default)]
    pub set_aside: Vec<SetAside>,
}

impl Automatic {
    /// Our value of `q` (QTc is Bazett's).
    pub fn value(&self, q: Quantity) -> Option<f64> {
        match q {
            Quantity::HeartRate => self.heart_rate_bpm,
            Quantity::Pr => self.pr_ms,
            Quantity::Qrs => self.qrs_ms,
            Quantity::Qt => self.qt_ms,
            Quantity::Qtc => self.qtc_bazett_ms,
            Quantity::PAxis => self.p_axis,
            Quantity::QrsAxis => self.qrs_axis,
            Quantity::TAxis => self.t_axis,
        }
    }

    fn slot(&mut self, q: Quantity) -> &mut Option<f64> {
        match q {
            Quantity::HeartRate => &mut self.heart_rate_bpm,
            Quantity::Pr => &mut self.pr_ms,
            Quantity::Qrs => &mut self.qrs_ms,
            Quantity::Qt => &mut self.qt_ms,
            Quantity::Qtc => &mut self.qtc_bazett_ms,
            Quantity::PAxis => &mut self.p_axis,
            Quantity::QrsAxis => &mut self.qrs_axis,
            Quantity::TAxis => &mut self.t_axis,
        }
    }

    /// Set aside every value that is not a measurement (a QRS of 0 ms, a rate outside
    /// 20–300 bpm), so that no finding and no page uses it. A rate set aside takes its
    /// RR with it, and a Bazett QTc set aside takes the Fridericia one (same QT, same RR).
    fn screen(&mut self) {
        for q in Quantity::ALL {
            let Some(v) = self.value(q) else { continue };
            if let Err(reason) = q.screen(v, Origin::Automatic) {
                *self.slot(q) = None;
                self.set_aside
                    .push(SetAside::new(q, v, Origin::Automatic, reason));
                match q {
                    Quantity::HeartRate => self.rr_ms = None,
                    Quantity::Qtc => self.qtc_fridericia_ms = None,
                    _ => {}
                }
            }
        }
        if let Some(f) = self.qtc_fridericia_ms {
            if Quantity::Qtc.screen(f, Origin::Automatic).is_err() {
                self.qtc_fridericia_ms = None;
            }
        }
    }
}

/// Wave boundaries of the median beat in ms from its fiducial point (negative before).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Boundaries {
    /// P onset.
    pub p_onset_ms: Option<f64>,
    /// P offset.
    pub p_offset_ms: Option<f64>,
    /// QRS onset.
    pub qrs_onset_ms: Option<f64>,
    /// QRS offset (J point).
    pub qrs_offset_ms: Option<f64>,
    /// T end.
    pub t_end_ms: Option<f64>,
}

/// An automatic flag for triage, shown to the cardiologist as automatic, not diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable code, e.g. `BRADYCARDIA`, `TACHYCARDIA`, `IRREGULAR_RR`.
    pub code: String,
    /// Text in Chinese, with the measured value.
    pub text_zh: String,
    /// Text in English, with the measured value.
    pub text_en: String,
    /// True when the flag puts the exam at the top of the worklist with the emergency
    /// deadline (e.g. rate below 40 or above 150 bpm).
    pub emergency: bool,
}

impl Finding {
    /// True for flags about the rhythm of the beats we found (pauses, irregular RR),
    /// as opposed to flags about one value (rate, PR, QRS, QTc).
    pub fn is_rhythm(&self) -> bool {
        findings::RHYTHM_CODES.contains(&self.code.as_str())
    }
}

/// Why a recording could not be measured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeasureError {
    /// The recording has no lead with samples.
    #[error("no lead with samples")]
    NoLeads,
    /// The sampling rate is missing or outside what we measure.
    #[error("sampling rate {0} Hz is outside {MIN_RATE_HZ}..={MAX_RATE_HZ} Hz")]
    SampleRate(f64),
    /// Leads of different lengths: the model promises equal lengths.
    #[error("lead {label} has {len} samples, the first lead {expected}")]
    LengthMismatch {
        /// The lead that differs.
        label: String,
        /// Its length.
        len: usize,
        /// The first lead's length.
        expected: usize,
    },
    /// A sample is NaN or infinite.
    #[error("lead {0} has a sample that is not a finite number")]
    NonFinite(String),
    /// Too short to measure.
    #[error("recording of {seconds:.2} s is shorter than the {MIN_SECONDS} s needed")]
    TooShort {
        /// Its duration.
        seconds: f64,
    },
    /// No QRS complex, or none consistent from beat to beat (a flat line, noise only,
    /// electrodes off).
    #[error("no consistent QRS complexes found")]
    NoBeats,
}

/// Single-lead QRS detection (Pan-Tompkins: band-pass 5–15 Hz, derivative, squaring,
/// 150 ms moving-window integration, adaptive thresholds with search-back, 200 ms
/// refractory period), each detection moved to the R peak, the extremum of the raw
/// signal within ±60 ms. Returns sample indices in increasing order; empty for a rate
/// outside [`MIN_RATE_HZ`]..=[`MAX_RATE_HZ`], non-finite samples or a flat signal.
///
/// On a single lead, noise can look like beats: [`measure`] combines all leads and
/// rejects beats that are not consistent in shape.
pub fn detect_r_peaks(samples_uv: &[f32], rate_hz: f64) -> Vec<usize> {
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&rate_hz) || samples_uv.iter().any(|v| !v.is_finite())
    {
        return Vec::new();
    }
    let x: Vec<f64> = samples_uv.iter().map(|&v| f64::from(v)).collect();
    let found = detect::decide(&detect::feature(&x, rate_hz), rate_hz);
    detect::refine(&x, &found, rate_hz)
}

/// Measure a recording: detect beats on all leads, build the median beat, delineate it
/// and derive intervals, axes and triage findings.
pub fn measure(ecg: &Ecg) -> Result<Automatic, MeasureError> {
    let rate = ecg.sample_rate_hz;
    let len = check(ecg)?.min((MAX_SECONDS * rate) as usize);

    let conditioned: Vec<Vec<f64>> = ecg
        .leads
        .iter()
        .map(|l| {
            let x: Vec<f64> = l.samples_uv[..len].iter().map(|&v| f64::from(v)).collect();
            filter::condition(&x, rate)
        })
        .collect();
    // Derived leads are sums of stored ones: they would add votes and weight to the
    // limb leads without adding information.
    let mut stored: Vec<usize> = (0..ecg.leads.len())
        .filter(|&i| !ecg.leads[i].derived)
        .collect();
    if stored.is_empty() {
        stored = (0..ecg.leads.len()).collect();
    }
    let independent: Vec<Vec<f64>> = stored.iter().map(|&i| conditioned[i].clone()).collect();

    let per_lead: Vec<Vec<usize>> = independent
        .iter()
        .map(|x| {
            let found = detect::decide(&detect::feature(x, rate), rate);
            detect::refine(x, &found, rate)
        })
        .collect();
    let initial = beats::consensus(&per_lead, rate);
    if initial.is_empty() {
        return Err(MeasureError::NoBeats);
    }
    let beats = beats::align(&independent, &initial, rate);
    if beats.fiducials.len() >= 3 {
        let mut r = beats.correlation.clone();
        // Real QRS complexes repeat; windows cut from noise at its peaks do not.
        if median(&mut r) < MIN_COHERENCE {
            return Err(MeasureError::NoBeats);
        }
    }

    let pre = samples(beats::PRE_S, rate);
    let post = samples(beats::POST_S, rate);
    let chosen: Vec<usize> = beats.selected.iter().map(|&i| beats.fiducials[i]).collect();
    let medians = beats::median_windows(&conditioned, &chosen, pre, post);
    let independent_medians: Vec<Vec<f64>> = stored.iter().map(|&i| medians[i].clone()).collect();

    let rr_ms = mean_rr_ms(&beats.fiducials, rate);
    let points = delineate::delineate(&independent_medians, pre, rate, rr_ms.map(|r| r / 1000.0));
    let ms = |i: usize| (i as f64 - pre as f64) * 1000.0 / rate;
    let boundaries = Boundaries {
        p_onset_ms: points.p_onset.map(ms),
        p_offset_ms: points.p_offset.map(ms),
        qrs_onset_ms: Some(ms(points.qrs_onset)),
        qrs_offset_ms: Some(ms(points.qrs_offset)),
        t_end_ms: points.t_end.map(ms),
    };
    let qrs_on = ms(points.qrs_onset);
    let pr_ms = points.p_onset.map(|p| qrs_on - ms(p));
    let qrs_ms = Some(ms(points.qrs_offset) - qrs_on);
    let qt_ms = points.t_end.map(|t| ms(t) - qrs_on);
    let rr_s = rr_ms.map(|r| r / 1000.0);
    let qtc = |power: f64| match (qt_ms, rr_s) {
        (Some(qt), Some(rr)) if rr > 0.0 => Some(qt / rr.powf(power)),
        _ => None,
    };

    let lead = |label: &str| {
        ecg.leads
            .iter()
            .position(|l| l.label == label)
            .map(|i| &medians[i])
    };
    let iso = points.iso;
    let axis = |from: Option<usize>, to: Option<usize>| -> Option<f64> {
        frontal_axis(lead("I")?, lead("aVF")?, from?, to?, iso)
    };
    let p_axis = axis(points.p_onset, points.p_offset);
    let qrs_axis = axis(Some(points.qrs_onset), Some(points.qrs_offset));
    let t_axis = axis(Some(points.qrs_offset), points.t_end);

    let mut auto = Automatic {
        r_peaks: beats.fiducials.clone(),
        heart_rate_bpm: rr_ms.map(|rr| 60_000.0 / rr),
        rr_ms,
        pr_ms,
        qrs_ms,
        qt_ms,
        qtc_bazett_ms: qtc(0.5),
        qtc_fridericia_ms: qtc(1.0 / 3.0),
        p_axis,
        qrs_axis,
        t_axis,
        median_beat: ecg
            .leads
            .iter()
            .zip(&medians)
            .map(|(l, m)| (l.label.clone(), m.iter().map(|&v| v as f32).collect()))
            .collect(),
        median_fiducial: pre,
        boundaries,
        findings: Vec::new(),
        set_aside: Vec::new(),
    };
    auto.screen();
    auto.findings = value_findings(|q| auto.value(q).map(|v| (v, Origin::Automatic)));
    auto.findings
        .extend(findings::rhythm_findings(&auto.r_peaks, rate));
    Ok(auto)
}

/// The number of samples per lead, once the record is known to be measurable.
fn check(ecg: &Ecg) -> Result<usize, MeasureError> {
    let rate = ecg.sample_rate_hz;
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&rate) {
        return Err(MeasureError::SampleRate(rate));
    }
    let first = ecg.leads.first().ok_or(MeasureError::NoLeads)?;
    let len = first.samples_uv.len();
    for lead in &ecg.leads {
        if lead.samples_uv.len() != len {
            return Err(MeasureError::LengthMismatch {
                label: lead.label.clone(),
                len: lead.samples_uv.len(),
                expected: len,
            });
        }
        if lead.samples_uv.iter().any(|v| !v.is_finite()) {
            return Err(MeasureError::NonFinite(lead.label.clone()));
        }
    }
    if len == 0 {
        return Err(MeasureError::NoLeads);
    }
    let seconds = len as f64 / rate;
    if seconds < MIN_SECONDS {
        return Err(MeasureError::TooShort { seconds });
    }
    Ok(len)
}

/// Median correlation of the beats with their template below which the "beats" are
/// taken to be noise: real records give 0.99 and more, windows cut from white noise
/// at its peaks 0.15–0.36 (see the tests).
const MIN_COHERENCE: f64 = 0.5;

/// Mean RR interval in ms, from consecutive fiducials.
fn mean_rr_ms(fid: &[usize], rate: f64) -> Option<f64> {
    if fid.len() < 2 {
        return None;
    }
    let span = fid[fid.len() - 1].abs_diff(fid[0]) as f64;
    Some(span / (fid.len() - 1) as f64 * 1000.0 / rate)
}

/// Frontal axis from the net areas of leads I and aVF over `[from, to]`, each lead
/// referred to its level at `iso` (the PR segment). Lead aVF sees the vertical
/// component scaled by cos 30° (Einthoven's triangle), so it is divided by that.
fn frontal_axis(i: &[f64], avf: &[f64], from: usize, to: usize, iso: usize) -> Option<f64> {
    if to <= from || to >= i.len() || iso >= i.len() {
        return None;
    }
    let area = |x: &[f64]| x[from..=to].iter().map(|v| v - x[iso]).sum::<f64>();
    let (x, y) = (area(i), area(avf) / (3.0f64.sqrt() / 2.0));
    if x == 0.0 && y == 0.0 {
        return None;
    }
    Some(y.atan2(x).to_degrees())
}

/// An empty automatic measurement for tests of what is built on it.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::{Automatic, Boundaries};

    /// Nothing measured, no beats, no findings.
    pub(crate) fn automatic() -> Automatic {
        Automatic {
            r_peaks: Vec::new(),
            heart_rate_bpm: None,
            rr_ms: None,
            pr_ms: None,
            qrs_ms: None,
            qt_ms: None,
            qtc_bazett_ms: None,
            qtc_fridericia_ms: None,
            p_axis: None,
            qrs_axis: None,
            t_axis: None,
            median_beat: Vec::new(),
            median_fiducial: 0,
            boundaries: Boundaries::default(),
            findings: Vec::new(),
            set_aside: Vec::new(),
        }
    }
}
