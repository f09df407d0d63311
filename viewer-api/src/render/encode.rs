//! JPEG and PNG encoding of rendered pixels. jpeg-encoder (already built for the transfer
//! syntax registry) and png replace the `image` crate: we only need two encoders.

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
    let mut out = Vec::with_capacity(img.pixels.len() / 4);
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    let done = if img.channels == 3 {
        encoder.encode(&img.pixels, w, h, jpeg_encoder::ColorType::Rgb)
    } else {
        encoder.encode_image(GreyRows {
            pixels: &img.pixels,
            width: w,
            height: h,
        })
    };
    done.map_err(|e| RenderError::Corrupt(format!("JPEG encoding: {e}")))?;
    Ok(out)
}

/// Grey pixels handed to the JPEG encoder a row at a time by slice copy: the encoder's
/// own grey image type pushes them byte by byte, a tenth of the encoding time of a CT
/// slice.
struct GreyRows<'a> {
    pixels: &'a [u8],
    width: u16,
    height: u16,
}

impl jpeg_encoder::ImageBuffer for GreyRows<'_> {
    fn get_jpeg_color_type(&self) -> jpeg_encoder::JpegColorType {
        jpeg_encoder::JpegColorType::Luma
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let w = usize::from(self.width);
        let start = usize::from(y) * w;
        // `Image` holds width x height bytes; `get` keeps a broken invariant from
        // panicking here.
        if let Some(row) = self.pixels.get(start..start + w) {
            buffers[0].extend_from_slice(row);
        }
    }
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
