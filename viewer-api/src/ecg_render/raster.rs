//! The display list rasterised with tiny-skia, text as glyph outlines of the CJK report
//! font read with ttf-parser (already used for the PDF reports), encoded with `png`.
//!
//! Why not resvg: it would rasterise the SVG itself, but its text stack (fontdb, harfrust,
//! skrifa, read-fonts) costs about 40 s more of a clean debug build on 2 cores than
//! tiny-skia alone, for a header that needs no shaping. Drawing our own display list
//! keeps the geometry identical to the SVG anyway.

use std::path::Path;
use std::sync::OnceLock;

use tiny_skia::{
    Color, FillRule, LineCap, LineJoin, Mask, Paint, PathBuilder, Pixmap, Stroke, Transform,
};
use ttf_parser::{Face, OutlineBuilder};

use super::page::{self, Anchor, Drawing, Ink, Item};
use super::{Header, Layout, RenderError};
use crate::printout::DEFAULT_FONT_PATHS;
use formats::ecg::Ecg;

/// Largest PNG accepted, in pixels: a 50 mm/s page at 20 px/mm (10600 x 4300) fits,
/// anything larger is refused before 4 bytes per pixel are allocated.
pub const MAX_PIXELS: u64 = 48_000_000;
const MIN_PX_PER_MM: f64 = 1.0;
const MAX_PX_PER_MM: f64 = 20.0;

/// A font for the PNG's text: a TrueType/OpenType file or collection with Chinese glyphs.
pub struct PngFont {
    data: Vec<u8>,
    index: u32,
    origin: String,
}

impl std::fmt::Debug for PngFont {
    // By hand: the derived form would print megabytes of font data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PngFont")
            .field("origin", &self.origin)
            .field("index", &self.index)
            .finish()
    }
}

impl PngFont {
    /// Read a font file.
    pub fn load(path: &Path) -> Result<Self, RenderError> {
        let data = std::fs::read(path).map_err(|e| RenderError::Font {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(data, &path.display().to_string())
    }

    /// Use font data in memory (`origin` names it in errors). In a collection the
    /// Simplified Chinese face is used when its PostScript name says so (Noto CJK puts
    /// Japanese first), else face 0, as the PDF printout does.
    pub fn from_bytes(data: Vec<u8>, origin: &str) -> Result<Self, RenderError> {
        let bad = |reason: String| RenderError::Font {
            path: origin.to_string(),
            reason,
        };
        let count = ttf_parser::fonts_in_collection(&data).unwrap_or(1);
        let index = (0..count)
            .find(|&i| Face::parse(&data, i).is_ok_and(|f| simplified_chinese(&f)))
            .unwrap_or(0);
        let face = Face::parse(&data, index).map_err(|e| bad(e.to_string()))?;
        // Without Chinese glyphs the patient's name would print as empty boxes.
        if face.glyph_index('中').is_none() {
            return Err(bad("no glyph for '中': not a Chinese font".into()));
        }
        Ok(PngFont {
            data,
            index,
            origin: origin.to_string(),
        })
    }

    /// The first usable font of [`DEFAULT_FONT_PATHS`], read once per process (a CJK
    /// font is 5-20 MB); fonts installed later need a restart.
    pub fn system_default() -> Result<&'static PngFont, RenderError> {
        static FONT: OnceLock<Option<PngFont>> = OnceLock::new();
        FONT.get_or_init(|| {
            DEFAULT_FONT_PATHS
                .iter()
                .map(Path::new)
                .filter(|p| p.is_file())
                .find_map(|p| PngFont::load(p).ok())
        })
        .as_ref()
        .ok_or_else(|| RenderError::NoFont(DEFAULT_FONT_PATHS.join(", ")))
    }

    fn face(&self) -> Result<Face<'_>, RenderError> {
        Face::parse(&self.data, self.index).map_err(|e| RenderError::Font {
            path: self.origin.clone(),
            reason: e.to_string(),
        })
    }
}

fn simplified_chinese(face: &Face) -> bool {
    face.names()
        .into_iter()
        .filter(|n| n.name_id == ttf_parser::name_id::POST_SCRIPT_NAME)
        .find_map(|n| n.to_string())
        .is_some_and(|name| {
            let name = name.to_ascii_lowercase();
            let family = name.split('-').next().unwrap_or("");
            !family.contains("mono") && ["sc", "cn", "gb"].iter().any(|t| family.ends_with(t))
        })
}

/// Refuse a resolution outside 1 to 20 px/mm.
pub(super) fn check_resolution(px_per_mm: f64) -> Result<(), RenderError> {
    if (MIN_PX_PER_MM..=MAX_PX_PER_MM).contains(&px_per_mm) {
        Ok(())
    } else {
        Err(RenderError::Resolution(px_per_mm))
    }
}

