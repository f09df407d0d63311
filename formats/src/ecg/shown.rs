//! What a doctor is shown of an ECG's global measurements, and why anything is left
//! out. One rule, used by the printout, the report draft, the JSON and the hub's
//! triage, so that they can never disagree.
//!
//! For each quantity the device's value is shown when it is a measurement, else ours
//! when it is one; every value set aside is kept with its reason:
//! - Carts write 0 (SCP-ECG section 7, aECG) or leave the value empty for what they did
//!   not compute. A rate, interval or duration of 0 is "not computed", never a
//!   measurement; an axis of 0° is a real axis and is kept.
//! - A value outside the physiological range of [`Quantity::plausible`] is a failed
//!   measurement (noise taken for beats, a wave boundary not found). Shown, it would
//!   mislead; it is withheld with the range it missed.
//!
//! Threshold decisions (a rate below 60 is bradycardia, ...) are made on the value as
//! shown, rounded to whole units, so a rate printed as "60 bpm" is never called slow,
//! and a sentence about the rate always states the rate the page shows.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::measure::{Automatic, Finding};
use super::Measurements;

/// A global measurement shown on the printout and in the report draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Ventricular rate, bpm.
    HeartRate,
    /// PR interval, ms.
    Pr,
    /// QRS duration, ms.
    Qrs,
    /// QT interval, ms.
    Qt,
    /// Corrected QT, ms (the device's formula, ours is Bazett's).
    Qtc,
    /// Frontal P axis, degrees.
    PAxis,
    /// Frontal QRS axis, degrees.
    QrsAxis,
    /// Frontal T axis, degrees.
    TAxis,
}

impl Quantity {
    /// Every quantity, in the order a cardiologist reads them.
    pub const ALL: [Quantity; 8] = [
        Quantity::HeartRate,
        Quantity::Pr,
        Quantity::Qrs,
        Quantity::Qt,
        Quantity::Qtc,
        Quantity::PAxis,
        Quantity::QrsAxis,
        Quantity::TAxis,
    ];

    /// Short label as printed on ECG paper.
    pub fn label(self) -> &'static str {
        match self {
            Quantity::HeartRate => "HR",
            Quantity::Pr => "PR",
            Quantity::Qrs => "QRS",
            Quantity::Qt => "QT",
            Quantity::Qtc => "QTc",
            Quantity::PAxis => "P axis",
            Quantity::QrsAxis => "QRS axis",
            Quantity::TAxis => "T axis",
        }
    }

    /// Chinese name, as in a report.
    pub fn label_zh(self) -> &'static str {
        match self {
            Quantity::HeartRate => "心率",
            Quantity::Pr => "PR 间期",
            Quantity::Qrs => "QRS 时限",
            Quantity::Qt => "QT 间期",
            Quantity::Qtc => "QTc",
            Quantity::PAxis => "P 电轴",
            Quantity::QrsAxis => "QRS 电轴",
            Quantity::TAxis => "T 电轴",
        }
    }

    /// Unit as printed.
    pub fn unit(self) -> &'static str {
        match self {
            Quantity::HeartRate => "bpm",
            Quantity::PAxis | Quantity::QrsAxis | Quantity::TAxis => "°",
            _ => "ms",
        }
    }

    /// `value` with its unit, rounded as shown: `75 bpm`, `157 ms`, `53°`.
    pub fn format(self, value: f64) -> String {
        match self.unit() {
            "°" => format!("{value:.0}°"),
            unit => format!("{value:.0} {unit}"),
        }
    }

    /// Values a measurement of this quantity can take in a living adult or child. The
    /// rate range is the one clinicians asked for (20–300 bpm); the others are wide
    /// bounds around published extremes (a PR of 600 ms, a QRS of 250 ms, a QT of
    /// 700 ms are all recorded rarities), so that only failed measurements fall out.
    pub fn plausible(self) -> RangeInclusive<f64> {
        match self {
            Quantity::HeartRate => 20.0..=300.0,
            Quantity::Pr => 40.0..=600.0,
            Quantity::Qrs => 30.0..=250.0,
            Quantity::Qt => 120.0..=800.0,
            Quantity::Qtc => 200.0..=800.0,
            Quantity::PAxis | Quantity::QrsAxis | Quantity::TAxis => -180.0..=360.0,
        }
    }

    /// The quantity as named among values set aside: with the value when there was
    /// one (`QRS 0 ms`), alone when there was none (`HR`: a 0 that means "not
    /// computed" is never printed beside a unit, where it would read as a rate).
    pub fn aside_text(self, value: f64, reason: &Reason) -> String {
        match reason {
            Reason::NotComputed => self.label().to_string(),
            Reason::Implausible { .. } => format!("{} {}", self.label(), self.format(value)),
        }
    }

    /// Whether a stored 0 means "not computed": true for every rate and duration.
    fn zero_is_absent(self) -> bool {
        !matches!(self, Quantity::PAxis | Quantity::QrsAxis | Quantity::TAxis)
    }

    /// Keep `value`, measured by `origin`, as a measurement, or say why not. A device's
    /// 0 (or NaN) is "not computed"; ours is a failed measurement, out of range.
    pub fn screen(self, value: f64, origin: Origin) -> Result<f64, Reason> {
        let range = self.plausible();
        let absent = !value.is_finite() || (self.zero_is_absent() && value == 0.0);
        if absent && origin == Origin::Device {
            Err(Reason::NotComputed)
        } else if range.contains(&value) {
            Ok(value)
        } else {
            Err(Reason::Implausible {
                low: *range.start(),
                high: *range.end(),
            })
        }
    }
}

