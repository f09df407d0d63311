//! QRS detection after Pan & Tompkins (IEEE Trans. Biomed. Eng. 32(3), 1985): band-pass
//! 5–15 Hz, derivative, squaring, 150 ms moving-window integration, then two adaptive
//! thresholds (on the integrated and on the filtered signal) with search-back for
//! missed beats, a 200 ms refractory period and a slope test against T waves.
//!
//! Differences from the paper, all because we work offline on whole records: the
//! filters run forwards and backwards (zero phase) and the integration window is
//! centred, so no group delay needs compensating.

use super::filter::{bandpass, derivative, moving_average, samples};

/// Refractory period: no second QRS within 200 ms (physiology).
const REFRACTORY_S: f64 = 0.2;
/// Beats within this time of the previous one must pass the T-wave slope test.
const T_WAVE_WINDOW_S: f64 = 0.36;
/// Integration window: about the widest normal QRS.
const INTEGRATION_S: f64 = 0.15;
/// Learning phase at the start of the record that seeds both thresholds.
const LEARNING_S: f64 = 2.0;

/// Signals derived from one lead for detection.
pub(crate) struct Feature {
    /// Band-passed signal (5–15 Hz).
    pub bandpassed: Vec<f64>,
    /// Moving-window integral of the squared derivative.
    pub integrated: Vec<f64>,
}

/// The Pan-Tompkins preprocessing chain.
pub(crate) fn feature(x: &[f64], rate: f64) -> Feature {
    let bandpassed = bandpass(x, rate, 5.0, 15.0);
    // The paper's five-point derivative spans ±2 samples at 200 Hz, i.e. ±10 ms.
    let slope = derivative(&bandpassed, samples(0.01, rate), rate);
    let squared: Vec<f64> = slope.iter().map(|v| v * v).collect();
    let integrated = moving_average(&squared, samples(INTEGRATION_S, rate));
    Feature {
        bandpassed,
        integrated,
    }
}

/// Running signal and noise levels with the paper's update rules.
struct Levels {
    signal: f64,
    noise: f64,
}

impl Levels {
    fn seed(x: &[f64]) -> Levels {
        let max = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mean = x.iter().map(|v| v.abs()).sum::<f64>() / x.len().max(1) as f64;
        Levels {
            signal: max / 3.0,
            noise: mean / 2.0,
        }
    }

    /// Threshold I1 / F1: a quarter of the way from noise to signal.
    fn threshold(&self) -> f64 {
        self.noise + 0.25 * (self.signal - self.noise)
    }

    fn signal_peak(&mut self, peak: f64, weight: f64) {
        self.signal = weight * peak + (1.0 - weight) * self.signal;
    }

    fn noise_peak(&mut self, peak: f64) {
        self.noise = 0.125 * peak + 0.875 * self.noise;
    }
}

/// Local maxima of `x`, keeping the highest when two are closer than `distance`.
fn peaks(x: &[f64], distance: usize) -> Vec<usize> {
    let mut candidates: Vec<usize> = (1..x.len().saturating_sub(1))
        .filter(|&i| x[i] > x[i - 1] && x[i] >= x[i + 1] && x[i] > 0.0)
        .collect();
    candidates.sort_by(|&a, &b| x[b].total_cmp(&x[a]));
    let mut taken = vec![false; x.len()];
    let mut kept = Vec::new();
    for i in candidates {
        let lo = i.saturating_sub(distance);
        let hi = (i + distance).min(x.len() - 1);
        if !taken[lo..=hi].iter().any(|t| *t) {
            taken[i] = true;
            kept.push(i);
        }
    }
    kept.sort_unstable();
    kept
}

/// Index of the largest |x| in `[lo, hi)`.
fn abs_max(x: &[f64], lo: usize, hi: usize) -> usize {
    let hi = hi.min(x.len());
    (lo.min(hi)..hi)
        .max_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs()))
        .unwrap_or(lo.min(x.len().saturating_sub(1)))
}

/// Largest |slope| of the band-passed signal around `at`, for the T-wave test.
fn max_slope(bp: &[f64], at: usize, half: usize) -> f64 {
    let lo = at.saturating_sub(half).max(1);
    let hi = (at + half).min(bp.len());
    (lo..hi)
        .map(|i| (bp[i] - bp[i - 1]).abs())
        .fold(0.0, f64::max)
}

/// A beat accepted by the decision rules.
#[derive(Clone, Copy)]
struct Beat {
    /// Peak of the integrated signal.
    at: usize,
    /// Largest |band-passed| sample near it.
    bp_at: usize,
}

