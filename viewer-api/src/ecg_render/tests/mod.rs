//! Tests of the printout. Geometric ones parse the SVG and measure distances from its
//! numbers, as one would measure a paper tracing with a ruler; the PNG is decoded and
//! looked at where the SVG says the ink is. Shared helpers are here.

mod files;
mod geometry;
mod inputs;
mod strip;

use formats::ecg::{
    read_any, Ecg, Filters, Lead, Measurements, OrderInfo, PatientInfo, SourceFormat,
};

use super::page::{
    baseline, GRID_BOTTOM_MM, GRID_TOP_MM, LABEL_ABOVE_MM, LABEL_RIGHT_MM, MARGIN_MM, TOLERANCE_MM,
    TRACE_LEFT_MM,
};
use super::*;

const FS: f64 = 500.0;
const EPS: f64 = 1e-6;
/// The SVG gives coordinates to 0.01 mm; sample times are not all on that grid.
const ROUNDING: f64 = 0.005 + EPS;

fn ecg(leads: Vec<(&str, Vec<f32>)>, fs: f64) -> Ecg {
    Ecg {
        leads: leads
            .into_iter()
            .map(|(label, samples_uv)| Lead {
                label: label.to_string(),
                samples_uv,
                derived: false,
            })
            .collect(),
        sample_rate_hz: fs,
        acquired_at: Some("20240315083012".into()),
        acquired_at_ms: None,
        filters: Filters::default(),
        device_measurements: Measurements::default(),
        statements: Vec::new(),
        patient: PatientInfo::default(),
        order: OrderInfo::default(),
        device: None,
        source_format: SourceFormat::HL7aECG,
    }
}

/// 1 mV square wave, 200 ms period (rising edges at 0.1 s, 0.3 s, ...), `seconds` long.
fn square(seconds: f64) -> Vec<f32> {
    (0..(seconds * FS) as usize)
        .map(|i| if (i / 50) % 2 == 1 { 1000.0 } else { 0.0 })
        .collect()
}

const TWELVE: [&str; 12] = [
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
];

fn twelve_square(seconds: f64) -> Ecg {
    ecg(TWELVE.iter().map(|l| (*l, square(seconds))).collect(), FS)
}

fn header() -> Header<'static> {
    Header {
        patient_name: Some("张^三 <&>"),
        patient_id: Some("P001"),
        sex: Some("M"),
        age_or_birth: Some("19680227"),
        acquired_at: Some("20240315083012"),
        site: "城关镇卫生院",
        measurements: vec![
            ("HR".into(), "75 bpm".into()),
            ("PR".into(), "157 ms".into()),
        ],
        note: Some("自动测量，非诊断"),
    }
}

fn layout(speed: f64, gain: f64) -> Layout {
    Layout {
        speed_mm_s: speed,
        gain_mm_mv: gain,
        ..Layout::default()
    }
}

fn svg(ecg: &Ecg, l: &Layout) -> String {
    render_svg(ecg, l, &header()).expect("renders")
}

fn num(n: roxmltree::Node, attr: &str) -> f64 {
    n.attribute(attr)
        .unwrap_or_else(|| panic!("{attr} missing"))
        .parse()
        .unwrap_or_else(|e| panic!("{attr}: {e}"))
}

fn points(n: roxmltree::Node) -> Vec<(f64, f64)> {
    n.attribute("points")
        .expect("points")
        .split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').expect("x,y");
            (x.parse().expect("x"), y.parse().expect("y"))
        })
        .collect()
}

fn class<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    c: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    doc.descendants()
        .filter(move |n| n.attribute("class") == Some(c))
}

/// The polyline(s) of class `c` for `lead`, points concatenated.
fn trace(doc: &roxmltree::Document, c: &str, lead: &str) -> Vec<(f64, f64)> {
    class(doc, c)
        .filter(|n| n.attribute("data-lead") == Some(lead))
        .flat_map(points)
        .collect()
}

fn span(v: impl Iterator<Item = f64> + Clone) -> f64 {
    v.clone().fold(f64::MIN, f64::max) - v.fold(f64::MAX, f64::min)
}

/// x of each rising edge (baseline to 1 mV) in a tracing.
fn rising_edges(pts: &[(f64, f64)], b: f64, gain: f64) -> Vec<f64> {
    pts.windows(2)
        .filter(|w| (w[0].1 - b).abs() < EPS && (w[1].1 - (b - gain)).abs() < EPS)
        .map(|w| w[1].0)
        .collect()
}
