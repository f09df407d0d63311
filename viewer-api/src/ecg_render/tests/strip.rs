//! The stand-alone rhythm strip: size, grid, calibration pulse and tracing, looked at
//! pixel by pixel where the geometry says they are.

use super::*;

const PX: f64 = 10.0;

/// RGB of pixel `(x, y)` mm (the pixel whose top-left corner is there).
fn pixel(s: &RgbStrip, x: f64, y: f64) -> [u8; 3] {
    let (px, py) = ((x * PX).floor() as usize, (y * PX).floor() as usize);
    let i = (py * s.width_px as usize + px) * 3;
    [s.rgb[i], s.rgb[i + 1], s.rgb[i + 2]]
}

/// Ink within one pixel of `(x, y)` mm: grid and paper colours all have red ≥ 224.
fn ink_near(s: &RgbStrip, x: f64, y: f64) -> bool {
    let (cx, cy) = ((x * PX).round() as i64, (y * PX).round() as i64);
    (-1..=1)
        .flat_map(|dy| (-1..=1).map(move |dx| (cx + dx, cy + dy)))
        .any(|(x, y)| {
            if x < 0 || y < 0 || x >= i64::from(s.width_px) || y >= i64::from(s.height_px) {
                return false;
            }
            s.rgb[(y as usize * s.width_px as usize + x as usize) * 3] < 160
        })
}

#[test]
fn ecg_render_rhythm_strip_is_10_mm_lead_in_plus_speed_times_seconds_by_40_mm() {
    let e = twelve_square(10.0);
    let s = render_rhythm_strip_rgb(&e, &Layout::default(), 10.0, PX).expect("strip");
    assert_eq!(
        rhythm_strip_size_mm(&Layout::default(), 10.0),
        (260.0, 40.0)
    );
    // One pixel more each way, for the grid's far edges.
    assert_eq!((s.width_px, s.height_px), (2601, 401));
    assert_eq!(s.rgb.len(), 2601 * 401 * 3);
    assert!((s.width_mm - 260.1).abs() < EPS && (s.height_mm - 40.1).abs() < EPS);
    assert_eq!(s.lead, "II");
    assert_eq!(rhythm_strip_size_mm(&layout(12.5, 10.0), 6.0), (85.0, 40.0));
    assert_eq!(
        rhythm_strip_size_mm(&layout(50.0, 10.0), 6.0),
        (315.0, 40.0)
    );
    assert!(format!("{s:?}").len() < 200, "Debug does not print pixels");
}

#[test]
fn ecg_render_rhythm_strip_grid_is_1_mm_and_5_mm() {
    let e = twelve_square(6.0);
    let s = render_rhythm_strip_rgb(&e, &Layout::default(), 6.0, PX).expect("strip");
    let major = page::GRID_MAJOR.rgb;
    let minor = page::GRID_MINOR.rgb;
    // Along the top row, away from the tracing: every 5th mm major, the others minor,
    // paper in between; the far edges are drawn too.
    for mm in 0..=160 {
        let want = if mm % 5 == 0 { major } else { minor };
        assert_eq!(
            pixel(&s, f64::from(mm), 0.55),
            want,
            "vertical line at {mm} mm"
        );
        if mm < 160 {
            assert_eq!(pixel(&s, f64::from(mm) + 0.55, 0.55), [255; 3], "paper");
        }
    }
    // At 0.15 s the square wave is at 1 mV (15 mm): every other line is grid there.
    for mm in (0..=40).filter(|&mm| mm != 15) {
        let want = if mm % 5 == 0 { major } else { minor };
        assert_eq!(
            pixel(&s, 13.55, f64::from(mm)),
            want,
            "horizontal line at {mm} mm"
        );
    }
}

#[test]
fn ecg_render_rhythm_strip_has_calibration_pulse_and_tracing_at_scale() {
    let e = twelve_square(10.0);
    for gain in [5.0, 10.0, 20.0] {
        let l = layout(25.0, gain);
        let s = render_rhythm_strip_rgb(&e, &l, 6.0, PX).expect("strip");
        let b = page::STRIP_BASELINE_MM;
        // Pulse: 200 ms (5 mm) wide from 2.5 mm, 1 mV high.
        assert!(ink_near(&s, 5.0, b - gain), "{gain}: pulse top");
        assert!(
            !ink_near(&s, 5.0, b - gain / 2.0),
            "{gain}: pulse is hollow"
        );
        assert!(
            ink_near(&s, 2.5, b - gain / 2.0),
            "{gain}: pulse rising edge"
        );
        assert!(
            ink_near(&s, 7.5, b - gain / 2.0),
            "{gain}: pulse falling edge"
        );
        // Tracing from 10 mm: low for 0.1 s, then 1 mV for 0.1 s, ...
        let x = |t: f64| 10.0 + t * 25.0;
        assert!(ink_near(&s, x(0.05), b) && !ink_near(&s, x(0.05), b - gain));
        assert!(ink_near(&s, x(0.15), b - gain) && !ink_near(&s, x(0.15), b));
        assert!(ink_near(&s, x(5.85), b), "drawn to the end");
        assert!(ink_near(&s, x(0.1), b - gain / 2.0), "rising edge at 0.1 s");
    }
}

#[test]
fn ecg_render_rhythm_strip_refuses_missing_leads_and_bad_lengths() {
    let e = ecg(vec![("I", square(10.0))], FS);
    let err = render_rhythm_strip_rgb(&e, &Layout::default(), 6.0, PX).unwrap_err();
    assert!(
        matches!(&err, RenderError::NoTracing(l) if l == "II"),
        "{err}"
    );
    let i = Layout {
        rhythm_lead: "lead i".into(),
        ..Layout::default()
    };
    let s = render_rhythm_strip_rgb(&e, &i, 6.0, PX).expect("lead I");
    assert_eq!(s.lead, "I");
    for bad in [0.0, -1.0, 61.0, f64::NAN] {
        let err = render_rhythm_strip_rgb(&e, &i, bad, PX).unwrap_err();
        assert!(matches!(err, RenderError::StripSeconds(_)), "{bad}: {err}");
    }
    let err = render_rhythm_strip_rgb(&e, &i, 6.0, 0.5).unwrap_err();
    assert!(matches!(err, RenderError::Resolution(_)), "{err}");
    let err = render_rhythm_strip_rgb(&e, &layout(30.0, 10.0), 6.0, PX).unwrap_err();
    assert!(matches!(err, RenderError::Speed(_)), "{err}");
    // A lead of nothing but NaN has nothing to draw either.
    let e = ecg(vec![("II", vec![f32::NAN; 5000])], FS);
    let err = render_rhythm_strip_rgb(&e, &Layout::default(), 6.0, PX).unwrap_err();
    assert!(matches!(err, RenderError::NoTracing(_)), "{err}");
}
