//! Calibration pulse, grid, lead placement, amplitude and speed, measured on the SVG.

use super::*;

#[test]
fn ecg_render_calibration_pulse_is_1_mv_high_and_200_ms_wide() {
    let e = twelve_square(10.0);
    for gain in [5.0, 10.0, 20.0] {
        for speed in [12.5, 25.0, 50.0] {
            let s = svg(&e, &layout(speed, gain));
            let doc = roxmltree::Document::parse(&s).expect("well-formed");
            let pulses: Vec<_> = class(&doc, "cal").collect();
            assert_eq!(pulses.len(), 4, "one pulse per row");
            for (row, p) in pulses.into_iter().enumerate() {
                let pts = points(p);
                let height = span(pts.iter().map(|p| p.1));
                assert!(
                    (height - gain).abs() < EPS,
                    "{gain} mm/mV: pulse {height} mm"
                );
                let top: Vec<_> = pts
                    .iter()
                    .filter(|p| (p.1 - (baseline(row) - gain)).abs() < EPS)
                    .collect();
                assert_eq!(top.len(), 2);
                let width = (top[1].0 - top[0].0).abs();
                assert!(
                    (width - 0.2 * speed).abs() < EPS,
                    "{speed} mm/s: pulse {width} mm wide"
                );
                // It sits on the row's baseline and ends where the tracing begins.
                assert!((pts[0].1 - baseline(row)).abs() < EPS);
                assert!((pts[pts.len() - 1].0 - TRACE_LEFT_MM).abs() < EPS);
            }
        }
    }
}

/// Vertical and horizontal positions of the lines of a grid group.
fn grid_lines(doc: &roxmltree::Document, c: &str) -> (Vec<f64>, Vec<f64>) {
    let g = class(doc, c).next().expect("grid group");
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for l in g.children().filter(|n| n.has_tag_name("line")) {
        let (x1, y1, x2, y2) = (num(l, "x1"), num(l, "y1"), num(l, "x2"), num(l, "y2"));
        if x1 == x2 {
            xs.push(x1);
            assert_eq!(
                (y1, y2),
                (GRID_TOP_MM, GRID_BOTTOM_MM),
                "vertical lines span the grid"
            );
        } else {
            assert_eq!(y1, y2, "grid lines are vertical or horizontal");
            ys.push(y1);
        }
    }
    (xs, ys)
}

