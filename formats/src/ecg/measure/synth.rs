//! Synthetic 12-lead ECGs with known beat times, intervals and axes, plus the usual
//! disturbances (baseline wander, 50 Hz mains, white noise), for the tests.
//!
//! Every wave is a pulse of exact onset and end: a half sine for P and T, a raised
//! cosine (smooth edges, like real QRS deflections) for Q, R and S, back to back; the
//! T wave ends exactly at QRS onset + QT. In the frontal plane
//! each wave is a vector at a set angle; lead I sees `cos θ`, lead II `cos(θ − 60°)`,
//! and the other limb leads are derived from them as a cart would, so the expected
//! axes are exactly the set angles.

use std::f64::consts::PI;

use crate::ecg::{Ecg, Lead, SourceFormat};

/// What to generate.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub rate: f64,
    pub seconds: f64,
    /// RR intervals (s), used in turn.
    pub rr_s: Vec<f64>,
    pub pr_ms: f64,
    pub qrs_ms: f64,
    pub qt_ms: f64,
    /// Frontal axes (degrees) of P, QRS and T.
    pub axes: [f64; 3],
    pub wander_uv: f64,
    pub mains_uv: f64,
    pub noise_uv: f64,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            rate: 500.0,
            seconds: 10.0,
            rr_s: vec![0.8],
            pr_ms: 160.0,
            qrs_ms: 90.0,
            qt_ms: 380.0,
            axes: [50.0, 40.0, 30.0],
            wander_uv: 300.0,
            mains_uv: 80.0,
            noise_uv: 15.0,
            seed: 1,
        }
    }
}

/// A generated record and where its R peaks truly are (sample indices).
pub(crate) struct Synthetic {
    pub ecg: Ecg,
    pub r_peaks: Vec<usize>,
}

/// Amplitudes (µV) of P, Q, R, S, T along the wave's frontal vector, and in V1..V6.
const FRONTAL: [f64; 5] = [150.0, -100.0, 1200.0, -300.0, 350.0];
const PRECORDIAL: [[f64; 5]; 6] = [
    [80.0, 0.0, 250.0, -1200.0, -100.0],
    [100.0, 0.0, 500.0, -1500.0, 300.0],
    [100.0, -50.0, 900.0, -900.0, 500.0],
    [120.0, -80.0, 1500.0, -500.0, 550.0],
    [120.0, -100.0, 1400.0, -300.0, 400.0],
    [100.0, -100.0, 1000.0, -150.0, 300.0],
];

/// Deterministic noise (xorshift64*), uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// Raised cosine: starts and ends with zero slope, as real QRS deflections do.
fn hann(t: f64, start: f64, duration: f64) -> f64 {
    let h = half_sine(t, start, duration);
    h * h
}

fn half_sine(t: f64, start: f64, duration: f64) -> f64 {
    if t < start || t > start + duration || duration <= 0.0 {
        0.0
    } else {
        (PI * (t - start) / duration).sin()
    }
}

/// Wave shapes at time `t` for a beat whose QRS starts at `q`: P, Q, R, S, T.
fn waves(t: f64, q: f64, s: &Spec) -> [f64; 5] {
    let qrs = s.qrs_ms / 1000.0;
    let t_len = 0.2f64.min(s.qt_ms / 1000.0 - qrs - 0.04);
    [
        half_sine(t, q - s.pr_ms / 1000.0, 0.1),
        hann(t, q, 0.15 * qrs),
        hann(t, q + 0.15 * qrs, 0.45 * qrs),
        hann(t, q + 0.6 * qrs, 0.4 * qrs),
        half_sine(t, q + s.qt_ms / 1000.0 - t_len, t_len),
    ]
}

/// Generate the record `s` describes.
pub(crate) fn generate(s: &Spec) -> Synthetic {
    let n = (s.seconds * s.rate).round() as usize;
    // QRS onsets: first at 0.5 s, then by the RR intervals in turn.
    let mut onsets = Vec::new();
    let mut q = 0.5;
    let mut k = 0;
    while q < s.seconds {
        onsets.push(q);
        q += s.rr_s[k % s.rr_s.len()];
        k += 1;
    }
    let r_peaks = onsets
        .iter()
        .map(|q| ((q + 0.375 * s.qrs_ms / 1000.0) * s.rate).round() as usize)
        .filter(|&i| i < n)
        .collect();
    let angle = |w: usize| {
        match w {
            0 => s.axes[0],
            4 => s.axes[2],
            _ => s.axes[1],
        }
        .to_radians()
    };
    let mut rng = Rng(s.seed.max(1));
    let mut stored: Vec<(String, Vec<f32>)> = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
        .iter()
        .map(|l| (l.to_string(), Vec::with_capacity(n)))
        .collect();
    for i in 0..n {
        let t = i as f64 / s.rate;
        let mut sum = [0.0; 5];
        // Only beats near `t` contribute; a beat's waves span [q - PR, q + QT].
        for q in onsets.iter().filter(|q| (t - **q).abs() < 1.0) {
            for (acc, v) in sum.iter_mut().zip(waves(t, *q, s)) {
                *acc += v;
            }
        }
        let wander = s.wander_uv
            * (0.7 * (2.0 * PI * 0.15 * t).sin() + 0.3 * (2.0 * PI * 0.4 * t + 1.0).sin());
        let mains = s.mains_uv * (2.0 * PI * 50.0 * t).sin();
        for (lead, (_, out)) in stored.iter_mut().enumerate() {
            let v: f64 = (0..5)
                .map(|w| {
                    let amp = match lead {
                        0 => FRONTAL[w] * angle(w).cos(),
                        1 => FRONTAL[w] * (angle(w) - PI / 3.0).cos(),
                        p => PRECORDIAL[p - 2][w],
                    };
                    amp * sum[w]
                })
                .sum();
            let noise = s.noise_uv * rng.next();
            out.push((v + wander + mains + noise) as f32);
        }
    }
    let mut ecg = Ecg::empty(SourceFormat::ScpEcg);
    ecg.sample_rate_hz = s.rate;
    ecg.leads = stored
        .into_iter()
        .map(|(label, samples_uv)| Lead {
            label,
            samples_uv,
            derived: false,
        })
        .collect();
    ecg.derive_limb_leads();
    Synthetic { ecg, r_peaks }
}

/// A record of `n` samples per lead from `f(lead, sample)`, for robustness tests.
pub(crate) fn record(rate: f64, n: usize, f: impl Fn(usize, usize) -> f32) -> Ecg {
    let mut ecg = Ecg::empty(SourceFormat::ScpEcg);
    ecg.sample_rate_hz = rate;
    ecg.leads = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
        .iter()
        .enumerate()
        .map(|(l, label)| Lead {
            label: label.to_string(),
            samples_uv: (0..n).map(|i| f(l, i)).collect(),
            derived: false,
        })
        .collect();
    ecg.derive_limb_leads();
    ecg
}

/// Uniform white noise in [-amplitude, amplitude), one stream per seed.
pub(crate) fn noise(seed: u64, n: usize, amplitude: f64) -> Vec<f32> {
    let mut rng = Rng(seed.max(1));
    (0..n).map(|_| (amplitude * rng.next()) as f32).collect()
}
