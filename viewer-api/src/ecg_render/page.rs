//! Lays the printout out as a display list in millimetres, which the SVG writer and the
//! PNG rasteriser both draw: one geometry, so the PNG cannot drift from the SVG.

use std::ops::Range;

use formats::ecg::{normalize_label, Ecg};

use super::{
    validate, Header, Layout, RenderError, PAPER_HEIGHT_MM, PAPER_WIDTH_MM, SHOWN_SECONDS,
};

/// Paper edge to grid, on every side.
pub(super) const MARGIN_MM: f64 = 5.0;
/// Left edge of the tracings (time 0). The 15 mm before it hold the calibration pulse,
/// which is 10 mm wide at 50 mm/s.
pub(super) const TRACE_LEFT_MM: f64 = 20.0;
/// Top of the grid; the header is above it.
pub(super) const GRID_TOP_MM: f64 = 30.0;
/// Bottom of the grid.
pub(super) const GRID_BOTTOM_MM: f64 = PAPER_HEIGHT_MM - MARGIN_MM;
/// Height of each of the four rows (three lead rows and the rhythm strip).
pub(super) const ROW_PITCH_MM: f64 = 45.0;
/// Baseline below the top of its row: below the middle, because QRS complexes mostly
/// point up, and on a 5 mm line so the baseline is easy to find by eye.
pub(super) const BASELINE_IN_ROW_MM: f64 = 25.0;
/// Lead label baseline above the trace baseline, and its offset right of the cell start.
pub(super) const LABEL_ABOVE_MM: f64 = 12.0;
pub(super) const LABEL_RIGHT_MM: f64 = 1.0;
/// Seconds in each column of the 3x4 grid.
pub(super) const COLUMN_SECONDS: f64 = 2.5;
/// Width and position of the calibration pulse: 200 ms wide (the standard pulse),
/// ending 2.5 mm before the tracing starts.
pub(super) const CAL_SECONDS: f64 = 0.2;
pub(super) const CAL_GAP_MM: f64 = 2.5;
/// The 3x4 grid, row by row.
pub(super) const ROWS: [[&str; 4]; 3] = [
    ["I", "aVR", "V1", "V4"],
    ["II", "aVL", "V2", "V5"],
    ["III", "aVF", "V3", "V6"],
];
/// Simplification of tracings: a sample left out is at most 0.04 mm from the line drawn
/// (half a pixel at 300 dpi; 4 µV at 10 mm/mV), and kept points are at most 0.25 mm
/// apart (at least 4 per mm, 10 ms at 25 mm/s).
pub(super) const TOLERANCE_MM: f64 = 0.04;
pub(super) const MAX_SEGMENT_MM: f64 = 0.25;

/// Colour and stroke width (mm) of an element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ink {
    pub rgb: [u8; 3],
    pub width: f64,
}

/// Pink minor grid, red major grid, black tracing: the colours of ECG paper.
pub(super) const GRID_MINOR: Ink = Ink {
    rgb: [0xf6, 0xc4, 0xc4],
    width: 0.1,
};
pub(super) const GRID_MAJOR: Ink = Ink {
    rgb: [0xe0, 0x70, 0x70],
    width: 0.2,
};
pub(super) const TRACE: Ink = Ink {
    rgb: [0, 0, 0],
    width: 0.3,
};
pub(super) const TEXT: Ink = Ink {
    rgb: [0x10, 0x10, 0x10],
    width: 0.0,
};
/// The header note (e.g. "automatic, not diagnostic") must stand out from the data.
pub(super) const NOTE: Ink = Ink {
    rgb: [0xb0, 0x20, 0x20],
    width: 0.0,
};

/// Horizontal alignment of a text at its x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Anchor {
    Start,
    Middle,
    End,
}

