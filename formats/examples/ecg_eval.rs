//! Re-runnable evaluation of `formats::ecg::measure`.
//!
//! ```text
//! cargo run --release -p formats --example ecg_eval -- [--mitdb DIR [--records 100,101,...] [--channel N]]
//!     [--testdata DIR] [--dicom FILE] [--file FILE]... [--json DIR]
//! ```
//!
//! 1. Real files with the acquiring device's own measurements (the SCP-ECG and aECG files
//!    of `shared/testdata/ecg`, pydicom's `waveform_ecg.dcm`, any `--file`): prints ours
//!    against the device's, the difference and whether it is within the targets of the
//!    ECG issue (rate 2 bpm; PR and QRS 10 ms; QT 15 ms). The DICOM file is found by
//!    asking `python3` for pydicom's test file unless `--dicom` names it.
//! 2. `--mitdb DIR`: R-peak detection ([`detect_r_peaks`] on one channel, MLII by default)
//!    on every record of the MIT-BIH Arrhythmia Database in DIR (WFDB header `.hea`,
//!    format-212 signal `.dat`, reference annotations `.atr`), scored against the beat
//!    annotations with a 150 ms match window: sensitivity and positive predictivity per
//!    record and in total. Targets: ≥ 99 % of beats found, ≤ 1 % false detections.
//!    The whole record is scored (no 5-minute learning period is skipped, unlike ANSI/AAMI
//!    EC57), and ventricular-flutter episodes are not excluded.
//!
//! Getting MIT-BIH (about 100 MB; PhysioNet, ODC-By licence), for example:
//! ```text
//! wget -r -N -c -np -nH --cut-dirs=3 -P mitdb https://physionet.org/files/mitdb/1.0.0/
//! # or: pip install wfdb && python3 -c "import wfdb; wfdb.dl_database('mitdb', 'mitdb')"
//! ```
//! Record 100 alone also ships in the wfdb-python repository (`sample-data/100.*`).
//!
//! `--json DIR` writes each real file's measurements (median beats included) as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use formats::ecg::measure::{detect_r_peaks, measure, Automatic};
use formats::ecg::{read_any, Ecg};

