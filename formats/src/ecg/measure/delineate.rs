//! Wave boundaries on the median beats, all leads at once.
//!
//! Devices report global intervals: the QRS starts at the earliest onset in any lead and
//! ends at the latest offset, and likewise for P and T. Hence:
//! - QRS: the spatial velocity `v(t) = sqrt(Σ x'ₗ(t)²)` over the independent leads;
//!   onset and offset are where it falls below a fraction of its peak and stays there
//!   for 10 ms, i.e. where the fast deflections of every lead have stopped.
//! - P: the spatial magnitude `m(t) = sqrt(Σ (xₗ(t) − isoₗ)²)` (30 Hz low-pass, each
//!   lead referred to its isoelectric PR level), whose P hump starts where every lead
//!   leaves the baseline: a threshold crossing of `m` before the P peak.
//! - T end: per lead, the point after the steepest return slope where the slope has
//!   flattened (a slope criterion, which unlike a tangent-to-baseline needs no exact
//!   baseline level); then the median over the leads with a T wave, so that one noisy
//!   or flat lead cannot move it.

use super::detect::median;
use super::filter::{derivative, lowpass, moving_average, samples};

/// Sample indices (in the median beat) of the wave boundaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Points {
    /// P onset, when a P wave is found.
    pub p_onset: Option<usize>,
    /// P offset, when a P wave is found.
    pub p_offset: Option<usize>,
    /// QRS onset.
    pub qrs_onset: usize,
    /// QRS offset (J point).
    pub qrs_offset: usize,
    /// T end, when a T wave is found.
    pub t_end: Option<usize>,
    /// Isoelectric reference point (PR segment).
    pub iso: usize,
}

/// Fraction of the QRS's peak spatial velocity (above the quiet level) that marks its
/// onset and offset. Tuned on the two records with device measurements (see the module
/// tests): 0.05 follows unfiltered data best, but on a record stored through the cart's
/// 35 Hz low-pass it adds 7 ms at each end; 0.07 holds on both.
const QRS_FRACTION: f64 = 0.07;
/// Low-pass before the QRS velocity: removes the noise of 1 kHz unfiltered records
/// (which otherwise raises the quiet level and hides a small q wave).
const QRS_LOWPASS_HZ: f64 = 40.0;
/// Low-pass for P and T waves (their spectrum ends well below).
const PT_LOWPASS_HZ: f64 = 30.0;
/// Fraction of the P peak's spatial magnitude (above the level before it) that marks
/// P onset and offset.
const P_FRACTION: f64 = 0.06;
/// The T wave ends where its slope back to baseline has fallen to this fraction of
/// the steepest slope.
const T_SLOPE_FRACTION: f64 = 0.15;
/// A boundary needs the signal to stay quiet this long.
const QUIET_S: f64 = 0.01;
/// Smallest P wave taken as one (spatial magnitude, µV).
const MIN_P_UV: f64 = 20.0;
/// Smallest T wave in a lead for that lead to vote on the T end (µV).
const MIN_T_UV: f64 = 50.0;
/// Latest T end searched, from the fiducial (the median beat ends at 0.7 s).
const POST_LIMIT_S: f64 = 0.68;

/// Delineate the median beats `beats` (one per independent lead, fiducial at `fid`);
/// `rr_s` is the average RR interval, when known, to bound the T and P searches.
pub(crate) fn delineate(beats: &[Vec<f64>], fid: usize, rate: f64, rr_s: Option<f64>) -> Points {
    let len = beats.first().map_or(0, Vec::len);
    let at = |s: f64| -> usize {
        ((fid as f64 + s * rate).round().max(0.0) as usize).min(len.saturating_sub(1))
    };
    let k = samples(0.004, rate);
    let slopes: Vec<Vec<f64>> = beats
        .iter()
        .map(|b| derivative(&lowpass(b, rate, QRS_LOWPASS_HZ), k, rate))
        .collect();
    let velocity: Vec<f64> = (0..len)
        .map(|i| slopes.iter().map(|d| d[i] * d[i]).sum::<f64>().sqrt())
        .collect();
    let (qrs_onset, qrs_offset) = qrs_bounds(&velocity, fid, rate, &at);

    // Isoelectric level per lead: the quietest 10 ms in the 80 ms before QRS onset.
    let smooth_v = moving_average(&velocity, samples(QUIET_S, rate));
    let lo = qrs_onset.saturating_sub(samples(0.08, rate));
    let iso = (lo..qrs_onset.max(lo + 1))
        .min_by(|&a, &b| smooth_v[a].total_cmp(&smooth_v[b]))
        .unwrap_or(lo);
    let half = samples(0.005, rate);
    let leveled: Vec<Vec<f64>> = beats
        .iter()
        .map(|b| {
            let s = lowpass(b, rate, PT_LOWPASS_HZ);
            let w = &s[iso.saturating_sub(half)..(iso + half + 1).min(len)];
            let level = w.iter().sum::<f64>() / w.len() as f64;
            s.iter().map(|v| v - level).collect()
        })
        .collect();
    let magnitude: Vec<f64> = (0..len)
        .map(|i| leveled.iter().map(|b| b[i] * b[i]).sum::<f64>().sqrt())
        .collect();

    // T end: the median over the leads with a T wave, so that one noisy lead cannot
    // move it (a multi-lead consensus, in the spirit of the global QT end).
    let rr = rr_s.unwrap_or(1.0);
    let t_from = qrs_offset + samples(0.04, rate);
    let t_to = at((0.6 * rr.sqrt()).min(rr - 0.08).min(POST_LIMIT_S));
    let mut ends: Vec<f64> = leveled
        .iter()
        .filter_map(|x| lead_t_end(x, t_from, t_to, rate))
        .map(|i| i as f64)
        .collect();
    let t_end = (!ends.is_empty()).then(|| median(&mut ends).round() as usize);

    // The P wave lies after the previous beat's T wave and at most 350 ms before QRS.
    let mut p_lo = qrs_onset.saturating_sub(samples(0.35, rate));
    if let (Some(te), Some(rr)) = (t_end, rr_s) {
        let prev_t_end = (te as f64 - rr * rate).round();
        if prev_t_end > p_lo as f64 {
            p_lo = prev_t_end as usize;
        }
    }
    let p_hi = qrs_onset.saturating_sub(samples(0.03, rate));
    let (p_onset, p_offset) = match p_wave(&magnitude, p_lo, p_hi) {
        Some((on, off)) => (Some(on), Some(off)),
        None => (None, None),
    };
    Points {
        p_onset,
        p_offset,
        qrs_onset,
        qrs_offset,
        t_end,
        iso,
    }
}