/// One element of the drawing.
#[derive(Debug, Clone)]
pub(super) enum Item {
    /// Straight lines `[x1, y1, x2, y2]` sharing a class and ink (grid, column marks).
    Lines {
        class: &'static str,
        ink: Ink,
        lines: Vec<[f64; 4]>,
    },
    /// An open polyline (tracing or calibration pulse), clipped to the grid area.
    Polyline {
        class: &'static str,
        ink: Ink,
        attrs: Vec<(&'static str, String)>,
        points: Vec<(f64, f64)>,
    },
    /// A line of text; `y` is its baseline, `size` its em size in mm.
    Text {
        class: &'static str,
        ink: Ink,
        x: f64,
        y: f64,
        size: f64,
        anchor: Anchor,
        attrs: Vec<(&'static str, String)>,
        text: String,
    },
}

/// The whole printout.
#[derive(Debug, Clone)]
pub(super) struct Drawing {
    pub width: f64,
    pub height: f64,
    /// The grid rectangle `[x, y, w, h]`; tracings are clipped to it so that a
    /// lead-off spike cannot draw over the header.
    pub clip: [f64; 4],
    pub items: Vec<Item>,
}

/// Page width for a speed: the standard page, or wider when 10 s do not fit on it.
pub(super) fn paper_width(speed_mm_s: f64) -> f64 {
    let needed = TRACE_LEFT_MM + SHOWN_SECONDS * speed_mm_s + 2.0 * MARGIN_MM;
    needed.ceil().max(PAPER_WIDTH_MM)
}

/// Baseline of row `r` (0..3 for the 3x4 grid, 3 for the rhythm strip).
pub(super) fn baseline(row: usize) -> f64 {
    GRID_TOP_MM + row as f64 * ROW_PITCH_MM + BASELINE_IN_ROW_MM
}

/// Lay out the printout after checking the layout and the sampling rate.
pub(super) fn build(ecg: &Ecg, layout: &Layout, header: &Header) -> Result<Drawing, RenderError> {
    validate(layout)?;
    check_sample_rate(ecg.sample_rate_hz)?;
    let width = paper_width(layout.speed_mm_s);
    let grid_right = width - MARGIN_MM;
    let mut items = grid(MARGIN_MM, GRID_TOP_MM, grid_right, GRID_BOTTOM_MM);
    for row in 0..4 {
        items.push(calibration(row, layout));
    }
    let speed = layout.speed_mm_s;
    for (r, leads) in ROWS.iter().enumerate() {
        for (c, label) in leads.iter().enumerate() {
            let t0 = c as f64 * COLUMN_SECONDS;
            let cell = Cell {
                row: r,
                col: Some(c),
                label,
                left: TRACE_LEFT_MM + t0 * speed,
                width: COLUMN_SECONDS * speed,
                seconds: t0..t0 + COLUMN_SECONDS,
            };
            cell.draw(ecg, layout, &mut items);
        }
    }
    // Column change marks: the short bars carts print where one lead ends and the next
    // begins, so the reader does not take a lead change for a rhythm change.
    let marks = (0..3)
        .flat_map(|r| {
            (1..4).map(move |c| {
                let x = TRACE_LEFT_MM + c as f64 * COLUMN_SECONDS * speed;
                [x, baseline(r) - 3.0, x, baseline(r) + 3.0]
            })
        })
        .collect();
    items.push(Item::Lines {
        class: "col-mark",
        ink: TRACE,
        lines: marks,
    });
    // Spelled as the readers spell labels, so `avr` or `MDC_ECG_LEAD_II` find the lead.
    let rhythm_label = normalize_label(&layout.rhythm_lead);
    let rhythm = Cell {
        row: 3,
        col: None,
        label: &rhythm_label,
        left: TRACE_LEFT_MM,
        width: SHOWN_SECONDS * speed,
        seconds: 0.0..SHOWN_SECONDS,
    };
    rhythm.draw(ecg, layout, &mut items);
    header_items(header, layout, width, &mut items);
    Ok(Drawing {
        width,
        height: PAPER_HEIGHT_MM,
        clip: [
            MARGIN_MM,
            GRID_TOP_MM,
            grid_right - MARGIN_MM,
            GRID_BOTTOM_MM - GRID_TOP_MM,
        ],
        items,
    })
}

/// A sampling rate that can place samples in time.
fn check_sample_rate(fs: f64) -> Result<(), RenderError> {
    if fs.is_finite() && fs > 0.0 && fs <= 1_000_000.0 {
        Ok(())
    } else {
        Err(RenderError::SampleRate(fs))
    }
}

/// Minor lines every 1 mm and major lines every 5 mm from the grid's top-left corner;
/// a position on a major line gets only the major line.
fn grid(left: f64, top: f64, right: f64, bottom: f64) -> Vec<Item> {
    let (mut minor, mut major) = (Vec::new(), Vec::new());
    let columns = (right - left).round() as i64;
    for i in 0..=columns {
        let x = left + i as f64;
        let line = [x, top, x, bottom];
        if i % 5 == 0 { &mut major } else { &mut minor }.push(line);
    }
    let rows = (bottom - top).round() as i64;
    for i in 0..=rows {
        let y = top + i as f64;
        let line = [left, y, right, y];
        if i % 5 == 0 { &mut major } else { &mut minor }.push(line);
    }
    vec![
        Item::Lines {
            class: "grid-minor",
            ink: GRID_MINOR,
            lines: minor,
        },
        Item::Lines {
            class: "grid-major",
            ink: GRID_MAJOR,
            lines: major,
        },
    ]
}

/// The 1 mV, 200 ms rectangular pulse before row `row`'s tracings.
fn calibration(row: usize, layout: &Layout) -> Item {
    calibration_pulse(
        baseline(row),
        TRACE_LEFT_MM,
        layout,
        vec![("data-row", row.to_string())],
    )
}

/// The 1 mV, 200 ms rectangular pulse on baseline `b`, ending [`CAL_GAP_MM`] before
/// `trace_left` (where the tracing's time 0 is), with a stretch of baseline either side.
fn calibration_pulse(
    b: f64,
    trace_left: f64,
    layout: &Layout,
    attrs: Vec<(&'static str, String)>,
) -> Item {
    let top = b - layout.gain_mm_mv; // 1 mV
    let right = trace_left - CAL_GAP_MM;
    let left = right - CAL_SECONDS * layout.speed_mm_s;
    Item::Polyline {
        class: "cal",
        ink: TRACE,
        attrs,
        points: vec![
            (left - CAL_GAP_MM, b),
            (left, b),
            (left, top),
            (right, top),
            (right, b),
            (trace_left, b),
        ],
    }
}

/// One lead's place on the page: a cell of the 3x4 grid or the rhythm strip.
struct Cell<'l> {
    row: usize,
    /// Column in the 3x4 grid; `None` for the rhythm strip.
    col: Option<usize>,
    label: &'l str,
    left: f64,
    width: f64,
    seconds: Range<f64>,
}

impl Cell<'_> {
    fn draw(&self, ecg: &Ecg, layout: &Layout, items: &mut Vec<Item>) {
        let b = baseline(self.row);
        let mut attrs = vec![
            ("data-lead", self.label.to_string()),
            ("data-row", self.row.to_string()),
        ];
        if let Some(c) = self.col {
            attrs.push(("data-col", c.to_string()));
        }
        items.push(Item::Text {
            class: "lead-label",
            ink: TEXT,
            x: self.left + LABEL_RIGHT_MM,
            y: b - LABEL_ABOVE_MM,
            size: 3.5,
            anchor: Anchor::Start,
            attrs: attrs.clone(),
            text: self.label.to_string(),
        });
        let class = if self.col.is_some() {
            "trace"
        } else {
            "rhythm"
        };
        let traces = Trace {
            label: self.label,
            seconds: self.seconds.clone(),
            left: TRACE_LEFT_MM,
            baseline: b,
        }
        .polylines(ecg, layout, class, &attrs);
        let drawn = !traces.is_empty();
        items.extend(traces);
        if !drawn {
            // A lead the cart did not record (or too short to reach this column): say so
            // rather than draw a flat line that would read as asystole.
            items.push(Item::Text {
                class: "missing",
                ink: TEXT,
                x: self.left + self.width / 2.0,
                y: b,
                size: 4.0,
                anchor: Anchor::Middle,
                attrs,
                text: "—".to_string(),
            });
        }
    }
}

/// Where one lead's samples go: the same mapping from sample to millimetres for the
/// page's cells and for the stand-alone rhythm strip.
struct Trace<'l> {
    label: &'l str,
    /// The part of the recording drawn (seconds from its start).
    seconds: Range<f64>,
    /// Where time 0 of the recording is (mm from the left edge).
    left: f64,
    /// Where 0 µV is (mm from the top edge).
    baseline: f64,
}