struct Args {
    testdata: PathBuf,
    dicom: Option<PathBuf>,
    files: Vec<PathBuf>,
    mitdb: Option<PathBuf>,
    records: Option<Vec<String>>,
    channel: usize,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        testdata: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/ecg"),
        dicom: None,
        files: Vec::new(),
        mitdb: None,
        records: None,
        channel: 0,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--testdata" => args.testdata = value()?.into(),
            "--dicom" => args.dicom = Some(value()?.into()),
            "--file" => args.files.push(value()?.into()),
            "--mitdb" => args.mitdb = Some(value()?.into()),
            "--records" => {
                args.records = Some(value()?.split(',').map(str::to_string).collect());
            }
            "--channel" => {
                args.channel = value()?.parse().map_err(|e| format!("--channel: {e}"))?;
            }
            "--json" => args.json = Some(value()?.into()),
            "-h" | "--help" => return Err("see the doc comment of examples/ecg_eval.rs".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ecg_eval: {e}");
            return ExitCode::from(2);
        }
    };
    let mut files = vec![
        args.testdata
            .join("scptools_ECG_20070321_110542_191010101010.SCP"),
        args.testdata.join("cvrg_hl7aecg-Example2.xml"),
    ];
    match args.dicom.clone().or_else(pydicom_ecg) {
        Some(p) => files.push(p),
        None => println!(
            "(pydicom's waveform_ecg.dcm not found: pip install pydicom, or --dicom FILE)\n"
        ),
    }
    files.extend(args.files.iter().cloned());
    let mut failed = false;
    for path in &files {
        if let Err(e) = evaluate_file(path, args.json.as_deref()) {
            println!("{}: {e}\n", path.display());
            failed = true;
        }
    }
    if let Some(dir) = &args.mitdb {
        if let Err(e) = evaluate_mitdb(dir, args.records.as_deref(), args.channel) {
            println!("MIT-BIH: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// pydicom's test file, located by pydicom itself.
fn pydicom_ecg() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "from pydicom.data import get_testdata_file; print(get_testdata_file('waveform_ecg.dcm'))",
        ])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

fn evaluate_file(path: &Path, json: Option<&Path>) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let ecg = read_any(&bytes).map_err(|e| e.to_string())?;
    let ours = measure(&ecg).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    println!(
        "{name} ({}, {} leads, {:.1} s at {:.2} Hz, {} beats)",
        ecg.source_format,
        ecg.leads.len(),
        ecg.leads.first().map_or(0, |l| l.samples_uv.len()) as f64 / ecg.sample_rate_hz,
        ecg.sample_rate_hz,
        ours.r_peaks.len()
    );
    print_table(&ecg, &ours);
    if let Some(dir) = json {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let text = serde_json::to_string(&ours).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(format!("{name}.json")), text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Quantity, our value, the device's, the issue's target.
type Row<'a> = (&'a str, Option<f64>, Option<f64>, Option<f64>);

fn print_table(ecg: &Ecg, ours: &Automatic) {
    let d = &ecg.device_measurements;
    let qtc_device_label = "QTc (device formula / Bazett)";
    // (quantity, ours, device, target)
    let rows: [Row; 10] = [
        (
            "heart rate (bpm)",
            ours.heart_rate_bpm,
            d.heart_rate_bpm,
            Some(2.0),
        ),
        ("RR (ms)", ours.rr_ms, d.rr_ms, None),
        ("PR (ms)", ours.pr_ms, d.pr_ms, Some(10.0)),
        ("QRS (ms)", ours.qrs_ms, d.qrs_ms, Some(10.0)),
        ("QT (ms)", ours.qt_ms, d.qt_ms, Some(15.0)),
        (qtc_device_label, ours.qtc_bazett_ms, d.qtc_ms, None),
        ("QTc Fridericia (ms)", ours.qtc_fridericia_ms, None, None),
        ("P axis (deg)", ours.p_axis, d.p_axis, None),
        ("QRS axis (deg)", ours.qrs_axis, d.qrs_axis, None),
        ("T axis (deg)", ours.t_axis, d.t_axis, None),
    ];
    println!(
        "  {:<30} {:>9} {:>9} {:>9}  target",
        "", "ours", "device", "diff"
    );
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for (label, o, dev, target) in rows {
        let diff = o.zip(dev).map(|(a, b)| a - b);
        let verdict = match (diff, target) {
            (Some(x), Some(t)) if x.abs() <= t => format!("±{t}: ok"),
            (Some(_), Some(t)) => format!("±{t}: MISSED"),
            _ => String::new(),
        };
        println!(
            "  {label:<30} {:>9} {:>9} {:>9}  {verdict}",
            show(o),
            show(dev),
            show(diff)
        );
    }
    if !ours.findings.is_empty() {
        let codes: Vec<String> = ours
            .findings
            .iter()
            .map(|f| {
                format!(
                    "{}{}",
                    f.code,
                    if f.emergency { " (emergency)" } else { "" }
                )
            })
            .collect();
        println!("  automatic findings: {}", codes.join(", "));
    }
    println!();
}

/// Detection scores of one record.
#[derive(Default, Clone, Copy)]
struct Score {
    reference: usize,
    true_pos: usize,
    false_pos: usize,
    false_neg: usize,
}

impl Score {
    fn add(&mut self, o: Score) {
        self.reference += o.reference;
        self.true_pos += o.true_pos;
        self.false_pos += o.false_pos;
        self.false_neg += o.false_neg;
    }
    fn sensitivity(&self) -> f64 {
        100.0 * self.true_pos as f64 / (self.true_pos + self.false_neg).max(1) as f64
    }
    fn predictivity(&self) -> f64 {
        100.0 * self.true_pos as f64 / (self.true_pos + self.false_pos).max(1) as f64
    }
}

/// Match detections to reference beats (both sorted) within `window` samples, each
/// detection used once, nearest first.
fn score(reference: &[usize], detected: &[usize], window: usize) -> Score {
    let mut used = vec![false; detected.len()];
    let mut s = Score {
        reference: reference.len(),
        ..Score::default()
    };
    let mut start = 0;
    for &r in reference {
        while start < detected.len() && detected[start] + window < r {
            start += 1;
        }
        let best = (start..detected.len())
            .take_while(|&j| detected[j] <= r + window)
            .filter(|&j| !used[j])
            .min_by_key(|&j| detected[j].abs_diff(r));
        match best {
            Some(j) => {
                used[j] = true;
                s.true_pos += 1;
            }
            None => s.false_neg += 1,
        }
    }
    s.false_pos = used.iter().filter(|u| !**u).count();
    s
}

fn evaluate_mitdb(dir: &Path, records: Option<&[String]>, channel: usize) -> Result<(), String> {
    let names: Vec<String> = match records {
        Some(r) => r.to_vec(),
        None => {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    let stem = p.file_stem()?.to_str()?.to_string();
                    (p.extension()? == "hea" && dir.join(format!("{stem}.atr")).exists())
                        .then_some(stem)
                })
                .collect();
            names.sort();
            names
        }
    };
    if names.is_empty() {
        return Err(format!("no record with .hea and .atr in {}", dir.display()));
    }
    println!("MIT-BIH Arrhythmia Database, channel {channel}, match window 150 ms");
    println!(
        "  {:<8} {:>7} {:>7} {:>5} {:>5} {:>8} {:>8}",
        "record", "beats", "found", "FN", "FP", "Se %", "+P %"
    );
    let mut total = Score::default();
    let mut per: BTreeMap<String, Score> = BTreeMap::new();
    for name in &names {
        let rec = wfdb::read_record(dir, name, channel)?;
        let reference = wfdb::read_beats(&dir.join(format!("{name}.atr")))?;
        let detected = detect_r_peaks(&rec.samples_uv, rec.rate_hz);
        let s = score(&reference, &detected, (0.15 * rec.rate_hz).round() as usize);
        println!(
            "  {name:<8} {:>7} {:>7} {:>5} {:>5} {:>8.2} {:>8.2}",
            s.reference,
            detected.len(),
            s.false_neg,
            s.false_pos,
            s.sensitivity(),
            s.predictivity()
        );
        total.add(s);
        per.insert(name.clone(), s);
    }
    let met = total.sensitivity() >= 99.0 && total.predictivity() >= 99.0;
    println!(
        "  {:<8} {:>7} {:>7} {:>5} {:>5} {:>8.2} {:>8.2}   target Se ≥ 99, +P ≥ 99: {}",
        "total",
        total.reference,
        total.true_pos + total.false_pos,
        total.false_neg,
        total.false_pos,
        total.sensitivity(),
        total.predictivity(),
        if met { "met" } else { "NOT met" }
    );
    let below: Vec<&String> = per
        .iter()
        .filter(|(_, s)| s.sensitivity() < 99.0 || s.predictivity() < 99.0)
        .map(|(n, _)| n)
        .collect();
    if !below.is_empty() {
        println!("  records below 99 %: {below:?}");
    }
    Ok(())
}

