//! Golden tests: `formats::ecg` against independent readers of each format.
//!
//! The Python scripts in `tests/py/` read the same real files with code that shares
//! nothing with ours and print JSON; these tests compare sample rate, lead labels and
//! every sample of every stored lead, plus the device measurements.
//!
//! | format | independent reader | needs |
//! |---|---|---|
//! | DICOM | pydicom `waveform_array` | PyPI `pydicom` (+ numpy) |
//! | aECG | Python `xml.etree`; PyPI `aecg` when `ECG_AECG_PYTHON` names a Python ≥ 3.12 that has it | nothing / PyPI `aecg` |
//! | SCP-ECG | BioSig `save2gdf` (libbiosig's SCP decoder) | Debian `biosig-tools` |
//!
//! `ECG_GOLDEN_PYTHON` overrides the interpreter (default `python3`). A missing
//! reader fails the test with the package to install: a golden test that quietly
//! skips would prove nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use formats::ecg::{read_aecg, read_any, read_dicom, read_scp, Ecg, SourceFormat};
use serde_json::Value;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/ecg")
        .join(name)
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

fn python() -> String {
    std::env::var("ECG_GOLDEN_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Run a golden script and parse its JSON output.
fn run(python: &str, name: &str, args: &[&Path], install_hint: &str) -> Value {
    let out = Command::new(python)
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{name} failed ({install_hint}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name} printed no JSON: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Compare the leads the file stores (not derived ones) with the reference reading:
/// same labels in the same order, same lengths; returns the largest |difference| in
/// µV over all samples of all leads.
fn compare_stored_leads(ours: &Ecg, theirs: &Value, what: &str) -> f64 {
    let their_labels = strings(&theirs["labels"]);
    let our_labels: Vec<String> = ours
        .leads
        .iter()
        .filter(|l| !l.derived)
        .map(|l| l.label.clone())
        .collect();
    assert_eq!(our_labels, their_labels, "{what}: lead labels");
    let their_leads = theirs["samples_uv"].as_array().expect("samples_uv");
    let mut max = 0.0f64;
    for (label, samples) in their_labels.iter().zip(their_leads) {
        let reference = numbers(samples);
        let lead = ours.lead(label).expect("lead present");
        assert_eq!(
            lead.samples_uv.len(),
            reference.len(),
            "{what}: samples in lead {label}"
        );
        for (a, b) in lead.samples_uv.iter().zip(&reference) {
            max = max.max((f64::from(*a) - b).abs());
        }
    }
    max
}

#[test]
fn ecg_golden_dicom_matches_pydicom() {
    let theirs = run(&python(), "ecg_dicom_golden.py", &[], "pip install pydicom");
    let path = PathBuf::from(theirs["path"].as_str().expect("path"));
    let bytes = std::fs::read(&path).expect("pydicom's waveform_ecg.dcm");
    let ours = read_dicom(&bytes).expect("reads");
    assert_eq!(ours.source_format, SourceFormat::Dicom);
    assert_eq!(
        Some(ours.sample_rate_hz),
        theirs["sample_rate_hz"].as_f64(),
        "sample rate"
    );
    let max = compare_stored_leads(&ours, &theirs, "DICOM");
    println!(
        "DICOM vs {}: 12 leads x {} samples, max |diff| {max} uV",
        theirs["reader"],
        ours.leads[0].samples_uv.len()
    );
    assert!(max <= 1e-3, "DICOM samples differ by up to {max} uV");
    assert_eq!(ours.leads.len(), 12);
    assert!(ours.leads.iter().all(|l| !l.derived));

    let m = &ours.device_measurements;
    let want = &theirs["measurements"];
    for (name, value) in [
        ("rr_ms", m.rr_ms),
        ("pr_ms", m.pr_ms),
        ("qrs_ms", m.qrs_ms),
        ("qt_ms", m.qt_ms),
        ("qtc_ms", m.qtc_ms),
        ("p_axis", m.p_axis),
        ("qrs_axis", m.qrs_axis),
        ("t_axis", m.t_axis),
    ] {
        assert_eq!(value, want[name].as_f64(), "DICOM measurement {name}");
    }
    assert_eq!(ours.statements, strings(&theirs["statements"]));
    // The file gives RR only: the rate is 60000 / RR.
    assert_eq!(m.heart_rate_bpm, Some(60_000.0 / 982.0));
    assert_eq!(ours.acquired_at.as_deref(), Some("20130125105919"));
    assert_eq!(ours.patient.id.as_deref(), Some("642341"));
    assert_eq!(
        ours.order.accession_number.as_deref(),
        Some("03028041970546")
    );
    assert_eq!(
        ours.device.as_deref(),
        Some("Mortara Instrument, Inc. el250")
    );
    assert_eq!(ours.filters.highpass_hz, Some(0.05));
    assert_eq!(ours.filters.lowpass_hz, Some(300.0));
    assert_eq!(ours.filters.notch_hz, None);
    assert_eq!(
        read_any(&bytes).expect("sniffed").source_format,
        SourceFormat::Dicom
    );
}

#[test]
fn ecg_golden_aecg_matches_xml_etree_and_aecg_package() {
    // The `aecg` package needs Python >= 3.12: run with that interpreter when given.
    let package_python = std::env::var("ECG_AECG_PYTHON").ok();
    let python = package_python.clone().unwrap_or_else(python);
    for (file, leads, samples) in [
        ("cvrg_hl7aecg-Example2.xml", 12, 10_000),
        ("fda_minimum_aecg.xml", 1, 13),
    ] {
        let path = testdata(file);
        let out = run(&python, "ecg_aecg_golden.py", &[&path], "python3 stdlib");
        let ours = read_aecg(&std::fs::read(&path).expect("file")).expect("reads");
        let readers = out["readers"].as_object().expect("readers");
        if package_python.is_some() && leads == 12 {
            assert!(
                readers.contains_key("aecg"),
                "ECG_AECG_PYTHON is set but the aecg package did not read {file}: {}",
                out["refused"]
            );
        }
        for (reader, theirs) in readers {
            assert_eq!(
                Some(ours.sample_rate_hz),
                theirs["sample_rate_hz"].as_f64(),
                "{file} / {reader}: sample rate"
            );
            let max = compare_stored_leads(&ours, theirs, &format!("{file} / {reader}"));
            println!(
                "aECG {file} vs {reader}: {leads} leads x {samples} samples, max |diff| {max} uV"
            );
            // f32 storage of values like 162.5 + 2.5k: well under the 2.5 uV quantum.
            assert!(max <= 1e-3, "{file} / {reader}: samples differ by {max} uV");
        }
        assert_eq!(ours.leads.len(), leads);
        assert_eq!(ours.leads[0].samples_uv.len(), samples);
        let hr = out["readers"]["xml.etree"]["measurements"]["heart_rate_bpm"].as_f64();
        assert_eq!(ours.device_measurements.heart_rate_bpm, hr, "{file}: HR");
    }
}

#[test]
fn ecg_golden_scp_matches_biosig_and_published_measurements() {
    let path = testdata("scptools_ECG_20070321_110542_191010101010.SCP");
    let theirs = run(
        &python(),
        "ecg_scp_golden.py",
        &[&path],
        "apt-get install biosig-tools",
    );
    let bytes = std::fs::read(&path).expect("file");
    let ours = read_scp(&bytes).expect("reads");
    let their_rate = theirs["sample_rate_hz"].as_f64().expect("rate");
    // BioSig prints the rate with 6 decimals: 1e6 / 1667 us = 599.880024.
    assert!(
        (ours.sample_rate_hz - their_rate).abs() < 1e-6,
        "{} vs {their_rate}",
        ours.sample_rate_hz
    );
    let max = compare_stored_leads(&ours, &theirs, "SCP");
    println!(
        "SCP vs {}: 8 stored leads x 6000 samples, max |diff| {max} uV",
        theirs["reader"]
    );
    // Quantum is 3.75 uV; both sides hold exact multiples.
    assert!(max <= 1e-3, "SCP samples differ by {max} uV");

    // The four derived leads against the same formulas applied to BioSig's I and II.
    let their_leads = theirs["samples_uv"].as_array().expect("samples");
    let (i, ii) = (numbers(&their_leads[0]), numbers(&their_leads[1]));
    let mut derived_max = 0.0f64;
    for (label, f) in [
        ("III", (|a, b| b - a) as fn(f64, f64) -> f64),
        ("aVR", |a, b| -(a + b) / 2.0),
        ("aVL", |a, b| a - b / 2.0),
        ("aVF", |a, b| b - a / 2.0),
    ] {
        let lead = ours.lead(label).expect("derived lead");
        assert!(lead.derived, "{label} is marked derived");
        for ((ours, a), b) in lead.samples_uv.iter().zip(&i).zip(&ii) {
            derived_max = derived_max.max((f64::from(*ours) - f(*a, *b)).abs());
        }
    }
    println!("SCP derived III/aVR/aVL/aVF vs BioSig I, II: max |diff| {derived_max} uV");
    assert!(derived_max <= 1e-3);

    // Internal consistency: 6000 samples at 599.88 Hz is the 10 s recording, and the
    // recording starts near the baseline.
    assert!(ours.leads.iter().all(|l| l.samples_uv.len() == 6000));
    assert!((6000.0 / ours.sample_rate_hz - 10.0).abs() < 0.01);
    assert!(ours.leads.iter().all(|l| l.samples_uv[0].abs() < 200.0));

    // Published with the file (shared/testdata/README.md): HR 75, RR 800, PR 157,
    // QRS 88, QT 360, QTc 402 ms; axes 29/53/56.
    let m = &ours.device_measurements;
    assert_eq!(
        [
            m.heart_rate_bpm,
            m.rr_ms,
            m.pr_ms,
            m.qrs_ms,
            m.qt_ms,
            m.qtc_ms
        ],
        [75.0, 800.0, 157.0, 88.0, 360.0, 402.0].map(Some)
    );
    assert_eq!(
        [m.p_axis, m.qrs_axis, m.t_axis],
        [29.0, 53.0, 56.0].map(Some)
    );
    let filters = &theirs["filters"];
    assert_eq!(ours.filters.lowpass_hz, filters["lowpass_hz"].as_f64());
    assert_eq!(ours.filters.notch_hz, filters["notch_hz"].as_f64());
}

/// Truncations and byte flips of the real DICOM ECG: errors, never a panic.
#[test]
fn ecg_dicom_hostile_variants_never_panic() {
    let theirs = run(&python(), "ecg_dicom_golden.py", &[], "pip install pydicom");
    let original = std::fs::read(theirs["path"].as_str().expect("path")).expect("waveform_ecg.dcm");
    for cut in (0..original.len()).step_by(1999) {
        assert!(read_dicom(&original[..cut]).is_err(), "cut at {cut}");
    }
    // The header (before WaveformData) is where flips change structure.
    let header_end = original.len() - 240_000;
    let mut state = 0x0EC6_D1C0_u64;
    for _ in 0..300 {
        let mut bytes = original.clone();
        for _ in 0..2 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state % header_end as u64) as usize;
            bytes[at] = (state >> 32) as u8;
        }
        let _ = read_any(&bytes);
    }
}