impl Trace<'_> {
    /// The tracing as polylines (one per run of finite samples, none if the lead is
    /// absent or has no sample in `seconds`).
    fn polylines(
        &self,
        ecg: &Ecg,
        layout: &Layout,
        class: &'static str,
        attrs: &[(&'static str, String)],
    ) -> Vec<Item> {
        let fs = ecg.sample_rate_hz;
        let samples = ecg
            .lead(self.label)
            .map(|l| l.samples_uv.as_slice())
            .unwrap_or(&[]);
        let range = index_range(&self.seconds, fs, samples.len());
        let mut items = Vec::new();
        for run in finite_runs(samples, range) {
            let points = simplify(run, |i| {
                let x = self.left + i as f64 / fs * layout.speed_mm_s;
                let y = self.baseline - f64::from(samples[i]) / 1000.0 * layout.gain_mm_mv;
                // Clipped off the page anyway; bounded so that an absurd sample (a
                // lead-off rail, a corrupt file) gives ordinary numbers to both back ends.
                (x, y.clamp(-PAPER_HEIGHT_MM, 2.0 * PAPER_HEIGHT_MM))
            });
            if points.len() >= 2 {
                items.push(Item::Polyline {
                    class,
                    ink: TRACE,
                    attrs: attrs.to_vec(),
                    points,
                });
            }
        }
        items
    }
}

/// Height of the stand-alone rhythm strip ([`build_strip`]), mm.
pub(super) const STRIP_HEIGHT_MM: f64 = 40.0;
/// Baseline of the strip below its top edge: on a 5 mm line, with 2.5 mV of room above
/// at 10 mm/mV (QRS complexes mostly point up) and 1.5 mV below, as in the page's rows.
pub(super) const STRIP_BASELINE_MM: f64 = 25.0;
/// Longest strip accepted, s: a minute is far more than any printed strip needs, and
/// bounds the work before the pixel limit is even looked at.
pub(super) const STRIP_MAX_SECONDS: f64 = 60.0;

/// Grid left of time 0 in the strip: room for the calibration pulse and a gap either
/// side of it, rounded up to a 5 mm line so the tracing starts on a major line.
pub(super) fn strip_lead_in(speed_mm_s: f64) -> f64 {
    ((CAL_SECONDS * speed_mm_s + 2.0 * CAL_GAP_MM) / 5.0).ceil() * 5.0
}

/// Width and height (mm) of a strip of `seconds` at this layout's speed.
pub(super) fn strip_size(layout: &Layout, seconds: f64) -> (f64, f64) {
    let width = (strip_lead_in(layout.speed_mm_s) + seconds * layout.speed_mm_s).ceil();
    (width, STRIP_HEIGHT_MM)
}

/// A rhythm strip on its own: the first `seconds` of `layout.rhythm_lead` on a grid
/// that fills the drawing, with the calibration pulse before it, and no text (whoever
/// places the strip captions it). The grid's top-left corner is (0, 0).
///
/// A lead that is absent or has nothing to draw is an error rather than an empty grid:
/// without text to say "not recorded", an empty strip would read as asystole.
pub(super) fn build_strip(
    ecg: &Ecg,
    layout: &Layout,
    seconds: f64,
) -> Result<Drawing, RenderError> {
    validate(layout)?;
    check_sample_rate(ecg.sample_rate_hz)?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= STRIP_MAX_SECONDS) {
        return Err(RenderError::StripSeconds(seconds));
    }
    let (width, height) = strip_size(layout, seconds);
    let left = strip_lead_in(layout.speed_mm_s);
    let label = normalize_label(&layout.rhythm_lead);
    let attrs = [("data-lead", label.clone())];
    let traces = Trace {
        label: &label,
        seconds: 0.0..seconds,
        left,
        baseline: STRIP_BASELINE_MM,
    }
    .polylines(ecg, layout, "rhythm", &attrs);
    if traces.is_empty() {
        return Err(RenderError::NoTracing(label));
    }
    let mut items = grid(0.0, 0.0, width, height);
    items.push(calibration_pulse(
        STRIP_BASELINE_MM,
        left,
        layout,
        attrs.to_vec(),
    ));
    items.extend(traces);
    Ok(Drawing {
        width,
        height,
        clip: [0.0, 0.0, width, height],
        items,
    })
}