/// Just enough of the WFDB formats for MIT-BIH: the header, format-212 signals and
/// MIT-format annotation files (PhysioNet's `header(5)`, `signal(5)`, `annot(5)`).
mod wfdb {
    use std::path::Path;

    /// One channel of a record.
    pub struct Record {
        pub rate_hz: f64,
        pub samples_uv: Vec<f32>,
    }

    /// Read channel `channel` of record `name` in `dir`.
    pub fn read_record(dir: &Path, name: &str, channel: usize) -> Result<Record, String> {
        let hea_path = dir.join(format!("{name}.hea"));
        let hea = std::fs::read_to_string(&hea_path)
            .map_err(|e| format!("{}: {e}", hea_path.display()))?;
        let mut lines = hea
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let record_line = lines.next().ok_or(format!("{name}.hea: empty"))?;
        let fields: Vec<&str> = record_line.split_whitespace().collect();
        let nsig: usize = field(&fields, 1, name)?;
        // "360", "360/1", "360(0)": the rate is the leading number.
        let rate_hz: f64 = leading_number(fields.get(2).copied().unwrap_or("250"))
            .ok_or(format!("{name}.hea: bad sampling frequency"))?;
        let signals: Vec<Vec<&str>> = lines
            .take(nsig)
            .map(|l| l.split_whitespace().collect())
            .collect();
        if signals.len() != nsig || channel >= nsig {
            return Err(format!(
                "{name}.hea: {nsig} signals, channel {channel} asked"
            ));
        }
        let sig = &signals[channel];
        let file = sig.first().ok_or(format!("{name}.hea: no file name"))?;
        if signals.iter().any(|s| s.first() != Some(file)) {
            return Err(format!(
                "{name}: signals in several files are not supported"
            ));
        }
        let format = sig.get(1).and_then(|f| leading_number(f)).unwrap_or(0.0);
        if format != 212.0 {
            return Err(format!("{name}: signal format {format} (only 212 is read)"));
        }
        let gain_field = sig.get(2).copied().unwrap_or("200");
        let gain = leading_number(gain_field)
            .filter(|g| *g > 0.0)
            .unwrap_or(200.0);
        let adc_zero: f64 = sig.get(4).and_then(|z| z.parse().ok()).unwrap_or(0.0);
        // "200(0)/mV": the baseline is in parentheses; without it, the ADC zero.
        let baseline = gain_field
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .and_then(|(b, _)| b.parse().ok())
            .unwrap_or(adc_zero);
        let units_mv = !gain_field.contains("/uV");
        let dat_path = dir.join(file);
        let bytes = std::fs::read(&dat_path).map_err(|e| format!("{}: {e}", dat_path.display()))?;
        let values = unpack_212(&bytes);
        let scale = if units_mv { 1000.0 } else { 1.0 };
        let samples_uv = values
            .iter()
            .skip(channel)
            .step_by(nsig)
            .map(|&v| ((f64::from(v) - baseline) / gain * scale) as f32)
            .collect();
        Ok(Record {
            rate_hz,
            samples_uv,
        })
    }

