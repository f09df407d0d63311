//! Layout validation, simplification accuracy, odd samples and the header text.

use super::*;

#[test]
fn ecg_render_refuses_non_standard_layouts_naming_them() {
    let e = twelve_square(10.0);
    let err = render_svg(&e, &layout(30.0, 10.0), &header()).expect_err("30 mm/s");
    assert!(matches!(err, RenderError::Speed(_)));
    assert!(err.to_string().contains("30 mm/s"), "{err}");
    let err = validate(&layout(25.0, 15.0)).expect_err("15 mm/mV");
    assert!(err.to_string().contains("15 mm/mV"), "{err}");
    assert!(validate(&layout(f64::NAN, 10.0)).is_err());
    let err = validate(&Layout {
        rhythm_lead: " ".into(),
        ..Layout::default()
    })
    .expect_err("empty rhythm lead");
    assert!(matches!(err, RenderError::RhythmLead(_)));
    for (speed, gain) in [(12.5, 5.0), (25.0, 10.0), (50.0, 20.0)] {
        validate(&layout(speed, gain)).expect("standard");
    }
    let mut bad_rate = e.clone();
    bad_rate.sample_rate_hz = 0.0;
    assert!(matches!(
        render_svg(&bad_rate, &Layout::default(), &header()),
        Err(RenderError::SampleRate(_))
    ));
    // Checked before the font is looked for, so the message is about the request.
    let err = render_png(&e, &Layout::default(), &header(), 0.5).expect_err("0.5 px/mm");
    assert!(matches!(err, RenderError::Resolution(_)), "{err}");
    let err = render_png(&e, &layout(30.0, 10.0), &header(), 4.0).expect_err("30 mm/s");
    assert!(matches!(err, RenderError::Speed(_)), "{err}");
}

#[test]
fn ecg_render_simplified_tracing_stays_within_tolerance_of_every_sample() {
    // A noisy, spiky signal at 1000 Hz: sines, a narrow 2.5 mV spike, pseudo-random noise.
    let fs = 1000.0;
    let mut state = 12345u32;
    let samples: Vec<f32> = (0..10_000)
        .map(|i| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let noise = ((state >> 16) % 41) as f32 - 20.0;
            let t = i as f32 / fs as f32;
            let spike = if i % 800 == 400 { 2500.0 } else { 0.0 };
            300.0 * (t * 7.0).sin() + 80.0 * (t * 90.0).sin() + noise + spike
        })
        .collect();
    for (speed, gain) in [(25.0, 10.0), (12.5, 20.0), (50.0, 5.0)] {
        let point = |i: usize| {
            (
                i as f64 / fs * speed,
                -f64::from(samples[i]) / 1000.0 * gain,
            )
        };
        let pts = page::simplify(0..samples.len(), point);
        assert!(
            pts.len() < samples.len(),
            "{speed}: {} of {}",
            pts.len(),
            samples.len()
        );
        for w in pts.windows(2) {
            assert!(w[1].0 - w[0].0 <= 0.25 + EPS, "gap {} mm", w[1].0 - w[0].0);
        }
        // Every sample is within the tolerance of the drawn line at its x.
        let mut seg = 0;
        for i in 0..samples.len() {
            let (x, y) = point(i);
            while pts[seg + 1].0 < x - EPS {
                seg += 1;
            }
            let (a, b) = (pts[seg], pts[seg + 1]);
            let on_line = a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0);
            assert!(
                (y - on_line).abs() <= TOLERANCE_MM + EPS,
                "sample {i}: {} mm off",
                (y - on_line).abs()
            );
        }
        // The spikes' tips are kept exactly.
        let top = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min);
        let truth = (0..samples.len())
            .map(|i| point(i).1)
            .fold(f64::MAX, f64::min);
        assert_eq!(top, truth);
    }
}

#[test]
fn ecg_render_rhythm_lead_is_chosen_by_normalised_label() {
    let e = twelve_square(10.0);
    let l = Layout {
        rhythm_lead: "avf".into(),
        ..Layout::default()
    };
    let s = svg(&e, &l);
    let doc = roxmltree::Document::parse(&s).expect("well-formed");
    assert!(trace(&doc, "rhythm", "aVF").len() > 2);
    let label = class(&doc, "lead-label")
        .find(|n| n.attribute("data-row") == Some("3"))
        .expect("rhythm label");
    assert_eq!(label.text(), Some("aVF"));
}

/// A square wave with a NaN and two absurd (but finite) samples, as a corrupt file or a
/// lead-off rail could give.
fn hostile_square() -> Vec<f32> {
    let mut s = square(10.0);
    s[100] = f32::NAN;
    s[200] = f32::MAX;
    s[201] = f32::MIN;
    s
}

#[test]
fn ecg_render_non_finite_and_absurd_samples_stay_drawable() {
    let e = ecg(vec![("II", hostile_square())], FS);
    let doc_text = svg(&e, &Layout::default());
    let doc = roxmltree::Document::parse(&doc_text).expect("well-formed");
    assert_eq!(class(&doc, "rhythm").count(), 2, "the NaN breaks the line");
    assert!(!doc_text.contains("NaN") && !doc_text.contains("inf"));
    let pts = trace(&doc, "rhythm", "II");
    assert!(pts.iter().all(|p| p.1.abs() <= 3.0 * PAPER_HEIGHT_MM));
    render_png(&e, &Layout::default(), &header(), 2.0).expect("PNG too");
}

#[test]
fn ecg_render_header_has_patient_time_site_measurements_scale_and_note() {
    let s = svg(&twelve_square(10.0), &layout(12.5, 20.0));
    let doc = roxmltree::Document::parse(&s).expect("well-formed despite <&> in the name");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    let all = texts.join("\n");
    for want in [
        "姓名 张 三 <&>",
        "ID P001",
        "性别 男",
        "出生 1968-02-27",
        "城关镇卫生院",
        "采集时间 2024-03-15 08:30:12",
        "HR 75 bpm",
        "PR 157 ms",
        "自动测量，非诊断",
    ] {
        assert!(all.contains(want), "{want:?} not in {all}");
    }
    let scale = class(&doc, "scale")
        .next()
        .and_then(|n| n.text())
        .expect("scale text");
    assert_eq!(scale, "12.5 mm/s\u{3000}20 mm/mV");
    let default = svg(&twelve_square(10.0), &Layout::default());
    assert!(default.contains("25 mm/s\u{3000}10 mm/mV"));
    // Everything in the header is above the grid.
    for n in class(&doc, "header") {
        assert!(num(n, "y") < GRID_TOP_MM);
    }
}

#[test]
fn ecg_render_measurement_pairs_say_who_measured_what() {
    let device = Measurements {
        heart_rate_bpm: Some(0.0),
        pr_ms: Some(157.0),
        qrs_ms: Some(88.0),
        qrs_axis: Some(53.0),
        t_axis: Some(56.0),
        ..Measurements::default()
    };
    let reading = Reading::new(&device, None);
    let pairs = measurement_pairs(&reading);
    assert_eq!(
        pairs[0],
        (
            "设备测量".to_string(),
            "PR 157 ms, QRS 88 ms, QRS/T 53/56°".to_string()
        )
    );
    // The device's rate of 0 is not a rate: it is shown as not computed, never "HR 0".
    assert_eq!(
        pairs.last(),
        Some(&("未采用".to_string(), "HR（设备未计算）".to_string()))
    );
}