/// Indices of the samples whose time falls in `seconds`, within `len`.
fn index_range(seconds: &Range<f64>, fs: f64, len: usize) -> Range<usize> {
    // The epsilon keeps t·fs that should be an integer (2.5 s × 500 Hz) from rounding up.
    let first = |t: f64| ((t * fs - 1e-6).ceil().max(0.0) as usize).min(len);
    first(seconds.start)..first(seconds.end)
}

/// Maximal runs of finite samples in `range`: a NaN breaks the line instead of drawing
/// a spike to nowhere.
fn finite_runs(samples: &[f32], range: Range<usize>) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = None;
    for i in range.clone() {
        match (samples[i].is_finite(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push(s..range.end);
    }
    runs
}

/// The points to draw for consecutive samples: a subset of them such that every sample
/// left out lies within [`TOLERANCE_MM`] (vertically) of the line drawn past it, and kept
/// points are at most [`MAX_SEGMENT_MM`] apart where the samples are denser than that.
///
/// One pass, constant work per sample (the "cone intersection" line simplification):
/// for the current anchor, keep the interval of slopes that passes within the tolerance
/// of every sample since; a sample whose slope leaves it ends the segment at the sample
/// before. Edges, peaks and notches are kept exactly; flat stretches shrink to 4 points
/// per mm.
pub(super) fn simplify(run: Range<usize>, point: impl Fn(usize) -> (f64, f64)) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let Some(first) = run.clone().next() else {
        return out;
    };
    let mut anchor = point(first);
    out.push(anchor);
    let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
    let mut prev = anchor;
    for i in run.skip(1) {
        let p = point(i);
        let mut dx = p.0 - anchor.0;
        let slope = (p.1 - anchor.1) / dx;
        if dx > MAX_SEGMENT_MM || !(lo..=hi).contains(&slope) {
            // The line to `p` would pass too far from some sample, or too far ahead.
            out.push(prev);
            anchor = prev;
            dx = p.0 - anchor.0;
            (lo, hi) = (f64::NEG_INFINITY, f64::INFINITY);
        }
        lo = lo.max((p.1 - TOLERANCE_MM - anchor.1) / dx);
        hi = hi.min((p.1 + TOLERANCE_MM - anchor.1) / dx);
        prev = p;
    }
    if out.last() != Some(&prev) {
        out.push(prev);
    }
    out
}