/// QRS onset and offset from the spatial velocity.
fn qrs_bounds(v: &[f64], fid: usize, rate: f64, at: &dyn Fn(f64) -> usize) -> (usize, usize) {
    let core = at(-0.06)..=at(0.06);
    let peak = core.clone().map(|i| v[i]).fold(0.0, f64::max);
    // Quiet level: the calmest 20 ms of the PR region.
    let smooth = moving_average(v, samples(0.02, rate));
    let quiet = (at(-0.25)..at(-0.04))
        .map(|i| smooth[i])
        .fold(f64::INFINITY, f64::min)
        .min(peak);
    let quiet = if quiet.is_finite() { quiet } else { 0.0 };
    let run = samples(QUIET_S, rate);
    let threshold = quiet + QRS_FRACTION * (peak - quiet);
    // Walk outwards from the fiducial until the velocity stays low for `run` samples;
    // the boundary is the edge of that quiet run next to the QRS.
    let onset =
        quiet_run((at(-0.15)..=fid).rev(), v, threshold, run).map_or(at(-0.15), |i| i + run);
    let offset = quiet_run(fid..=at(0.2), v, threshold, run).map_or(at(0.2), |i| i + 1 - run);
    (onset.min(fid), offset.max(fid))
}

/// The index (in walking order) at which `v` has been below `threshold` for `run`
/// consecutive samples.
fn quiet_run(
    walk: impl Iterator<Item = usize>,
    v: &[f64],
    threshold: f64,
    run: usize,
) -> Option<usize> {
    let mut below = 0;
    for i in walk {
        if v[i] < threshold {
            below += 1;
            if below >= run {
                return Some(i);
            }
        } else {
            below = 0;
        }
    }
    None
}

/// T end of one lead (referred to its isoelectric level) in `[from, to)`: after the
/// steepest slope back towards the baseline, the first point where the slope has
/// fallen below [`T_SLOPE_FRACTION`] of it. `None` without a T wave of at least
/// [`MIN_T_UV`].
fn lead_t_end(x: &[f64], from: usize, to: usize, rate: f64) -> Option<usize> {
    if to <= from + 2 {
        return None;
    }
    let peak = (from..to).max_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs()))?;
    if x[peak].abs() < MIN_T_UV {
        return None;
    }
    // Slope towards the baseline is negative after a positive T, positive after a
    // negative one: flip so that "back to baseline" is always negative.
    let sign = x[peak].signum();
    let d: Vec<f64> = derivative(&x[..to], samples(0.01, rate), rate)
        .iter()
        .map(|v| v * sign)
        .collect();
    let steep = (peak..to).min_by(|&a, &b| d[a].total_cmp(&d[b]))?;
    if d[steep] >= 0.0 {
        return None;
    }
    (steep..to).find(|&i| d[i] > T_SLOPE_FRACTION * d[steep])
}

/// P onset and offset in `[lo, hi)` of the spatial magnitude.
fn p_wave(m: &[f64], lo: usize, hi: usize) -> Option<(usize, usize)> {
    if hi <= lo + 4 {
        return None;
    }
    let peak = (lo..hi).max_by(|&a, &b| m[a].total_cmp(&m[b]))?;
    // A maximum on the window's edge is the tail of the T or head of the QRS.
    if peak == lo || peak + 1 == hi {
        return None;
    }
    let before = (lo..peak).map(|i| m[i]).fold(f64::INFINITY, f64::min);
    let after = (peak..hi).map(|i| m[i]).fold(f64::INFINITY, f64::min);
    if m[peak] - before.max(after) < MIN_P_UV {
        return None;
    }
    let on_thr = before + P_FRACTION * (m[peak] - before);
    let off_thr = after + P_FRACTION * (m[peak] - after);
    let onset = (lo..=peak).rev().find(|&i| m[i] < on_thr).unwrap_or(lo);
    let offset = (peak..hi).find(|&i| m[i] < off_thr).unwrap_or(hi - 1);
    Some((onset, offset))
}