/// Decision rules on the feature signals; returns the band-pass peak of each QRS.
pub(crate) fn decide(f: &Feature, rate: f64) -> Vec<usize> {
    let mwi = &f.integrated;
    let bp = &f.bandpassed;
    let n = mwi.len();
    let refractory = samples(REFRACTORY_S, rate);
    if n < 2 * refractory {
        return Vec::new();
    }
    let learn = samples(LEARNING_S, rate).min(n);
    let mut li = Levels::seed(&mwi[..learn]);
    let mut lf = Levels::seed(&bp[..learn]);
    let half_qrs = samples(INTEGRATION_S / 2.0 + 0.02, rate);
    let candidates = peaks(mwi, refractory);
    let mut beats: Vec<Beat> = Vec::new();
    // RR average of the last eight beats, and of the last eight "regular" ones.
    let mut rr_recent: Vec<f64> = Vec::new();
    let mut rr_regular: Vec<f64> = Vec::new();
    let t_window = samples(T_WAVE_WINDOW_S, rate);
    let mut last_slope = 0.0;
    let mut ci = 0;
    while ci < candidates.len() {
        let at = candidates[ci];
        let bp_at = abs_max(bp, at.saturating_sub(half_qrs), at + half_qrs + 1);
        // Search-back: a gap longer than 166 % of the regular RR means a missed beat;
        // take the largest candidate in it above the lower thresholds.
        if let (Some(last), Some(rr)) = (beats.last().copied(), mean(&rr_regular)) {
            if (at - last.at) as f64 > 1.66 * rr {
                let missed = candidates[..ci]
                    .iter()
                    .copied()
                    .filter(|&c| c > last.at + refractory && c + refractory < at)
                    .max_by(|&a, &b| mwi[a].total_cmp(&mwi[b]));
                if let Some(m) = missed {
                    let m_bp = abs_max(bp, m.saturating_sub(half_qrs), m + half_qrs + 1);
                    if mwi[m] > 0.5 * li.threshold() && bp[m_bp].abs() > 0.5 * lf.threshold() {
                        li.signal_peak(mwi[m], 0.25);
                        lf.signal_peak(bp[m_bp].abs(), 0.25);
                        push_rr(&mut rr_recent, &mut rr_regular, (m - last.at) as f64);
                        last_slope = max_slope(bp, m_bp, half_qrs);
                        beats.push(Beat { at: m, bp_at: m_bp });
                        // Re-examine the current candidate against the new beat.
                        continue;
                    }
                }
            }
        }
        ci += 1;
        let peak = mwi[at];
        let peak_f = bp[bp_at].abs();
        // Irregular rhythm: halve the thresholds, as in the paper.
        let irregular = match (beats.last(), mean(&rr_recent), mean(&rr_regular)) {
            (Some(last), Some(_), Some(reg)) => {
                let rr = (at - last.at) as f64;
                rr < 0.92 * reg || rr > 1.16 * reg
            }
            _ => false,
        };
        let scale = if irregular { 0.5 } else { 1.0 };
        let is_qrs = peak > scale * li.threshold() && peak_f > scale * lf.threshold();
        if !is_qrs {
            li.noise_peak(peak);
            lf.noise_peak(peak_f);
            continue;
        }
        let slope = max_slope(bp, bp_at, half_qrs);
        if let Some(last) = beats.last().copied() {
            if at - last.at < refractory {
                continue;
            }
            // A large, early "beat" whose slope is under half the last QRS's is a T wave.
            if at - last.at < t_window && slope < 0.5 * last_slope {
                li.noise_peak(peak);
                lf.noise_peak(peak_f);
                continue;
            }
            push_rr(&mut rr_recent, &mut rr_regular, (at - last.at) as f64);
        }
        li.signal_peak(peak, 0.125);
        lf.signal_peak(peak_f, 0.125);
        last_slope = slope;
        beats.push(Beat { at, bp_at });
    }
    beats.iter().map(|b| b.bp_at).collect()
}

/// Keep the last eight RR intervals, and the last eight within 92–116 % of the
/// regular average (the paper's RR AVERAGE1 and RR AVERAGE2).
fn push_rr(recent: &mut Vec<f64>, regular: &mut Vec<f64>, rr: f64) {
    recent.push(rr);
    if recent.len() > 8 {
        recent.remove(0);
    }
    let in_range = match mean(regular) {
        Some(avg) => rr > 0.92 * avg && rr < 1.16 * avg,
        None => true,
    };
    // While fewer than eight regular intervals exist, or when the rhythm changed
    // for good (all eight recent out of range), fall back to the recent average.
    if in_range {
        regular.push(rr);
        if regular.len() > 8 {
            regular.remove(0);
        }
    } else if recent.len() == 8 && regular.len() == 8 {
        let all_out = recent
            .iter()
            .all(|r| mean(regular).is_some_and(|avg| *r <= 0.92 * avg || *r >= 1.16 * avg));
        if all_out {
            *regular = recent.clone();
        }
    }
}

fn mean(x: &[f64]) -> Option<f64> {
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

/// Move each detection to the R peak on the raw signal: the extremum within ±60 ms,
/// with one polarity for the whole record (the one with the larger median deflection)
/// so that an RS complex is not marked on R in one beat and on S in the next.
pub(crate) fn refine(x: &[f64], detections: &[usize], rate: f64) -> Vec<usize> {
    let half = samples(0.06, rate);
    let windows: Vec<(usize, usize, usize)> = detections
        .iter()
        .map(|&d| {
            let lo = d.saturating_sub(half);
            let hi = (d + half + 1).min(x.len());
            let max = (lo..hi).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap_or(d);
            let min = (lo..hi).min_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap_or(d);
            (lo, max, min)
        })
        .collect();
    let level = |lo: usize| x[lo];
    let mut up: Vec<f64> = windows.iter().map(|w| x[w.1] - level(w.0)).collect();
    let mut down: Vec<f64> = windows.iter().map(|w| level(w.0) - x[w.2]).collect();
    let positive = median(&mut up) >= median(&mut down);
    let mut out: Vec<usize> = windows
        .iter()
        .map(|w| if positive { w.1 } else { w.2 })
        .collect();
    out.dedup();
    out
}

/// Median (sorts the slice); 0 for an empty slice.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