/// Separator between header fields: an ideographic space, which SVG does not collapse
/// the way it collapses runs of ASCII spaces.
const SEP: &str = "\u{3000}";

/// The three header lines above the grid.
fn header_items(h: &Header, layout: &Layout, width: f64, items: &mut Vec<Item>) {
    let right = width - MARGIN_MM;
    let mut text = |class, ink, x, y, size, anchor, text: String| {
        if !text.is_empty() {
            items.push(Item::Text {
                class,
                ink,
                x,
                y,
                size,
                anchor,
                attrs: Vec::new(),
                text,
            });
        }
    };
    let mut who = Vec::new();
    if let Some(name) = h.patient_name {
        who.push(format!("姓名 {}", clean(&name.replace('^', " "))));
    }
    if let Some(id) = h.patient_id {
        who.push(format!("ID {}", clean(id)));
    }
    if let Some(sex) = h.sex {
        who.push(format!("性别 {}", sex_text(sex)));
    }
    if let Some(a) = h.age_or_birth {
        who.push(match date_text(a) {
            Some(d) => format!("出生 {d}"),
            None => format!("年龄 {}", clean(a)),
        });
    }
    text(
        "header",
        TEXT,
        MARGIN_MM,
        9.0,
        4.2,
        Anchor::Start,
        who.join(SEP),
    );
    text("header", TEXT, right, 9.0, 4.2, Anchor::End, clean(h.site));
    if let Some(at) = h.acquired_at {
        let at = datetime_text(at).unwrap_or_else(|| clean(at));
        text(
            "header",
            TEXT,
            MARGIN_MM,
            16.0,
            3.5,
            Anchor::Start,
            format!("采集时间 {at}"),
        );
    }
    let scale = format!(
        "{} mm/s{SEP}{} mm/mV",
        number(layout.speed_mm_s),
        number(layout.gain_mm_mv)
    );
    text("scale", TEXT, right, 16.0, 3.5, Anchor::End, scale);
    let measured: Vec<String> = h
        .measurements
        .iter()
        .map(|(label, value)| format!("{} {}", clean(label), clean(value)))
        .collect();
    text(
        "header",
        TEXT,
        MARGIN_MM,
        23.0,
        3.5,
        Anchor::Start,
        measured.join(SEP),
    );
    if let Some(note) = h.note {
        text("note", NOTE, right, 23.0, 3.5, Anchor::End, clean(note));
    }
}

/// Text from a file without control characters (XML cannot carry most of them, and a
/// font has no glyph for them).
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

/// `12.5` as `12.5`, `25.0` as `25`.
pub(super) fn number(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn sex_text(code: &str) -> String {
    match code.trim() {
        "M" => "男".to_string(),
        "F" => "女".to_string(),
        "O" => "其他".to_string(),
        "U" => "未知".to_string(),
        other => clean(other),
    }
}

/// `YYYYMMDD` as `YYYY-MM-DD`.
fn date_text(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..8]))
}

/// DICOM DT / HL7 TS (`YYYYMMDDHHMM[SS][.F][±ZZZZ]`) as `YYYY-MM-DD HH:MM[:SS]`; the
/// fraction and zone are dropped (the readers take a zoneless time as China time).
fn datetime_text(s: &str) -> Option<String> {
    let s = s.trim();
    let digits: &str = &s[..s.bytes().take_while(u8::is_ascii_digit).count()];
    let date = date_text(digits.get(..8)?)?;
    match digits.len() {
        12 => Some(format!("{date} {}:{}", &digits[8..10], &digits[10..12])),
        n if n >= 14 => Some(format!(
            "{date} {}:{}:{}",
            &digits[8..10],
            &digits[10..12],
            &digits[12..14]
        )),
        _ => Some(date),
    }
}