    fn field<T: std::str::FromStr>(f: &[&str], i: usize, name: &str) -> Result<T, String> {
        f.get(i)
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{name}.hea: bad field {i}"))
    }

    fn leading_number(s: &str) -> Option<f64> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(s.len());
        s[..end].parse().ok()
    }

    /// Format 212: pairs of 12-bit two's-complement samples in three bytes.
    fn unpack_212(bytes: &[u8]) -> Vec<i16> {
        let sign = |v: u16| ((v << 4) as i16) >> 4;
        let mut out = Vec::with_capacity(bytes.len() / 3 * 2);
        for b in bytes.chunks_exact(3) {
            out.push(sign(u16::from(b[0]) | (u16::from(b[1] & 0x0f) << 8)));
            out.push(sign(u16::from(b[2]) | (u16::from(b[1] & 0xf0) << 4)));
        }
        out
    }

    /// Beat annotation codes (WFDB `ecgcodes.h`, the ones `isqrs` accepts): N L R a V F
    /// J A S E j / Q B (learning) e n f r.
    fn is_beat(code: u16) -> bool {
        matches!(code, 1..=13 | 25 | 30 | 34 | 35 | 38 | 41)
    }

    /// Sample times of the beat annotations of an MIT-format annotation file.
    pub fn read_beats(path: &Path) -> Result<Vec<usize>, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let word = |i: usize| -> Option<u16> {
            Some(u16::from_le_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]))
        };
        let mut beats = Vec::new();
        let mut time: i64 = 0;
        let mut i = 0;
        while let Some(w) = word(i) {
            i += 2;
            let (code, value) = (w >> 10, w & 0x3ff);
            match code {
                0 if value == 0 => break,
                // SKIP: a 32-bit interval follows, high half first (PDP-11 order).
                59 => {
                    let (hi, lo) = (
                        word(i).ok_or("truncated SKIP")?,
                        word(i + 2).ok_or("truncated SKIP")?,
                    );
                    time += i64::from((u32::from(hi) << 16 | u32::from(lo)) as i32);
                    i += 4;
                }
                // NUM, SUB, CHN: modifiers of the previous annotation.
                60..=62 => {}
                // AUX: `value` bytes of text, padded to an even length.
                63 => i += usize::from(value).div_ceil(2) * 2,
                _ => {
                    time += i64::from(value);
                    if is_beat(code) {
                        let t = usize::try_from(time).map_err(|_| "negative annotation time")?;
                        beats.push(t);
                    }
                }
            }
        }
        Ok(beats)
    }
}