/// [`super::render_png`] with a font of the caller's choice.
pub fn render_png_with_font(
    ecg: &Ecg,
    layout: &Layout,
    header: &Header,
    px_per_mm: f64,
    font: &PngFont,
) -> Result<Vec<u8>, RenderError> {
    check_resolution(px_per_mm)?;
    let d = page::build(ecg, layout, header)?;
    let (width, height) = (
        (d.width * px_per_mm).round() as u64,
        (d.height * px_per_mm).round() as u64,
    );
    // Size before font: a request too large says so whatever the font.
    let (w, h) = pixel_size(width, height)?;
    let face = font.face()?;
    let pixmap = rasterize(&d, w, h, px_per_mm, Some(&face))?;
    encode(&pixmap, px_per_mm)
}

/// A rhythm strip ([`page::build_strip`]) as raw RGB: `(width_px, height_px, rgb)`.
///
/// One pixel wider and taller than the grid: its last lines lie on the far pixel
/// boundary (`width × px_per_mm`), and without that pixel the strip would lack its
/// right and bottom edges. The true scale is then `width_px / px_per_mm` mm.
pub(super) fn strip_rgb(
    ecg: &Ecg,
    layout: &Layout,
    seconds: f64,
    px_per_mm: f64,
) -> Result<(u32, u32, Vec<u8>), RenderError> {
    check_resolution(px_per_mm)?;
    let d = page::build_strip(ecg, layout, seconds)?;
    let (width, height) = (
        (d.width * px_per_mm).round() as u64 + 1,
        (d.height * px_per_mm).round() as u64 + 1,
    );
    let (w, h) = pixel_size(width, height)?;
    // The strip has no text, so it needs no font.
    let pixmap = rasterize(&d, w, h, px_per_mm, None)?;
    Ok((w, h, rgb(&pixmap)))
}

/// Refuse an image of more than [`MAX_PIXELS`] before anything is allocated.
fn pixel_size(width: u64, height: u64) -> Result<(u32, u32), RenderError> {
    let too_large = || RenderError::TooLarge { width, height };
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(too_large());
    }
    Ok((
        u32::try_from(width).map_err(|_| too_large())?,
        u32::try_from(height).map_err(|_| too_large())?,
    ))
}

/// Draw the display list on white at `px_per_mm`; text only when given a face.
fn rasterize(
    d: &Drawing,
    w: u32,
    h: u32,
    px_per_mm: f64,
    face: Option<&Face>,
) -> Result<Pixmap, RenderError> {
    let too_large = || RenderError::TooLarge {
        width: w.into(),
        height: h.into(),
    };
    let mut pixmap = Pixmap::new(w, h).ok_or_else(too_large)?;
    pixmap.fill(Color::WHITE);
    let s = px_per_mm as f32;
    let clip = clip_mask(d, w, h, s).ok_or_else(too_large)?;
    for item in &d.items {
        draw(&mut pixmap, item, s, &clip, face);
    }
    Ok(pixmap)
}

/// Tracings stay inside the grid, as in the SVG's clip path.
fn clip_mask(d: &Drawing, w: u32, h: u32, s: f32) -> Option<Mask> {
    let [x, y, cw, ch] = d.clip.map(|v| v as f32 * s);
    let rect = tiny_skia::Rect::from_xywh(x, y, cw, ch)?;
    let mut mask = Mask::new(w, h)?;
    mask.fill_path(
        &PathBuilder::from_rect(rect),
        FillRule::Winding,
        false,
        Transform::identity(),
    );
    Some(mask)
}

fn paint(ink: Ink) -> Paint<'static> {
    let mut p = Paint::default();
    let [r, g, b] = ink.rgb;
    p.set_color_rgba8(r, g, b, 255);
    p.anti_alias = true;
    p
}

/// Everything is drawn in pixels (millimetres × `s`), with strokes at least 1 px wide
/// so that thin grid lines do not fade away at low resolutions.
fn draw(pixmap: &mut Pixmap, item: &Item, s: f32, clip: &Mask, face: Option<&Face>) {
    let id = Transform::identity();
    match item {
        Item::Lines { ink, lines, .. } => {
            for line in lines {
                axis_line(pixmap, *line, *ink, s);
            }
        }
        Item::Polyline { ink, points, .. } => {
            let mut pb = PathBuilder::new();
            for (i, (x, y)) in points.iter().enumerate() {
                let (x, y) = (*x as f32 * s, *y as f32 * s);
                if i == 0 {
                    pb.move_to(x, y);
                } else {
                    pb.line_to(x, y);
                }
            }
            if let Some(path) = pb.finish() {
                let stroke = Stroke {
                    width: (ink.width as f32 * s).max(1.0),
                    line_cap: LineCap::Round,
                    line_join: LineJoin::Round,
                    ..Stroke::default()
                };
                pixmap.stroke_path(&path, &paint(*ink), &stroke, id, Some(clip));
            }
        }
        Item::Text {
            ink,
            x,
            y,
            size,
            anchor,
            text,
            ..
        } => {
            let Some(face) = face else {
                return;
            };
            if let Some(path) = text_path(
                face,
                text,
                *x as f32 * s,
                *y as f32 * s,
                *size as f32 * s,
                *anchor,
            ) {
                pixmap.fill_path(&path, &paint(*ink), FillRule::Winding, id, None);
            }
        }
    }
}