/// Who measured a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The acquiring cart, as stored in the file.
    Device,
    /// Our automatic measurement of the waveform.
    Automatic,
}

impl Origin {
    /// Chinese name, as printed.
    pub fn label_zh(self) -> &'static str {
        match self {
            Origin::Device => "设备测量",
            Origin::Automatic => "自动测量",
        }
    }
}

/// Why a value is not shown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// The value is 0 or empty: the device did not compute it.
    NotComputed,
    /// The value is outside what can be measured in a patient.
    Implausible {
        /// Lowest plausible value.
        low: f64,
        /// Highest plausible value.
        high: f64,
    },
}

impl Reason {
    /// The reason in Chinese.
    pub fn text_zh(&self) -> String {
        match self {
            Reason::NotComputed => "设备未计算".to_string(),
            Reason::Implausible { low, high } => format!("超出可信范围 {low:.0}–{high:.0}"),
        }
    }

    /// The reason in English.
    pub fn text_en(&self) -> String {
        match self {
            Reason::NotComputed => "not computed by the device".to_string(),
            Reason::Implausible { low, high } => {
                format!("outside the plausible range {low:.0}–{high:.0}")
            }
        }
    }
}

/// A value shown, rounded as printed, with who measured it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shown {
    /// What it measures.
    pub quantity: Quantity,
    /// The value rounded to whole units, as printed.
    pub value: f64,
    /// Who measured it.
    pub origin: Origin,
}

/// A value set aside, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAside {
    /// What it would measure.
    pub quantity: Quantity,
    /// The value as stored or computed.
    pub value: f64,
    /// Who produced it.
    pub origin: Origin,
    /// Why it is not shown.
    pub reason: Reason,
    /// The reason in Chinese, e.g. `HR：设备未计算`, `自动测量 QRS 0 ms：超出可信范围 30–250`.
    pub text_zh: String,
}

impl SetAside {
    pub(crate) fn new(quantity: Quantity, value: f64, origin: Origin, reason: Reason) -> Self {
        let what = quantity.aside_text(value, &reason);
        let text_zh = match reason {
            // The reason already says it was the device.
            Reason::NotComputed => format!("{what}：{}", reason.text_zh()),
            Reason::Implausible { .. } => {
                format!("{} {what}：{}", origin.label_zh(), reason.text_zh())
            }
        };
        SetAside {
            quantity,
            value,
            origin,
            reason,
            text_zh,
        }
    }
}

impl Measurements {
    /// The stored value of `q`.
    pub fn value(&self, q: Quantity) -> Option<f64> {
        match q {
            Quantity::HeartRate => self.heart_rate_bpm,
            Quantity::Pr => self.pr_ms,
            Quantity::Qrs => self.qrs_ms,
            Quantity::Qt => self.qt_ms,
            Quantity::Qtc => self.qtc_ms,
            Quantity::PAxis => self.p_axis,
            Quantity::QrsAxis => self.qrs_axis,
            Quantity::TAxis => self.t_axis,
        }
    }
}

