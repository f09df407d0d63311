//! Rendering tests on the shared sample files (pydicom's test data).

use std::path::PathBuf;
use std::time::Instant;

use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use super::encode::encode;
use super::params::{Format, RenderParams, Window, WindowFunction};
use super::pipeline::{decode_frame, open, render, Image, RenderError};

fn sample(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/dicom")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn plain() -> RenderParams {
    RenderParams {
        window: None,
        viewport: None,
        quality: 90,
        format: Format::Jpeg,
    }
}

fn decode_jpeg(b: &[u8]) -> (u16, u16, Vec<u8>) {
    let mut d = jpeg_decoder::Decoder::new(b);
    let px = d.decode().expect("our JPEG decodes");
    let info = d.info().expect("info");
    (info.width, info.height, px)
}

#[test]
fn render_ct_small_jpeg_window_and_viewport() {
    let obj = open(&sample("single/CT_small.dcm")).unwrap();
    let t = Instant::now();
    let img = render(&obj, 1, &plain()).unwrap();
    let jpeg = encode(&img, Format::Jpeg, 90).unwrap();
    eprintln!("CT_small 128x128 16-bit render+JPEG: {:?}", t.elapsed());
    assert_eq!((img.width, img.height, img.channels), (128, 128, 1));
    let (w, h, px) = decode_jpeg(&jpeg);
    assert_eq!((w, h, px.len()), (128, 128, 128 * 128));
    // Something visible: not a flat image.
    assert!(img.pixels.iter().min() < img.pixels.iter().max());

    let mut p = plain();
    p.window = Some(Window {
        center: 40.0,
        width: 80.0,
        function: WindowFunction::Linear,
    });
    let narrow = render(&obj, 1, &p).unwrap();
    assert_ne!(
        narrow.pixels, img.pixels,
        "an explicit window changes the pixels"
    );
    p.window = Some(Window {
        center: 40.0,
        width: 80.0,
        function: WindowFunction::Sigmoid,
    });
    assert_ne!(render(&obj, 1, &p).unwrap().pixels, narrow.pixels);

    p.viewport = Some((64, 32));
    let small = render(&obj, 1, &p).unwrap();
    assert_eq!(
        (small.width, small.height),
        (32, 32),
        "fit keeps the aspect"
    );
    p.viewport = Some((300, 200));
    let big = render(&obj, 1, &p).unwrap();
    assert_eq!((big.width, big.height), (200, 200));
    let (w, h, _) = decode_jpeg(&encode(&big, Format::Jpeg, 50).unwrap());
    assert_eq!((w, h), (200, 200));
}

#[test]
fn render_monochrome1_is_inverted() {
    let mut obj = open(&sample("single/CT_small.dcm")).unwrap();
    let mut p = plain();
    p.window = Some(Window {
        center: 100.0,
        width: 600.0,
        function: WindowFunction::Linear,
    });
    let m2 = render(&obj, 1, &p).unwrap();
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME1",
    ));
    let m1 = render(&obj, 1, &p).unwrap();
    assert!(m1
        .pixels
        .iter()
        .zip(&m2.pixels)
        .all(|(a, b)| *a == 255 - *b));
}

#[test]
fn render_rgb_and_png() {
    for f in [
        "single/SC_rgb_small_odd.dcm",
        "single/examples_rgb_color.dcm",
    ] {
        let obj = open(&sample(f)).unwrap();
        let img = render(&obj, 1, &plain()).unwrap();
        assert_eq!(img.channels, 3, "{f}");
        let png = encode(&img, Format::Png, 90).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let reader = dec.read_info().unwrap();
        assert_eq!(
            (reader.info().width, reader.info().height),
            (img.width, img.height)
        );
        assert_eq!(reader.info().color_type, png::ColorType::Rgb);
    }
    // Colour survives (not flattened to grey as dicom-pixeldata's image path would).
    let obj = open(&sample("single/SC_rgb_small_odd.dcm")).unwrap();
    let img = render(&obj, 1, &plain()).unwrap();
    assert!(img.pixels.chunks(3).any(|c| c[0] != c[1] || c[1] != c[2]));
}

#[test]
fn render_compressed_syntaxes() {
    for f in [
        "compressed/MR_small_RLE.dcm",
        "compressed/JPEG2000.dcm",
        "compressed/SC_rgb_jpeg_dcmtk.dcm",
        "compressed/image_dfl.dcm",
        "compressed/MR_small_jpeg_ls_lossless.dcm",
    ] {
        let obj = open(&sample(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let img: Image = render(&obj, 1, &plain()).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            img.width > 0
                && img.pixels.len()
                    == (img.width * img.height) as usize * usize::from(img.channels),
            "{f}"
        );
        assert!(
            img.pixels.iter().min() < img.pixels.iter().max(),
            "{f} is flat"
        );
        encode(&img, Format::Jpeg, 80).unwrap();
    }
}

#[test]
fn render_jpegls_lossless_equals_the_uncompressed_original() {
    // pydicom's MR_small_jpeg_ls_lossless.dcm is MR_small.dcm (signed 16-bit) in JPEG-LS.
    let jls = open(&sample("compressed/MR_small_jpeg_ls_lossless.dcm")).unwrap();
    let raw = open(&sample("single/MR_small.dcm")).unwrap();
    let a = decode_frame(&jls, 1).unwrap();
    let b = decode_frame(&raw, 1).unwrap();
    assert_eq!(
        (a.columns, a.rows, a.bits_allocated, a.signed),
        (64, 64, 16, true)
    );
    assert_eq!(a.data, b.data, "lossless: identical samples");
    let (ra, rb) = (
        render(&jls, 1, &plain()).unwrap(),
        render(&raw, 1, &plain()).unwrap(),
    );
    assert_eq!(ra, rb);
    assert!(matches!(
        decode_frame(&jls, 2),
        Err(RenderError::NoSuchFrame { .. })
    ));
}

/// Colour JPEG-LS is not decoded: a 406-class error naming the syntax and why.
#[test]
fn render_jpegls_colour_is_refused_by_name() {
    let mut obj = open(&sample("compressed/MR_small_jpeg_ls_lossless.dcm")).unwrap();
    obj.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        dicom_core::PrimitiveValue::from(3u16),
    ));
    match render(&obj, 1, &plain()) {
        Err(e @ RenderError::UnsupportedVariant { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("1.2.840.10008.1.2.4.80") && text.contains("colour"),
                "{text}"
            );
        }
        other => panic!("expected an unsupported JPEG-LS variant, got {other:?}"),
    }
}