/// An axis-aligned line as a run of whole pixels: its centre is snapped to the pixel
/// it falls in (at most ½ px off) and its width rounded to whole pixels, at least 1,
/// so a grid line is one crisp line instead of two half-tone ones. Written directly:
/// the grid is 450 lines over the whole page, and stroking them through the rasteriser
/// took most of the PNG's drawing time.
fn axis_line(pixmap: &mut Pixmap, [x1, y1, x2, y2]: [f64; 4], ink: Ink, s: f32) {
    let (w, h) = (pixmap.width() as i64, pixmap.height() as i64);
    let px = |v: f64| (v as f32 * s).floor() as i64;
    let thick = (ink.width as f32 * s).round().max(1.0) as i64;
    let (x1, y1, x2, y2) = (px(x1), px(y1), px(x2), px(y2));
    // The thickness grows around the snapped pixel: 1 px is it, 2 px it and the next.
    let grow = |lo: i64, hi: i64| (lo - (thick - 1) / 2, hi + thick / 2);
    let ((x0, x1), (y0, y1)) = if x1 == x2 {
        (grow(x1, x1), (y1.min(y2), y1.max(y2)))
    } else {
        ((x1.min(x2), x1.max(x2)), grow(y1, y1))
    };
    let [r, g, b] = ink.rgb;
    let stride = w as usize * 4;
    let data = pixmap.data_mut();
    for y in y0.max(0)..=y1.min(h - 1) {
        for x in x0.max(0)..=x1.min(w - 1) {
            let i = y as usize * stride + x as usize * 4;
            data[i..i + 4].copy_from_slice(&[r, g, b, 255]);
        }
    }
}

/// Glyph outlines of `text` at baseline `(x, y)` in pixels, `size` px per em. Neither
/// kerning nor shaping: Chinese and the header's Latin need neither.
fn text_path(
    face: &Face,
    text: &str,
    x: f32,
    y: f32,
    size: f32,
    anchor: Anchor,
) -> Option<tiny_skia::Path> {
    let scale = size / f32::from(face.units_per_em());
    let glyphs: Vec<_> = text
        .chars()
        .map(|c| face.glyph_index(c).unwrap_or(ttf_parser::GlyphId(0)))
        .collect();
    let advance = |g| f32::from(face.glyph_hor_advance(g).unwrap_or(0)) * scale;
    let total: f32 = glyphs.iter().map(|g| advance(*g)).sum();
    let mut pen = match anchor {
        Anchor::Start => x,
        Anchor::Middle => x - total / 2.0,
        Anchor::End => x - total,
    };
    let mut pb = PathBuilder::new();
    for g in glyphs {
        let mut outline = Outline {
            pb: &mut pb,
            x: pen,
            y,
            scale,
        };
        face.outline_glyph(g, &mut outline);
        pen += advance(g);
    }
    pb.finish()
}

/// Font units (y up) to pixels (y down) at a pen position.
struct Outline<'a> {
    pb: &'a mut PathBuilder,
    x: f32,
    y: f32,
    scale: f32,
}

impl Outline<'_> {
    fn at(&self, x: f32, y: f32) -> (f32, f32) {
        (self.x + x * self.scale, self.y - y * self.scale)
    }
}

impl OutlineBuilder for Outline<'_> {
    fn move_to(&mut self, x: f32, y: f32) {
        let (x, y) = self.at(x, y);
        self.pb.move_to(x, y);
    }
    fn line_to(&mut self, x: f32, y: f32) {
        let (x, y) = self.at(x, y);
        self.pb.line_to(x, y);
    }
    fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
        let ((x1, y1), (x, y)) = (self.at(x1, y1), self.at(x, y));
        self.pb.quad_to(x1, y1, x, y);
    }
    fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
        let ((x1, y1), (x2, y2), (x, y)) = (self.at(x1, y1), self.at(x2, y2), self.at(x, y));
        self.pb.cubic_to(x1, y1, x2, y2, x, y);
    }
    fn close(&mut self) {
        self.pb.close();
    }
}

/// The pixels as RGB, row by row: everything is drawn opaque on white, so alpha is
/// always 255 and the premultiplied colour is the colour.
fn rgb(pixmap: &Pixmap) -> Vec<u8> {
    pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// RGB (the page is opaque, so alpha would only cost bytes), with the resolution in the
/// file so that printing at "actual size" gives paper scale.
fn encode(pixmap: &Pixmap, px_per_mm: f64) -> Result<Vec<u8>, RenderError> {
    let err = |e: png::EncodingError| RenderError::Encode {
        format: "PNG",
        reason: e.to_string(),
    };
    let rgb = rgb(pixmap);
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, pixmap.width(), pixmap.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Balanced);
    let ppm = (px_per_mm * 1000.0).round() as u32;
    enc.set_pixel_dims(Some(png::PixelDimensions {
        xppu: ppm,
        yppu: ppm,
        unit: png::Unit::Meter,
    }));
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(&rgb).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}