/// The measurements of one recording as shown to a doctor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Values shown, in [`Quantity::ALL`] order.
    pub shown: Vec<Shown>,
    /// Values set aside, device's then ours, with their reasons.
    pub set_aside: Vec<SetAside>,
    /// Triage flags: those about a value are decided on the value shown (and name its
    /// origin), those about the rhythm (pauses, irregular RR) come from our beats.
    pub findings: Vec<Finding>,
}

impl Reading {
    /// Choose, per quantity, the device's value when it is a measurement, else ours.
    /// `automatic` has already set its own implausible values aside (see
    /// [`Automatic::set_aside`]); those reasons are kept here too.
    pub fn new(device: &Measurements, automatic: Option<&Automatic>) -> Reading {
        let mut reading = Reading::default();
        for q in Quantity::ALL {
            let from_device = device
                .value(q)
                .and_then(|v| match q.screen(v, Origin::Device) {
                    Ok(v) => Some(v),
                    Err(reason) => {
                        let aside = SetAside::new(q, v, Origin::Device, reason);
                        reading.set_aside.push(aside);
                        None
                    }
                });
            let chosen = from_device.map(|v| (v, Origin::Device)).or_else(|| {
                automatic
                    .and_then(|a| a.value(q))
                    .map(|v| (v, Origin::Automatic))
            });
            if let Some((value, origin)) = chosen {
                reading.shown.push(Shown {
                    quantity: q,
                    value: value.round(),
                    origin,
                });
            }
        }
        if let Some(a) = automatic {
            reading.set_aside.extend(a.set_aside.iter().cloned());
        }
        reading.findings =
            super::measure::value_findings(|q| reading.get(q).map(|s| (s.value, s.origin)));
        if let Some(a) = automatic {
            reading
                .findings
                .extend(a.findings.iter().filter(|f| f.is_rhythm()).cloned());
        }
        reading
    }

    /// The value shown for `q`.
    pub fn get(&self, q: Quantity) -> Option<&Shown> {
        self.shown.iter().find(|s| s.quantity == q)
    }

    /// `q` as printed (`75 bpm`), or `—` when nothing is shown.
    pub fn text(&self, q: Quantity) -> String {
        self.get(q)
            .map(|s| q.format(s.value))
            .unwrap_or_else(|| "—".to_string())
    }

    /// Whether any finding asks for the emergency deadline.
    pub fn emergency(&self) -> bool {
        self.findings.iter().any(|f| f.emergency)
    }