#[test]
fn render_frame_out_of_range() {
    let obj = open(&sample("single/CT_small.dcm")).unwrap();
    assert!(matches!(
        render(&obj, 2, &plain()),
        Err(RenderError::NoSuchFrame {
            requested: 2,
            available: 1
        })
    ));
    assert!(matches!(
        render(&obj, 0, &plain()),
        Err(RenderError::NoSuchFrame { .. })
    ));
}

#[test]
fn render_frame_list_names_parameter() {
    assert_eq!(super::parse_frames("1,3", 10).unwrap(), vec![1, 3]);
    for bad in ["0", "a", "1,,2", "-1"] {
        assert!(
            super::parse_frames(bad, 10)
                .unwrap_err()
                .message
                .starts_with("frame"),
            "{bad}"
        );
    }
    assert!(super::parse_frames("1,2,3", 2).is_err());
}

/// Where the render time of one file goes (run by hand:
/// `RENDER_PROFILE_FILE=x.dcm cargo test --release -p viewer-api render_profile -- --ignored --nocapture`).
#[test]
#[ignore]
fn render_profile() {
    let Ok(path) = std::env::var("RENDER_PROFILE_FILE") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let n = 50;
    let mut t_open = std::time::Duration::ZERO;
    let mut t_render = std::time::Duration::ZERO;
    let mut t_encode = std::time::Duration::ZERO;
    let mut size = 0;
    for _ in 0..n {
        let t = Instant::now();
        let obj = open(&bytes).unwrap();
        t_open += t.elapsed();
        let t = Instant::now();
        let img = render(&obj, 1, &plain()).unwrap();
        t_render += t.elapsed();
        let t = Instant::now();
        size = encode(&img, Format::Jpeg, 90).unwrap().len();
        t_encode += t.elapsed();
    }
    let img = render(&open(&bytes).unwrap(), 1, &plain()).unwrap();
    let t = Instant::now();
    let mut size_ref = 0;
    for _ in 0..n {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 90)
            .encode(
                &img.pixels,
                img.width as u16,
                img.height as u16,
                jpeg_encoder::ColorType::Luma,
            )
            .unwrap();
        size_ref = out.len();
    }
    let t_ref = t.elapsed();
    eprintln!(
        "open {:?} render {:?} encode {:?} ({size} bytes); jpeg-encoder {:?} ({size_ref} bytes)",
        t_open / n,
        t_render / n,
        t_encode / n,
        t_ref / n
    );
}

/// The plan of an uncompressed monochrome original renders exactly what the parse does,
/// straight from the file's bytes; other originals get no plan.
#[test]
fn render_planned_equals_parsed_render() {
    use super::pipeline::{native_plan, open_scanned, render_planned};
    for f in [
        "single/CT_small.dcm",
        "single/MR_small.dcm",
        "single/MR_small_implicit.dcm",
        "tree/77654033/CR1/6154",
        "tree/77654033/CT2/17106",
    ] {
        let bytes = sample(f);
        let (obj, scan) = open_scanned(&bytes).unwrap();
        let plan = native_plan(&obj, &bytes, &scan).unwrap_or_else(|| panic!("{f}: no plan"));
        let mut p = plain();
        for window in [
            None,
            Some(Window {
                center: 40.0,
                width: 400.0,
                function: WindowFunction::Linear,
            }),
            Some(Window {
                center: 10.0,
                width: 90.0,
                function: WindowFunction::Sigmoid,
            }),
        ] {
            for viewport in [None, Some((64, 40))] {
                p.window = window;
                p.viewport = viewport;
                assert_eq!(
                    render_planned(&plan, &bytes, 1, &p).unwrap(),
                    render(&obj, 1, &p).unwrap(),
                    "{f} {window:?} {viewport:?}"
                );
            }
        }
        assert!(matches!(
            render_planned(&plan, &bytes, 2, &p),
            Err(RenderError::NoSuchFrame { .. })
        ));
        // A truncated file cannot make the plan read beyond it.
        assert!(render_planned(&plan, &bytes[..bytes.len() / 2], 1, &p).is_err());
    }
    for f in [
        "compressed/MR_small_RLE.dcm",
        "compressed/JPEG2000.dcm",
        "single/SC_rgb_small_odd.dcm",
        "compressed/image_dfl.dcm",
    ] {
        let bytes = sample(f);
        let (obj, scan) = open_scanned(&bytes).unwrap();
        assert!(native_plan(&obj, &bytes, &scan).is_none(), "{f}");
    }
}
