//! Real ECG files from other sources, and the PNG decoded and inspected.

use super::*;

fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/ecg")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// pydicom's real 12-lead DICOM ECG, found through pydicom itself (CI installs it).
fn pydicom_ecg() -> Vec<u8> {
    let python = std::env::var("ECG_GOLDEN_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "from pydicom.data import get_testdata_file as f; print(f('waveform_ecg.dcm'))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "pip install pydicom: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Decoded PNG: width, height, RGB bytes.
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = ::png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    assert_eq!(info.color_type, ::png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Whether some pixel within 1 px of `(x, y)` mm is ink: black anti-aliased over paper
/// or grid. Paper and grid colours all have red ≥ 224, so red < 160 is ink.
fn ink_near(png: &(u32, u32, Vec<u8>), px: f64, x: f64, y: f64) -> bool {
    let (w, h, data) = png;
    let (cx, cy) = ((x * px).round() as i64, (y * px).round() as i64);
    (-1..=1)
        .flat_map(|dy| (-1..=1).map(move |dx| (cx + dx, cy + dy)))
        .any(|(x, y)| {
            if x < 0 || y < 0 || x >= i64::from(*w) || y >= i64::from(*h) {
                return false;
            }
            let i = (y as usize * *w as usize + x as usize) * 3;
            data[i] < 160
        })
}

#[test]
fn ecg_render_real_files_render_to_svg_and_png() {
    let files = [
        (
            "scp",
            testdata("scptools_ECG_20070321_110542_191010101010.SCP"),
        ),
        ("aecg", testdata("cvrg_hl7aecg-Example2.xml")),
        ("aecg-min", testdata("fda_minimum_aecg.xml")),
        ("dicom", pydicom_ecg()),
    ];
    let px = 4.0;
    for (name, bytes) in files {
        let e = read_any(&bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
        let m = measurement_pairs(&Reading::new(&e.device_measurements, None));
        let h = Header {
            patient_name: e.patient.name.as_deref(),
            patient_id: e.patient.id.as_deref(),
            sex: e.patient.sex.as_deref(),
            age_or_birth: e.patient.birth_date.as_deref(),
            acquired_at: e.acquired_at.as_deref(),
            site: "城关镇卫生院",
            measurements: m,
            note: Some("自动测量，非诊断"),
        };
        let l = Layout::default();
        let s = render_svg(&e, &l, &h).unwrap_or_else(|err| panic!("{name}: {err}"));
        let doc = roxmltree::Document::parse(&s).unwrap_or_else(|err| panic!("{name}: {err}"));
        let rhythm = trace(&doc, "rhythm", "II");
        assert!(rhythm.len() >= 2, "{name}: rhythm strip drawn");
        let missing = class(&doc, "missing").count();
        // The FDA minimum example is 13 samples (26 ms) of lead II and nothing else.
        assert_eq!(
            missing,
            if name == "aecg-min" { 11 } else { 0 },
            "{name}: empty cells"
        );
        let started = std::time::Instant::now();
        let png = render_png(&e, &l, &h, px).unwrap_or_else(|err| panic!("{name}: {err}"));
        let took = started.elapsed();
        // To look at them: ECG_RENDER_OUT=/some/dir cargo test -p viewer-api ecg_render
        if let Ok(dir) = std::env::var("ECG_RENDER_OUT") {
            std::fs::write(format!("{dir}/{name}.svg"), &s).expect("write svg");
            std::fs::write(format!("{dir}/{name}.png"), &png).expect("write png");
        }
        let img = decode_png(&png);
        assert_eq!(
            (img.0, img.1),
            (1120, 860),
            "{name}: 280 x 215 mm at 4 px/mm"
        );
        // Ink where the SVG has the calibration pulse's top and the rhythm strip's
        // largest deflection; white paper in the margin; text in the header.
        let cal = points(class(&doc, "cal").next().expect("cal"));
        assert!(
            ink_near(&img, px, (cal[2].0 + cal[3].0) / 2.0, cal[2].1),
            "{name}: pulse"
        );
        let peak = rhythm
            .iter()
            .copied()
            .max_by(|a, b| {
                (a.1 - baseline(3))
                    .abs()
                    .total_cmp(&(b.1 - baseline(3)).abs())
            })
            .expect("points");
        assert!(
            ink_near(&img, px, peak.0, peak.1),
            "{name}: rhythm peak at {peak:?}"
        );
        assert!(
            rhythm
                .iter()
                .step_by(97)
                .all(|p| ink_near(&img, px, p.0, p.1)),
            "{name}: rhythm ink"
        );
        assert_eq!(&img.2[..3], &[255, 255, 255], "{name}: paper");
        let header_ink = (0..(25.0 * px) as usize)
            .flat_map(|y| (0..(100.0 * px) as usize).map(move |x| (x, y)))
            .filter(|&(x, y)| img.2[(y * img.0 as usize + x) * 3] < 160)
            .count();
        assert!(
            header_ink > 500,
            "{name}: header text drawn ({header_ink} dark pixels)"
        );
        eprintln!(
            "{name}: {} Hz, {} leads, SVG {} bytes, PNG {} bytes ({:?})",
            e.sample_rate_hz,
            e.leads.len(),
            s.len(),
            png.len(),
            took
        );
    }
}

#[test]
fn ecg_render_png_size_follows_page_and_resolution() {
    let e = twelve_square(10.0);
    let png = render_png(&e, &layout(50.0, 10.0), &header(), 2.0).expect("renders");
    let img = decode_png(&png);
    assert_eq!((img.0, img.1), (1060, 430), "530 x 215 mm at 2 px/mm");
    // The square wave's top at 1 mV on the rhythm strip (t = 0.15 s) is inked.
    assert!(ink_near(
        &img,
        2.0,
        TRACE_LEFT_MM + 0.15 * 50.0,
        baseline(3) - 10.0
    ));
    // ... and halfway between baseline and top (no edge there) is not.
    assert!(!ink_near(
        &img,
        2.0,
        TRACE_LEFT_MM + 0.15 * 50.0,
        baseline(3) - 5.0
    ));
}
