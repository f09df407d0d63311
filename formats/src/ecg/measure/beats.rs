//! From per-lead detections to aligned beats and a median beat per lead.
//!
//! 1. Multi-lead consensus: a QRS is a moment where at least half of the leads that
//!    detect anything agree within 100 ms, so a noisy or disconnected lead can neither
//!    add nor hide beats.
//! 2. Alignment: each beat is shifted (±40 ms) to best match the median QRS of all
//!    leads, twice; R positions from one lead jitter between R and S, correlation over
//!    all leads does not.
//! 3. Selection: beats of the dominant shape (correlation ≥ 0.9 with the template),
//!    not premature, are kept for the median, so that an ectopic beat does not bend it.
//! 4. Median, sample by sample and lead by lead: robust to a beat with a spike.

use super::detect::median;
use super::filter::samples;

/// Samples before and after the fiducial point in a median beat (as in the 1.2 s
/// median beats Mortara carts store in DICOM).
pub(crate) const PRE_S: f64 = 0.5;
/// See [`PRE_S`].
pub(crate) const POST_S: f64 = 0.7;

/// Half-width of the QRS window used for alignment and shape comparison.
const QRS_HALF_S: f64 = 0.08;
/// Largest alignment shift.
const MAX_SHIFT_S: f64 = 0.04;
/// Detections of different leads closer than this belong to the same beat.
const CLUSTER_S: f64 = 0.1;
/// Correlation with the template above which a beat has the dominant shape.
const DOMINANT_R: f64 = 0.9;
/// Most beats that enter a median (evenly spread over a long record).
const MAX_MEDIAN_BEATS: usize = 120;

/// Beats of one record.
pub(crate) struct Beats {
    /// Fiducial point of every beat (sample index in the record).
    pub fiducials: Vec<usize>,
    /// Correlation of each beat's QRS with the template.
    pub correlation: Vec<f64>,
    /// Indices (into `fiducials`) of the beats that make the median.
    pub selected: Vec<usize>,
}

