//! Small signal-processing kit: second-order IIR sections run forwards and backwards
//! (zero phase, so that filtering moves no wave onset or offset), a centred moving
//! average and a centred derivative.
//!
//! Filters are designed for the record's own sampling rate (SCP carts use odd rates
//! such as 1 000 000 / 1667 Hz), with the bilinear-transform formulas of R. Bristow-
//! Johnson's "Audio EQ cookbook".

use std::f64::consts::PI;

/// One biquad, normalised so that a0 = 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
}

/// Butterworth Q for a single second-order section.
const BUTTERWORTH_Q: f64 = std::f64::consts::FRAC_1_SQRT_2;

impl Biquad {
    fn new(b: [f64; 3], a0: f64, a: [f64; 2]) -> Biquad {
        Biquad {
            b: [b[0] / a0, b[1] / a0, b[2] / a0],
            a: [a[0] / a0, a[1] / a0],
        }
    }

    /// Second-order Butterworth low-pass at `hz`.
    pub(crate) fn lowpass(hz: f64, rate: f64) -> Biquad {
        let (cos, alpha) = Self::angle(hz, rate, BUTTERWORTH_Q);
        let b = (1.0 - cos) / 2.0;
        Biquad::new([b, 1.0 - cos, b], 1.0 + alpha, [-2.0 * cos, 1.0 - alpha])
    }

    /// Second-order Butterworth high-pass at `hz`.
    pub(crate) fn highpass(hz: f64, rate: f64) -> Biquad {
        let (cos, alpha) = Self::angle(hz, rate, BUTTERWORTH_Q);
        let b = (1.0 + cos) / 2.0;
        Biquad::new([b, -(1.0 + cos), b], 1.0 + alpha, [-2.0 * cos, 1.0 - alpha])
    }

    /// Notch at `hz` with quality `q` (bandwidth = hz / q).
    pub(crate) fn notch(hz: f64, rate: f64, q: f64) -> Biquad {
        let (cos, alpha) = Self::angle(hz, rate, q);
        Biquad::new(
            [1.0, -2.0 * cos, 1.0],
            1.0 + alpha,
            [-2.0 * cos, 1.0 - alpha],
        )
    }

    fn angle(hz: f64, rate: f64, q: f64) -> (f64, f64) {
        let w0 = 2.0 * PI * hz / rate;
        (w0.cos(), w0.sin() / (2.0 * q))
    }

    /// Gain at 0 Hz, used to start the filter in its steady state.
    fn dc_gain(&self) -> f64 {
        let den = 1.0 + self.a[0] + self.a[1];
        if den.abs() < 1e-12 {
            0.0
        } else {
            (self.b[0] + self.b[1] + self.b[2]) / den
        }
    }

    /// Filter in place (transposed direct form II), starting as if the first sample
    /// had always been there: no start-up transient from an implicit zero history.
    fn run<'a>(&self, x: impl Iterator<Item = &'a mut f64>) {
        let mut x = x.peekable();
        let Some(first) = x.peek().map(|v| **v) else {
            return;
        };
        let y0 = self.dc_gain() * first;
        let mut z1 = y0 - self.b[0] * first;
        let mut z2 = self.b[2] * first - self.a[1] * y0;
        for v in x {
            let input = *v;
            let y = self.b[0] * input + z1;
            z1 = self.b[1] * input - self.a[0] * y + z2;
            z2 = self.b[2] * input - self.a[1] * y;
            *v = y;
        }
    }
}

/// Apply `sections` forwards then backwards (zero phase, squared magnitude response).
/// The signal is first extended at both ends by odd reflection so that the ends carry
/// no transient; `pad_s` seconds of it (or the whole signal, if shorter).
pub(crate) fn filtfilt(x: &[f64], sections: &[Biquad], rate: f64, pad_s: f64) -> Vec<f64> {
    let n = x.len();
    if n < 2 || sections.is_empty() {
        return x.to_vec();
    }
    let pad = ((pad_s * rate) as usize).clamp(1, n - 1);
    let mut ext = Vec::with_capacity(n + 2 * pad);
    ext.extend((1..=pad).rev().map(|i| 2.0 * x[0] - x[i]));
    ext.extend_from_slice(x);
    ext.extend((1..=pad).map(|i| 2.0 * x[n - 1] - x[n - 1 - i]));
    for s in sections {
        s.run(ext.iter_mut());
    }
    for s in sections {
        s.run(ext.iter_mut().rev());
    }
    ext[pad..pad + n].to_vec()
}