    /// Who measured what, in Chinese: `设备测量：HR、PR；自动测量：QT、QTc`.
    pub fn sources_zh(&self) -> String {
        [Origin::Device, Origin::Automatic]
            .into_iter()
            .filter_map(|o| {
                let names: Vec<&str> = self
                    .shown
                    .iter()
                    .filter(|s| s.origin == o)
                    .map(|s| s.quantity.label())
                    .collect();
                (!names.is_empty()).then(|| format!("{}：{}", o.label_zh(), names.join("、")))
            })
            .collect::<Vec<_>>()
            .join("；")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_zero_is_not_computed_and_ours_is_shown_instead() {
        let device = Measurements {
            heart_rate_bpm: Some(0.0),
            qtc_ms: Some(0.0),
            pr_ms: Some(160.0),
            qrs_axis: Some(0.0),
            ..Measurements::default()
        };
        let mut auto = crate::ecg::measure::tests_support::automatic();
        auto.heart_rate_bpm = Some(72.4);
        auto.qtc_bazett_ms = Some(415.0);
        let r = Reading::new(&device, Some(&auto));
        let hr = r.get(Quantity::HeartRate).expect("rate shown");
        assert_eq!((hr.value, hr.origin), (72.0, Origin::Automatic));
        assert_eq!(
            r.get(Quantity::Qtc).map(|s| s.origin),
            Some(Origin::Automatic)
        );
        assert_eq!(r.get(Quantity::Pr).map(|s| s.origin), Some(Origin::Device));
        // An axis of 0° is an axis.
        let axis = r.get(Quantity::QrsAxis).expect("axis");
        assert_eq!((axis.value, axis.origin), (0.0, Origin::Device));
        let reasons: Vec<_> = r.set_aside.iter().map(|s| (s.quantity, s.reason)).collect();
        assert_eq!(
            reasons,
            [
                (Quantity::HeartRate, Reason::NotComputed),
                (Quantity::Qtc, Reason::NotComputed)
            ]
        );
        assert_eq!(r.set_aside[0].text_zh, "HR：设备未计算");
        assert_eq!(r.text(Quantity::HeartRate), "72 bpm");
        assert!(r.sources_zh().starts_with("设备测量：PR"));
    }

    #[test]
    fn without_any_measurement_nothing_is_shown() {
        let device = Measurements {
            heart_rate_bpm: Some(0.0),
            ..Measurements::default()
        };
        let r = Reading::new(&device, None);
        assert_eq!(r.get(Quantity::HeartRate), None);
        assert_eq!(r.text(Quantity::HeartRate), "—");
        assert!(r.findings.is_empty());
    }

    #[test]
    fn implausible_values_are_withheld_with_the_range() {
        for (q, v, kept) in [
            (Quantity::HeartRate, 19.0, false),
            (Quantity::HeartRate, 20.0, true),
            (Quantity::HeartRate, 300.0, true),
            (Quantity::HeartRate, 301.0, false),
            (Quantity::Qrs, 0.0, false),
            (Quantity::Qrs, 88.0, true),
            (Quantity::Qt, 2000.0, false),
            (Quantity::QrsAxis, -30.0, true),
            (Quantity::QrsAxis, f64::NAN, false),
        ] {
            assert_eq!(q.screen(v, Origin::Device).is_ok(), kept, "{q:?} {v}");
        }
        let device = Measurements {
            heart_rate_bpm: Some(420.0),
            ..Measurements::default()
        };
        let r = Reading::new(&device, None);
        assert!(r.get(Quantity::HeartRate).is_none());
        assert_eq!(
            r.set_aside[0].reason,
            Reason::Implausible {
                low: 20.0,
                high: 300.0
            }
        );
        assert!(
            r.set_aside[0].text_zh.contains("20–300"),
            "{:?}",
            r.set_aside
        );
    }

    #[test]
    fn a_rate_decision_agrees_with_the_rate_shown() {
        for (rate, brady) in [(59.8, false), (59.4, true), (60.0, false)] {
            let device = Measurements {
                heart_rate_bpm: Some(rate),
                ..Measurements::default()
            };
            let r = Reading::new(&device, None);
            let shown = r.text(Quantity::HeartRate);
            let slow = r.findings.iter().find(|f| f.code == "BRADYCARDIA");
            assert_eq!(slow.is_some(), brady, "{rate} shown as {shown}");
            if let Some(f) = slow {
                // The sentence states the rate printed, and who measured it.
                let n = shown.trim_end_matches(" bpm");
                assert!(f.text_zh.contains(&format!("{n} 次/分")), "{}", f.text_zh);
                assert!(f.text_zh.contains("设备测量"), "{}", f.text_zh);
            }
        }
    }

    #[test]
    fn the_draft_rate_and_the_rhythm_sentence_have_one_source() {
        // The device says 75, ours 52: the page shows 75 and no sentence says 52.
        let device = Measurements {
            heart_rate_bpm: Some(75.0),
            ..Measurements::default()
        };
        let mut auto = crate::ecg::measure::tests_support::automatic();
        auto.heart_rate_bpm = Some(52.0);
        auto.findings =
            crate::ecg::measure::value_findings(|q| auto.value(q).map(|v| (v, Origin::Automatic)));
        assert!(auto.findings.iter().any(|f| f.code == "BRADYCARDIA"));
        let r = Reading::new(&device, Some(&auto));
        assert_eq!(r.text(Quantity::HeartRate), "75 bpm");
        assert!(
            r.findings.iter().all(|f| !f.text_zh.contains("52")),
            "{:?}",
            r.findings
        );
    }
}