/// Beats on which at least half of the leads with any detection agree.
pub(crate) fn consensus(per_lead: &[Vec<usize>], rate: f64) -> Vec<usize> {
    let active = per_lead.iter().filter(|d| !d.is_empty()).count();
    if active == 0 {
        return Vec::new();
    }
    let need = active.div_ceil(2);
    let mut all: Vec<(usize, usize)> = per_lead
        .iter()
        .enumerate()
        .flat_map(|(lead, d)| d.iter().map(move |&p| (p, lead)))
        .collect();
    all.sort_unstable();
    let window = samples(CLUSTER_S, rate);
    let mut accepted: Vec<(usize, usize)> = Vec::new(); // (position, votes)
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 - all[i].0 <= window {
            j += 1;
        }
        let mut leads: Vec<usize> = all[i..=j].iter().map(|a| a.1).collect();
        leads.sort_unstable();
        leads.dedup();
        if leads.len() >= need {
            let mut pos: Vec<f64> = all[i..=j].iter().map(|a| a.0 as f64).collect();
            accepted.push((median(&mut pos).round() as usize, leads.len()));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    // Two clusters inside the refractory period are one beat seen early and late.
    let refractory = samples(0.2, rate);
    let mut out: Vec<(usize, usize)> = Vec::new();
    for a in accepted {
        match out.last_mut() {
            Some(last) if a.0 - last.0 < refractory => {
                if a.1 > last.1 {
                    *last = a;
                }
            }
            _ => out.push(a),
        }
    }
    out.into_iter().map(|a| a.0).collect()
}

/// Window `[at - pre, at + post]` of `x`, `None` where it leaves the record.
fn window(x: &[f64], at: usize, pre: usize, post: usize) -> Vec<Option<f64>> {
    (0..pre + post + 1)
        .map(|k| (at + k).checked_sub(pre).and_then(|i| x.get(i).copied()))
        .collect()
}

/// Per lead, the sample-by-sample median of the windows around `at` over `beats`.
/// A sample no beat covers takes the nearest covered value.
pub(crate) fn median_windows(
    leads: &[Vec<f64>],
    at: &[usize],
    pre: usize,
    post: usize,
) -> Vec<Vec<f64>> {
    leads
        .iter()
        .map(|x| {
            let wins: Vec<Vec<Option<f64>>> = at.iter().map(|&a| window(x, a, pre, post)).collect();
            let mut m: Vec<Option<f64>> = (0..pre + post + 1)
                .map(|k| {
                    let mut v: Vec<f64> = wins.iter().filter_map(|w| w[k]).collect();
                    (!v.is_empty()).then(|| median(&mut v))
                })
                .collect();
            fill_gaps(&mut m);
            m.into_iter().map(|v| v.unwrap_or(0.0)).collect()
        })
        .collect()
}

/// Replace `None` by the nearest value (forwards, then backwards).
fn fill_gaps(m: &mut [Option<f64>]) {
    let mut last = None;
    for v in m.iter_mut() {
        if v.is_none() {
            *v = last;
        }
        last = *v;
    }
    let mut next = None;
    for v in m.iter_mut().rev() {
        if v.is_none() {
            *v = next;
        }
        next = *v;
    }
}

/// Normalised correlation (means removed) of beat `at + shift` with the template,
/// over all leads at once.
/// Every `step`-th sample enters, so that the cost does not grow with the sampling rate.
fn correlation(
    leads: &[Vec<f64>],
    template: &[Vec<f64>],
    at: isize,
    half: usize,
    step: usize,
) -> f64 {
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, t) in leads.iter().zip(template) {
        let count = t.len().div_ceil(step) as f64;
        let mx = (0..t.len())
            .step_by(step)
            .filter_map(|k| sample(x, at + k as isize - half as isize))
            .sum::<f64>()
            / count;
        let mt = t.iter().step_by(step).sum::<f64>() / count;
        for (k, tv) in t.iter().enumerate().step_by(step) {
            let xv = sample(x, at + k as isize - half as isize).unwrap_or(mx) - mx;
            let tv = tv - mt;
            sxy += xv * tv;
            sxx += xv * xv;
            syy += tv * tv;
        }
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

fn sample(x: &[f64], i: isize) -> Option<f64> {
    usize::try_from(i).ok().and_then(|i| x.get(i).copied())
}

/// Align beats on the multi-lead QRS template, pick the dominant ones and move the
/// fiducial to the peak of the template's spatial magnitude (the "R peak" of the
/// combined leads). `leads` are the conditioned signals.
pub(crate) fn align(leads: &[Vec<f64>], initial: &[usize], rate: f64) -> Beats {
    let half = samples(QRS_HALF_S, rate);
    let max_shift = samples(MAX_SHIFT_S, rate) as isize;
    // 1 ms resolution is enough for alignment; finer only costs time at high rates.
    let step = ((rate / 1000.0).floor() as usize).max(1);
    let mut fid: Vec<usize> = initial.to_vec();
    let mut corr = vec![0.0; fid.len()];
    for _ in 0..2 {
        let template = median_windows(leads, &subset(&fid), half, half);
        for (f, c) in fid.iter_mut().zip(corr.iter_mut()) {
            let (best, r) = (-max_shift..=max_shift)
                .step_by(step)
                .map(|s| {
                    (
                        s,
                        correlation(leads, &template, *f as isize + s, half, step),
                    )
                })
                .fold((0, f64::MIN), |acc, x| if x.1 > acc.1 { x } else { acc });
            *f = (*f as isize + best).max(0) as usize;
            *c = r;
        }
    }
    // Fiducial: the largest spatial magnitude of the template, measured from the
    // level at the start of the QRS window.
    let template = median_windows(leads, &subset(&fid), half, half);
    let magnitude =
        |k: usize| -> f64 { template.iter().map(|t| (t[k] - t[0]).powi(2)).sum::<f64>() };
    let peak = (0..2 * half + 1)
        .max_by(|&a, &b| magnitude(a).total_cmp(&magnitude(b)))
        .unwrap_or(half);
    let len = leads.first().map_or(0, Vec::len);
    for f in fid.iter_mut() {
        *f = (*f + peak).saturating_sub(half).min(len.saturating_sub(1));
    }
    let selected = select(&fid, &corr);
    Beats {
        fiducials: fid,
        correlation: corr,
        selected,
    }
}

/// At most [`MAX_MEDIAN_BEATS`] fiducials, evenly spread.
fn subset(fid: &[usize]) -> Vec<usize> {
    if fid.len() <= MAX_MEDIAN_BEATS {
        return fid.to_vec();
    }
    let step = fid.len() as f64 / MAX_MEDIAN_BEATS as f64;
    (0..MAX_MEDIAN_BEATS)
        .map(|i| fid[((i as f64 * step) as usize).min(fid.len() - 1)])
        .collect()
}

/// Dominant, non-premature beats; relax each rule when it would leave nothing.
fn select(fid: &[usize], corr: &[f64]) -> Vec<usize> {
    let all: Vec<usize> = (0..fid.len()).collect();
    let dominant: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| corr[i] >= DOMINANT_R)
        .collect();
    let dominant = if dominant.is_empty() { all } else { dominant };
    let mut rr: Vec<f64> = fid.windows(2).map(|w| w[1].abs_diff(w[0]) as f64).collect();
    let rr_median = median(&mut rr);
    // Premature beats carry a different (or hidden) P wave and a fused T.
    let on_time: Vec<usize> = dominant
        .iter()
        .copied()
        .filter(|&i| i == 0 || fid[i].abs_diff(fid[i - 1]) as f64 >= 0.85 * rr_median)
        .collect();
    let chosen = if on_time.is_empty() {
        dominant
    } else {
        on_time
    };
    subset(&chosen)
}