fn assert_spacing(v: &[f64], step: f64, what: &str) {
    assert!(v.len() > 2, "{what}: {v:?}");
    for w in v.windows(2) {
        assert!(
            (w[1] - w[0] - step).abs() < EPS,
            "{what}: {} then {}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn ecg_render_grid_lines_every_1_mm_and_5_mm() {
    for speed in [12.5, 25.0, 50.0] {
        let l = layout(speed, 10.0);
        let s = svg(&twelve_square(10.0), &l);
        let doc = roxmltree::Document::parse(&s).expect("well-formed");
        let (w, h) = paper_size_mm(&l);
        let root = doc.root_element();
        assert_eq!(
            root.attribute("viewBox"),
            Some(format!("0 0 {w} {h}").as_str())
        );
        assert_eq!(
            root.attribute("width"),
            Some(format!("{w}mm").as_str()),
            "1 unit = 1 mm"
        );
        assert_eq!(root.attribute("height"), Some(format!("{h}mm").as_str()));
        assert_eq!(h, PAPER_HEIGHT_MM);
        assert_eq!(w, if speed == 50.0 { 530.0 } else { PAPER_WIDTH_MM });

        let (minor_x, minor_y) = grid_lines(&doc, "grid-minor");
        let (major_x, major_y) = grid_lines(&doc, "grid-major");
        assert_spacing(&major_x, 5.0, "major verticals");
        assert_spacing(&major_y, 5.0, "major horizontals");
        let mut all_x = [minor_x.clone(), major_x.clone()].concat();
        let mut all_y = [minor_y.clone(), major_y.clone()].concat();
        all_x.sort_by(f64::total_cmp);
        all_y.sort_by(f64::total_cmp);
        assert_spacing(&all_x, 1.0, "all verticals");
        assert_spacing(&all_y, 1.0, "all horizontals");
        // Majors frame the grid and fall every fifth line; minors never double them.
        assert_eq!(
            (major_x[0], *major_x.last().expect("x")),
            (MARGIN_MM, w - MARGIN_MM)
        );
        assert_eq!(
            (major_y[0], *major_y.last().expect("y")),
            (GRID_TOP_MM, GRID_BOTTOM_MM)
        );
        assert_eq!(minor_x.len(), 4 * (major_x.len() - 1));
        assert!(minor_x.iter().all(|x| ((x - MARGIN_MM) % 5.0).abs() > EPS));
        // The tracing's time 0 and every baseline are on major lines.
        assert!(major_x.contains(&TRACE_LEFT_MM));
        assert!((0..4).all(|r| major_y.contains(&baseline(r))));
    }
}

#[test]
fn ecg_render_leads_placed_in_3x4_layout_and_rhythm_strip() {
    let e = twelve_square(10.0);
    for speed in [12.5, 25.0, 50.0] {
        let s = svg(&e, &layout(speed, 10.0));
        let doc = roxmltree::Document::parse(&s).expect("well-formed");
        let rows = [
            ["I", "aVR", "V1", "V4"],
            ["II", "aVL", "V2", "V5"],
            ["III", "aVF", "V3", "V6"],
        ];
        let column = 2.5 * speed; // 62.5 mm at 25 mm/s
        for (r, leads) in rows.iter().enumerate() {
            for (c, lead) in leads.iter().enumerate() {
                let left = TRACE_LEFT_MM + c as f64 * column;
                let label = class(&doc, "lead-label")
                    .find(|n| {
                        n.attribute("data-col") == Some(&c.to_string())
                            && n.attribute("data-row") == Some(&r.to_string())
                    })
                    .expect("label");
                assert_eq!(label.text(), Some(*lead), "row {r} column {c}");
                assert!((num(label, "x") - (left + LABEL_RIGHT_MM)).abs() < EPS);
                assert!((num(label, "y") - (baseline(r) - LABEL_ABOVE_MM)).abs() < EPS);
                // The cell's tracing is that lead's 2.5 s slice, from the column's left.
                let pts = trace(&doc, "trace", lead);
                let xs = pts.iter().map(|p| p.0);
                let (min, max) = (
                    xs.clone().fold(f64::MAX, f64::min),
                    xs.fold(f64::MIN, f64::max),
                );
                assert!(
                    (min - left).abs() < EPS,
                    "{lead}: starts at {min}, column at {left}"
                );
                assert!(
                    max < left + column && max > left + column - 0.25,
                    "{lead}: ends at {max}"
                );
                assert!(pts
                    .iter()
                    .all(|p| p.1 <= baseline(r) + EPS && p.1 >= baseline(r) - 10.0 - EPS));
            }
        }
        let rhythm = trace(&doc, "rhythm", "II");
        assert!((rhythm[0].0 - TRACE_LEFT_MM).abs() < EPS);
        assert!(rhythm
            .iter()
            .all(|p| (p.1 - baseline(3)).abs() < 10.0 + EPS));
        let end = rhythm.last().expect("points").0;
        assert!(
            (end - (TRACE_LEFT_MM + 10.0 * speed - speed / FS)).abs() < ROUNDING,
            "10 s of rhythm: ends at {end}"
        );
        let label = class(&doc, "lead-label")
            .find(|n| n.attribute("data-row") == Some("3"))
            .expect("rhythm label");
        assert_eq!(label.text(), Some("II"));
    }
}

#[test]
fn ecg_render_1_mv_square_wave_measures_gain_peak_to_peak() {
    let e = ecg(vec![("II", square(10.0))], FS);
    for gain in [5.0, 10.0, 20.0] {
        let s = svg(&e, &layout(25.0, gain));
        let doc = roxmltree::Document::parse(&s).expect("well-formed");
        let pts = trace(&doc, "rhythm", "II");
        let p2p = span(pts.iter().map(|p| p.1));
        assert!(
            (p2p - gain).abs() < EPS,
            "1 mV at {gain} mm/mV measures {p2p} mm"
        );
        // Edges stay vertical (one sample, 0.08 mm at 25 mm/s), not smeared by simplification.
        let edges = rising_edges(&pts, baseline(3), gain);
        assert_eq!(edges.len(), 50, "one rising edge per 200 ms");
        assert!((edges[0] - (TRACE_LEFT_MM + 0.1 * 25.0)).abs() < EPS);
    }
}

#[test]
fn ecg_render_50_mm_s_doubles_horizontal_distances() {
    let e = twelve_square(10.0);
    let measure = |speed: f64| {
        let s = svg(&e, &layout(speed, 10.0));
        let doc = roxmltree::Document::parse(&s).expect("well-formed");
        let edges = rising_edges(&trace(&doc, "rhythm", "II"), baseline(3), 10.0);
        let period = edges[1] - edges[0];
        let v4 = trace(&doc, "trace", "V4")[0].0 - TRACE_LEFT_MM;
        let cal = points(class(&doc, "cal").next().expect("cal"));
        (period, v4, cal[3].0 - cal[2].0, edges.len())
    };
    let (p25, v4_25, cal25, n25) = measure(25.0);
    let (p50, v4_50, cal50, n50) = measure(50.0);
    let (p12, v4_12, _, _) = measure(12.5);
    assert!(
        (p25 - 5.0).abs() < EPS,
        "200 ms at 25 mm/s is 5 mm, got {p25}"
    );
    assert!((p50 - 2.0 * p25).abs() < EPS && (p12 - p25 / 2.0).abs() < EPS);
    assert!(
        (v4_25 - 187.5).abs() < EPS && (v4_50 - 375.0).abs() < EPS && (v4_12 - 93.75).abs() < EPS
    );
    assert!((cal50 - 2.0 * cal25).abs() < EPS);
    assert_eq!(n25, n50, "the same 10 s are shown at both speeds");
}

#[test]
fn ecg_render_missing_leads_are_labelled_empty_cells() {
    // Only I and II, as a cart that does not derive the limb leads would give them.
    let e = ecg(vec![("I", square(10.0)), ("II", square(10.0))], FS);
    let l = Layout {
        rhythm_lead: "V1".into(),
        ..Layout::default()
    };
    let s = svg(&e, &l);
    let doc = roxmltree::Document::parse(&s).expect("well-formed");
    let missing: Vec<_> = class(&doc, "missing")
        .map(|n| n.attribute("data-lead").unwrap_or(""))
        .collect();
    assert_eq!(
        missing,
        ["aVR", "V1", "V4", "aVL", "V2", "V5", "III", "aVF", "V3", "V6", "V1"]
    );
    assert!(class(&doc, "missing").all(|n| n.text() == Some("—")));
    let v5 = class(&doc, "missing")
        .find(|n| n.attribute("data-lead") == Some("V5"))
        .expect("V5");
    assert!((num(v5, "x") - (TRACE_LEFT_MM + 3.0 * 62.5 + 62.5 / 2.0)).abs() < EPS);
    assert_eq!(
        class(&doc, "lead-label").count(),
        13,
        "labels of empty cells are still shown"
    );
    assert_eq!(trace(&doc, "trace", "V5").len(), 0);
}

#[test]
fn ecg_render_long_records_cut_at_10_s_short_ones_drawn_as_far_as_they_go() {
    let long = svg(&twelve_square(20.0), &Layout::default());
    let doc = roxmltree::Document::parse(&long).expect("well-formed");
    let end = trace(&doc, "rhythm", "II").last().expect("points").0;
    assert!(end < TRACE_LEFT_MM + 250.0 + EPS, "ends at {end}");
    let short = svg(&twelve_square(4.0), &Layout::default());
    let doc = roxmltree::Document::parse(&short).expect("well-formed");
    let end = trace(&doc, "rhythm", "II").last().expect("points").0;
    assert!(
        (end - (TRACE_LEFT_MM + 4.0 * 25.0 - 25.0 / FS)).abs() < ROUNDING,
        "ends at {end}"
    );
    // 4 s reach into the second column (aVR/aVL/aVF, 1.5 s of it), not the V leads.
    assert!(!trace(&doc, "trace", "aVL").is_empty());
    let missing: Vec<_> = class(&doc, "missing")
        .map(|n| n.attribute("data-lead").unwrap_or(""))
        .collect();
    assert_eq!(missing, ["V1", "V4", "V2", "V5", "V3", "V6"]);
}
