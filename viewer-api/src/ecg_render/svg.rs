//! The display list as SVG: one user unit is one millimetre, numbers at 0.01 mm.

use std::fmt::{self, Write};

use super::page::{number, Anchor, Drawing, Ink, Item};

/// Fonts a browser should try for the Chinese header, the report font first.
const FONT_FAMILY: &str =
    "'WenQuanYi Micro Hei','Noto Sans CJK SC','Source Han Sans SC','Microsoft YaHei',sans-serif";
const CLIP_ID: &str = "ecg-grid-clip";

pub(super) fn write(d: &Drawing) -> Result<String, fmt::Error> {
    // About 100 KB for a 12-lead at 500 Hz; reserving avoids a dozen reallocations.
    let mut s = String::with_capacity(128 * 1024);
    let (w, h) = (number(d.width), number(d.height));
    write!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w}mm" height="{h}mm" viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}">
<rect class="paper" x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>
<clipPath id="{CLIP_ID}"><rect x="{}" y="{}" width="{}" height="{}"/></clipPath>
"##,
        number(d.clip[0]),
        number(d.clip[1]),
        number(d.clip[2]),
        number(d.clip[3]),
    )?;
    for item in &d.items {
        match item {
            Item::Lines { class, ink, lines } => {
                writeln!(
                    s,
                    r#"<g class="{class}" stroke="{}" stroke-width="{}">"#,
                    color(*ink),
                    number(ink.width)
                )?;
                for [x1, y1, x2, y2] in lines {
                    writeln!(
                        s,
                        r#"<line x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
                        number(*x1),
                        number(*y1),
                        number(*x2),
                        number(*y2)
                    )?;
                }
                s.push_str("</g>\n");
            }
            Item::Polyline {
                class,
                ink,
                attrs,
                points,
            } => {
                write!(s, r#"<polyline class="{class}""#)?;
                write_attrs(&mut s, attrs)?;
                write!(
                    s,
                    r#" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round" stroke-linecap="round" clip-path="url(#{CLIP_ID})" points=""#,
                    color(*ink),
                    number(ink.width)
                )?;
                for (i, (x, y)) in points.iter().enumerate() {
                    if i > 0 {
                        s.push(' ');
                    }
                    write!(s, "{},{}", number(*x), number(*y))?;
                }
                s.push_str("\"/>\n");
            }
            Item::Text {
                class,
                ink,
                x,
                y,
                size,
                anchor,
                attrs,
                text,
            } => {
                write!(
                    s,
                    r#"<text class="{class}" x="{}" y="{}" font-size="{}" fill="{}""#,
                    number(*x),
                    number(*y),
                    number(*size),
                    color(*ink)
                )?;
                match anchor {
                    Anchor::Start => {}
                    Anchor::Middle => s.push_str(r#" text-anchor="middle""#),
                    Anchor::End => s.push_str(r#" text-anchor="end""#),
                }
                write_attrs(&mut s, attrs)?;
                writeln!(s, ">{}</text>", escape(text))?;
            }
        }
    }
    s.push_str("</svg>\n");
    Ok(s)
}

fn write_attrs(s: &mut String, attrs: &[(&str, String)]) -> fmt::Result {
    for (name, value) in attrs {
        write!(s, r#" {name}="{}""#, escape(value))?;
    }
    Ok(())
}

fn color(ink: Ink) -> String {
    let [r, g, b] = ink.rgb;
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Text and attribute values come from the ECG file and the request: escape them.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
