//! JPEG and PNG encoding of rendered pixels: grey JPEG by our own baseline encoder
//! (`super::jpeg_grey`, about 3x faster than jpeg-encoder on windowed CT), colour JPEG by
//! jpeg-encoder (already built for the transfer syntax registry), PNG by png.

use super::params::Format;
use super::pipeline::{Image, RenderError};

/// Encode `img` as `format`; `quality` applies to JPEG.
pub fn encode(img: &Image, format: Format, quality: u8) -> Result<Vec<u8>, RenderError> {
    match format {
        Format::Jpeg => jpeg(img, quality),
        Format::Png => png(img),
    }
}

fn jpeg(img: &Image, quality: u8) -> Result<Vec<u8>, RenderError> {
    // JPEG sizes are 16-bit; larger DICOM images (whole-slide tiles aside) do not occur.
    let (w, h) = match (u16::try_from(img.width), u16::try_from(img.height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => {
            return Err(RenderError::Unsupported(format!(
                "{}x{} is too large for JPEG; ask for a viewport",
                img.width, img.height
            )))
        }
    };
    let quality = quality.clamp(1, 100);
    if img.channels == 1 {
        return super::jpeg_grey::encode_grey(&img.pixels, w, h, quality);
    }
    let mut out = Vec::with_capacity(img.pixels.len() / 4);
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&img.pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| RenderError::Corrupt(format!("JPEG encoding: {e}")))?;
    Ok(out)
}

fn png(img: &Image) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::with_capacity(img.pixels.len() / 2);
    let mut enc = png::Encoder::new(&mut out, img.width, img.height);
    enc.set_color(if img.channels == 3 {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    enc.set_depth(png::BitDepth::Eight);
    // Fast compression: interactive viewing cares about latency more than bytes.
    enc.set_compression(png::Compression::Fast);
    let err = |e: png::EncodingError| RenderError::Corrupt(format!("PNG encoding: {e}"));
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(&img.pixels).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}
