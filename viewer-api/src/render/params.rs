//! Query parameters and media type of a rendered request (PS3.18 8.3.5 and 8.7.4):
//! `window`, `viewport`, `quality` and the Accept header. Every refusal names the
//! parameter, so a viewer author sees which part of the URL is wrong.

use actix_web::http::{header, StatusCode};
use actix_web::HttpRequest;

use crate::error::ApiError;

/// Largest viewport side we render: beyond this a request is more likely a mistake (or an
/// attempt to make us allocate) than a screen.
pub const MAX_VIEWPORT: u32 = 4096;

/// Output media type of a rendered image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `image/jpeg`, lossy, the default.
    Jpeg,
    /// `image/png`, lossless.
    Png,
}

impl Format {
    /// The MIME type sent in Content-Type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
        }
    }
}

/// VOI LUT function of a window (PS3.3 C.11.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WindowFunction {
    /// `LINEAR`, the DICOM default.
    #[default]
    Linear,
    /// `LINEAR_EXACT`.
    LinearExact,
    /// `SIGMOID`.
    Sigmoid,
}

impl WindowFunction {
    /// Parse the names used by PS3.18 (lower case) and by the header (upper case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "linear" => Some(WindowFunction::Linear),
            "linear_exact" | "linear-exact" => Some(WindowFunction::LinearExact),
            "sigmoid" => Some(WindowFunction::Sigmoid),
            _ => None,
        }
    }
}

/// A window: center and width in modality (rescaled) units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Window center.
    pub center: f64,
    /// Window width (> 0; >= 1 for LINEAR).
    pub width: f64,
    /// How values inside the window are mapped.
    pub function: WindowFunction,
}

/// Everything that shapes a rendered image; also the variable part of the cache key.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderParams {
    /// Explicit window; `None`: the header's first window, else the frame's range.
    pub window: Option<Window>,
    /// Box the image is fitted into, keeping its aspect; `None`: native size.
    pub viewport: Option<(u32, u32)>,
    /// JPEG quality 1-100 (ignored for PNG).
    pub quality: u8,
    /// Output format.
    pub format: Format,
}

impl RenderParams {
    /// Default JPEG quality: visually lossless for grey-level medical images at a
    /// fraction of PNG's size.
    pub const DEFAULT_QUALITY: u8 = 90;

    /// A stable text form used in cache keys (floats by bit pattern, so `40` and `40.0`
    /// share an entry while no two different windows can collide).
    pub fn cache_key(&self) -> String {
        let w = match &self.window {
            Some(w) => format!(
                "{:x},{:x},{:?}",
                w.center.to_bits(),
                w.width.to_bits(),
                w.function
            ),
            None => "-".into(),
        };
        let v = match self.viewport {
            Some((a, b)) => format!("{a}x{b}"),
            None => "-".into(),
        };
        format!("w={w};v={v};q={};f={:?}", self.quality, self.format)
    }
}

fn bad(param: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_parameter", format!("{param}: {message}"))
}

/// Parse the query string and the Accept header of a rendered or thumbnail request.
/// `default_viewport` applies when the query has none (thumbnails).
pub fn parse(
    req: &HttpRequest,
    default_viewport: Option<(u32, u32)>,
) -> Result<RenderParams, ApiError> {
    let format = accept_format(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )?;
    parse_query(req.query_string(), format, default_viewport)
}

/// Parse a series or study rendered request, whose answer is multipart: Accept may name
/// `multipart/related; type="image/png"` (or image/jpeg), or the image type alone.
pub fn parse_multipart(req: &HttpRequest) -> Result<RenderParams, ApiError> {
    let format = accept_multipart_format(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )?;
    parse_query(req.query_string(), format, None)
}

/// Output format of a multipart rendered answer from Accept (see [`parse_multipart`]).
pub fn accept_multipart_format(accept: Option<&str>) -> Result<Format, ApiError> {
    let Some(accept) = accept else {
        return Ok(Format::Jpeg);
    };
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let main = parts.next().unwrap_or_default().to_ascii_lowercase();
        if main == "multipart/related" || main == "multipart/*" {
            let ty = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("type"))
                .map(|(_, v)| v.trim().trim_matches('"').to_string());
            match ty {
                None => return Ok(Format::Jpeg),
                Some(t) => {
                    if let Ok(f) = accept_format(Some(&t)) {
                        return Ok(f);
                    }
                }
            }
        } else if let Ok(f) = accept_format(Some(&main)) {
            return Ok(f);
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!("rendered series and studies are served as multipart/related; type=\"image/jpeg\" or \"image/png\", not {accept}"),
    ))
}

/// Parse the query string alone (split out for tests).
pub fn parse_query(
    query: &str,
    format: Format,
    default_viewport: Option<(u32, u32)>,
) -> Result<RenderParams, ApiError> {
    let mut params = RenderParams {
        window: None,
        viewport: default_viewport,
        quality: RenderParams::DEFAULT_QUALITY,
        format,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw);
        match key {
            "window" => params.window = Some(parse_window(&value)?),
            "viewport" => params.viewport = Some(parse_viewport(&value)?),
            "quality" => params.quality = parse_quality(&value)?,
            // Other PS3.18 parameters (annotation, charset, iccprofile...) do not change
            // what we draw; ignoring them keeps viewers that always send them working.
            _ => {}
        }
    }
    Ok(params)
}

