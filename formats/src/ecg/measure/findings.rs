//! Triage flags from the measurements. They order the cardiology worklist; they are
//! not diagnoses, and every text says who measured the value it states.
//!
//! Value flags are decided on the value rounded as it is printed (see
//! [`crate::ecg::shown`]), so that "60 次/分" is never called bradycardia.
//!
//! Emergency thresholds: a ventricular rate below 40 or above 150 bpm (the issue's
//! triage rule), and a pause of 3 s or more (our choice: a pause that long is treated
//! as critical by common ECG critical-value lists).

use super::Finding;
use crate::ecg::shown::{Origin, Quantity};

/// Below this rate: bradycardia flag (the usual adult limits, 60 and 100 bpm).
const BRADY_BPM: f64 = 60.0;
/// Below this rate: emergency.
const BRADY_EMERGENCY_BPM: f64 = 40.0;
/// Above this rate: tachycardia flag.
const TACHY_BPM: f64 = 100.0;
/// Above this rate: emergency.
const TACHY_EMERGENCY_BPM: f64 = 150.0;
/// Longest RR (s) before a pause is flagged, and the emergency limit.
const PAUSE_S: f64 = 2.0;
/// See [`PAUSE_S`].
const PAUSE_EMERGENCY_S: f64 = 3.0;
/// Successive RR differences (relative to the mean RR) whose median above this marks
/// an irregular rhythm: one ectopic beat changes two differences out of many, atrial
/// fibrillation changes most of them.
const IRREGULAR_MEDIAN_DIFF: f64 = 0.1;
/// Limits for interval flags (ms).
const LONG_PR_MS: f64 = 200.0;
/// See [`LONG_PR_MS`].
const WIDE_QRS_MS: f64 = 120.0;
/// See [`LONG_PR_MS`]: Bazett QTc.
const LONG_QTC_MS: f64 = 480.0;

fn finding(code: &str, zh: String, en: String, emergency: bool) -> Finding {
    Finding {
        code: code.to_string(),
        text_zh: zh,
        text_en: en,
        emergency,
    }
}

/// Codes of the flags about the beats' rhythm rather than about one value.
pub(crate) const RHYTHM_CODES: [&str; 2] = ["PAUSE", "IRREGULAR_RR"];

/// Flags about single values; `value` gives each quantity's value and who measured
/// it. Values are rounded before any threshold is applied.
pub(crate) fn value_findings(value: impl Fn(Quantity) -> Option<(f64, Origin)>) -> Vec<Finding> {
    let mut out = Vec::new();
    let get = |q: Quantity| value(q).map(|(v, o)| (v.round(), o));
    let who = |o: Origin| match o {
        Origin::Device => ("设备测量", "device"),
        Origin::Automatic => ("自动测量", "automatic"),
    };
    if let Some((hr, o)) = get(Quantity::HeartRate) {
        let (z, e) = who(o);
        if hr < BRADY_BPM {
            out.push(finding(
                "BRADYCARDIA",
                format!("心室率 {hr:.0} 次/分，心动过缓（{z}）"),
                format!("Ventricular rate {hr:.0} bpm: bradycardia ({e})"),
                hr < BRADY_EMERGENCY_BPM,
            ));
        } else if hr > TACHY_BPM {
            out.push(finding(
                "TACHYCARDIA",
                format!("心室率 {hr:.0} 次/分，心动过速（{z}）"),
                format!("Ventricular rate {hr:.0} bpm: tachycardia ({e})"),
                hr > TACHY_EMERGENCY_BPM,
            ));
        }
    }
    if let Some((pr, o)) = get(Quantity::Pr).filter(|(v, _)| *v > LONG_PR_MS) {
        let (z, e) = who(o);
        out.push(finding(
            "LONG_PR",
            format!("PR 间期 {pr:.0} ms，延长（{z}）"),
            format!("PR interval {pr:.0} ms: prolonged ({e})"),
            false,
        ));
    }
    if let Some((qrs, o)) = get(Quantity::Qrs).filter(|(v, _)| *v >= WIDE_QRS_MS) {
        let (z, e) = who(o);
        out.push(finding(
            "WIDE_QRS",
            format!("QRS 时限 {qrs:.0} ms，增宽（{z}）"),
            format!("QRS duration {qrs:.0} ms: wide ({e})"),
            false,
        ));
    }
    if let Some((qtc, o)) = get(Quantity::Qtc).filter(|(v, _)| *v > LONG_QTC_MS) {
        let (z, e) = who(o);
        let formula = match o {
            Origin::Automatic => "（Bazett）",
            Origin::Device => " ",
        };
        out.push(finding(
            "LONG_QTC",
            format!("QTc{formula}{qtc:.0} ms，延长（{z}）"),
            format!("QTc {qtc:.0} ms: prolonged ({e})"),
            false,
        ));
    }
    out
}

/// Flags about the rhythm of the beats we found; `rate` is the sampling rate of
/// `r_peaks`.
pub(crate) fn rhythm_findings(r_peaks: &[usize], rate: f64) -> Vec<Finding> {
    let mut out = Vec::new();
    let rr: Vec<f64> = r_peaks
        .windows(2)
        .map(|w| w[1].abs_diff(w[0]) as f64 / rate)
        .collect();
    if let Some(longest) = rr.iter().copied().reduce(f64::max) {
        if longest >= PAUSE_S {
            out.push(finding(
                "PAUSE",
                format!("最长 RR 间期 {longest:.1} 秒，心搏停顿（自动测量）"),
                format!("Longest RR interval {longest:.1} s: pause (automatic)"),
                longest >= PAUSE_EMERGENCY_S,
            ));
        }
    }
    if rr.len() >= 4 {
        let mean = rr.iter().sum::<f64>() / rr.len() as f64;
        let mut diffs: Vec<f64> = rr.windows(2).map(|w| (w[1] - w[0]).abs() / mean).collect();
        if super::median(&mut diffs) > IRREGULAR_MEDIAN_DIFF {
            out.push(finding(
                "IRREGULAR_RR",
                "RR 间期不规则（自动测量）".to_string(),
                "Irregular RR intervals (automatic)".to_string(),
                false,
            ));
        }
    }
    out
}