/// Remove baseline wander and mains interference while keeping the QRS sharp:
/// a 0.4 Hz high-pass (about 0.5 Hz at −3 dB once run both ways, below the
/// 0.67 Hz that AHA recommendations allow for zero-phase filters) and narrow notches at
/// 50 Hz (China) and 60 Hz, where the sampling rate allows.
pub(crate) fn condition(x: &[f64], rate: f64) -> Vec<f64> {
    let mut sections = vec![Biquad::highpass(0.4, rate)];
    for mains in [50.0, 60.0] {
        // Notch only well below Nyquist; at lower rates the cart's anti-alias filter
        // has already removed it.
        if rate > 2.5 * mains {
            sections.push(Biquad::notch(mains, rate, 8.0));
        }
    }
    filtfilt(x, &sections, rate, 1.0)
}

/// Zero-phase low-pass (Butterworth, twice), when the rate allows it.
pub(crate) fn lowpass(x: &[f64], rate: f64, hz: f64) -> Vec<f64> {
    if hz >= 0.45 * rate {
        return x.to_vec();
    }
    filtfilt(x, &[Biquad::lowpass(hz, rate)], rate, 0.2)
}

/// Zero-phase band-pass built from a high-pass and a low-pass section.
pub(crate) fn bandpass(x: &[f64], rate: f64, low_hz: f64, high_hz: f64) -> Vec<f64> {
    let mut sections = vec![Biquad::highpass(low_hz, rate)];
    if high_hz < 0.45 * rate {
        sections.push(Biquad::lowpass(high_hz, rate));
    }
    filtfilt(x, &sections, rate, 0.5)
}

/// Centred moving average over `width` samples (shrinking at the ends).
pub(crate) fn moving_average(x: &[f64], width: usize) -> Vec<f64> {
    let n = x.len();
    let half = width / 2;
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    let mut acc = 0.0;
    for v in x {
        acc += v;
        prefix.push(acc);
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(n);
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// Centred difference over ±`k` samples, in units per second.
pub(crate) fn derivative(x: &[f64], k: usize, rate: f64) -> Vec<f64> {
    let n = x.len();
    let k = k.max(1);
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(k);
            let hi = (i + k).min(n.saturating_sub(1));
            if hi > lo {
                (x[hi] - x[lo]) * rate / (hi - lo) as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// Round seconds to a whole number of samples (at least one).
pub(crate) fn samples(seconds: f64, rate: f64) -> usize {
    ((seconds * rate).round() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, rate: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (2.0 * PI * hz * i as f64 / rate).sin())
            .collect()
    }

    fn rms(x: &[f64]) -> f64 {
        (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn measure_filter_condition_removes_mains_and_wander_keeps_qrs_band() {
        let rate = 500.0;
        let n = 5000;
        let mains = condition(&sine(50.0, rate, n), rate);
        assert!(rms(&mains[500..4500]) < 0.02, "50 Hz left: {}", rms(&mains));
        let wander = condition(&sine(0.1, rate, n), rate);
        assert!(
            rms(&wander[500..4500]) < 0.1,
            "0.1 Hz left: {}",
            rms(&wander)
        );
        let qrs = condition(&sine(15.0, rate, n), rate);
        assert!((rms(&qrs[500..4500]) - rms(&sine(15.0, rate, n))).abs() < 0.02);
    }

    #[test]
    fn measure_filter_constant_input_has_no_edge_transient() {
        let x = vec![100.0; 1000];
        let y = lowpass(&x, 500.0, 40.0);
        assert!(y.iter().all(|v| (v - 100.0).abs() < 1e-6));
        let y = condition(&x, 500.0);
        assert!(y.iter().all(|v| v.abs() < 1e-6));
    }
}