fn parse_window(v: &str) -> Result<Window, ApiError> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad(
            "window",
            format!("expected center,width[,function], got \"{v}\""),
        ));
    }
    let num = |s: &str, what: &str| -> Result<f64, ApiError> {
        s.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| bad("window", format!("{what} \"{s}\" is not a number")))
    };
    let center = num(parts[0], "center")?;
    let width = num(parts[1], "width")?;
    let function = match parts.get(2) {
        None => WindowFunction::Linear,
        Some(f) => WindowFunction::parse(f).ok_or_else(|| {
            bad(
                "window",
                format!("function \"{f}\" is not linear, linear_exact or sigmoid"),
            )
        })?,
    };
    // PS3.3 C.11.2.1.2: LINEAR divides by (width - 1), the others by width.
    let min = if function == WindowFunction::Linear {
        1.0
    } else {
        f64::MIN_POSITIVE
    };
    if width < min {
        return Err(bad(
            "window",
            format!(
                "width {width} must be at least {}",
                if min == 1.0 { "1" } else { "above 0" }
            ),
        ));
    }
    Ok(Window {
        center,
        width,
        function,
    })
}

fn parse_viewport(v: &str) -> Result<(u32, u32), ApiError> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.len() != 2 {
        return Err(bad(
            "viewport",
            format!("expected width,height (cropping is not supported), got \"{v}\""),
        ));
    }
    let side = |s: &str| -> Result<u32, ApiError> {
        s.parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_VIEWPORT).contains(n))
            .ok_or_else(|| {
                bad(
                    "viewport",
                    format!("\"{s}\" is not a whole number from 1 to {MAX_VIEWPORT}"),
                )
            })
    };
    Ok((side(parts[0])?, side(parts[1])?))
}

fn parse_quality(v: &str) -> Result<u8, ApiError> {
    v.trim()
        .parse::<u8>()
        .ok()
        .filter(|q| (1..=100).contains(q))
        .ok_or_else(|| {
            bad(
                "quality",
                format!("\"{v}\" is not a whole number from 1 to 100"),
            )
        })
}

/// Decode `%XX` and `+` of a query value; commas of `window` arrive encoded from some
/// clients. Invalid escapes are kept as they are (the number parser then names them).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pick the output format from Accept: the first of `image/jpeg`, `image/png`, `image/*`
/// or `*/*` listed wins; no header means JPEG; anything else is 406.
pub fn accept_format(accept: Option<&str>) -> Result<Format, ApiError> {
    let Some(accept) = accept else {
        return Ok(Format::Jpeg);
    };
    for media in accept.split(',') {
        let main = media
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match main.as_str() {
            "image/jpeg" | "image/jpg" | "image/*" | "*/*" => return Ok(Format::Jpeg),
            "image/png" => return Ok(Format::Png),
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!("rendered images are served as image/jpeg or image/png, not {accept}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<RenderParams, ApiError> {
        parse_query(s, Format::Jpeg, None)
    }

    #[test]
    fn render_params_parse() {
        let p = q("window=40,400&viewport=256,128&quality=75").unwrap();
        assert_eq!(
            p.window,
            Some(Window {
                center: 40.0,
                width: 400.0,
                function: WindowFunction::Linear
            })
        );
        assert_eq!(p.viewport, Some((256, 128)));
        assert_eq!(p.quality, 75);
        let p = q("window=-600%2C1500%2Csigmoid").unwrap();
        assert_eq!(p.window.map(|w| w.function), Some(WindowFunction::Sigmoid));
        assert_eq!(q("").unwrap().quality, RenderParams::DEFAULT_QUALITY);
    }

    #[test]
    fn render_bad_params_name_the_parameter() {
        for (query, param) in [
            ("window=40", "window"),
            ("window=a,400", "window"),
            ("window=40,0", "window"),
            ("window=40,400,cubic", "window"),
            ("viewport=0,10", "viewport"),
            ("viewport=10", "viewport"),
            ("viewport=99999,10", "viewport"),
            ("quality=0", "quality"),
            ("quality=101", "quality"),
            ("quality=high", "quality"),
        ] {
            let e = q(query).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{query}");
            assert!(e.message.starts_with(param), "{query}: {}", e.message);
        }
    }

    #[test]
    fn render_accept() {
        assert_eq!(accept_format(None).unwrap(), Format::Jpeg);
        assert_eq!(accept_format(Some("image/png")).unwrap(), Format::Png);
        assert_eq!(
            accept_format(Some("image/webp, image/png;q=0.9")).unwrap(),
            Format::Png
        );
        assert_eq!(accept_format(Some("*/*")).unwrap(), Format::Jpeg);
        assert_eq!(
            accept_format(Some("application/dicom")).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            accept_multipart_format(Some("multipart/related; type=\"image/png\"")).unwrap(),
            Format::Png
        );
        assert_eq!(
            accept_multipart_format(Some("multipart/related")).unwrap(),
            Format::Jpeg
        );
        assert_eq!(
            accept_multipart_format(Some("image/png")).unwrap(),
            Format::Png
        );
        assert!(
            accept_multipart_format(Some("multipart/related; type=\"application/dicom\"")).is_err()
        );
    }
}
