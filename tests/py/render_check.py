#!/usr/bin/env python3
"""Independent reference for the hub's rendered WADO-RS: pydicom decodes, numpy (and
pydicom's own Modality LUT / windowing functions) render, and the hub's images are
compared pixel by pixel within a tolerance.

    render_check.py prepare OUT_DIR SAMPLE...
        Copy the sample files into OUT_DIR with fresh UIDs (some samples share a SOP
        Instance UID on purpose; the hub would refuse the second), keeping their transfer
        syntax, and add generated cases the sample data lacks: a 3-frame signed image
        with rescale and a header window, PALETTE COLOR, native YBR_FULL, and JPEG-LS
        made with pyjpegls (CharLS): a 2-frame 12-bit near-lossless (NEAR=2, .81) image
        with rescale and window, an 8-bit lossless MONOCHROME1 one, and an RGB one (the
        hub answers 406 for colour JPEG-LS). Prints one
        line per file: path, transfer syntax UID, study, series, SOP instance UIDs,
        number of frames, photometric interpretation (tab separated).

    render_check.py compare CASES.json
        CASES.json is a list of {"dicom": path, "image": path, "kind": "rendered" |
        "frame", "frame": n, "window": "c,w[,f]" | null, "viewport": [w, h] | null,
        "format": "png" | "jpeg"}. "rendered" cases are an image the hub rendered;
        "frame" cases are the raw bytes of one WADO-RS frame. Prints the differences of
        every case; exits 1 if any is beyond its tolerance.

Tolerances (8-bit output levels): PNG of a lossless original: at most 1 level anywhere
(rounding); an original in JPEG baseline: the two JPEG decoders (libjpeg in Pillow,
jpeg-decoder in the hub) may differ by a few levels, mean <= 1.5, max <= 16; JPEG output
(quality 90, small noisy MR images the worst): mean <= 3, 99th percentile <= 16. Raw frames must be identical for
lossless syntaxes.
"""
import hashlib
import io
import json
import os
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_windowing
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, JPEGLSNearLossless

ROOT = "1.2.826.0.1.3680043.8.498."
JPEG_LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}


def uid(*parts):
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return ROOT + str(int(h[:30], 16))


# ----------------------------------------------------------------------------- prepare

def renamed(src, out_dir, salt):
    """A copy of src with new study/series/instance UIDs, same transfer syntax."""
    ds = pydicom.dcmread(src)
    name = os.path.splitext(os.path.basename(src))[0] or "file"
    ds.StudyInstanceUID = uid(salt, name, "study")
    ds.SeriesInstanceUID = uid(salt, name, "series")
    ds.SOPInstanceUID = uid(salt, name, "sop")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" not in ds:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    path = os.path.join(out_dir, name + ".dcm")
    ds.save_as(path, enforce_file_format=True)
    check = pydicom.dcmread(path)
    assert check.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID, path
    return path


def new_image(path, salt, rows, cols, photometric, spp, bits, signed=False, frames=1):
    meta = FileMetaDataset()
    sc = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    meta.MediaStorageSOPClassUID = sc
    meta.MediaStorageSOPInstanceUID = uid(salt, path, "sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "1"
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sc
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(salt, path, "study")
    ds.SeriesInstanceUID = uid(salt, path, "series")
    ds.Modality = "OT"
    ds.PatientID = "RENDER"
    ds.PatientName = "RENDER^CHECK"
    ds.StudyDate = "20261101"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if spp == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def generated(out_dir, salt):
    paths = []
    yy, xx = np.mgrid[0:64, 0:64]
    # Multi-frame, signed 16-bit, rescale and a header window: every frame differs.
    p = os.path.join(out_dir, "multiframe.dcm")
    ds = new_image(p, salt, 64, 64, "MONOCHROME2", 1, 16, signed=True, frames=3)
    stack = np.stack([(xx * 20 - 600 + f * 150 + yy * 3).astype(np.int16) for f in range(3)])
    ds.RescaleSlope = "2"
    ds.RescaleIntercept = "-100"
    ds.WindowCenter = "50"
    ds.WindowWidth = "1200"
    ds.PixelData = stack.tobytes()
    ds.save_as(p, enforce_file_format=True)
    paths.append(p)
    # PALETTE COLOR, 8-bit indices, 256-entry 16-bit lookup tables.
    p = os.path.join(out_dir, "palette.dcm")
    ds = new_image(p, salt, 64, 64, "PALETTE COLOR", 1, 8)
    idx = np.arange(256, dtype=np.float64)
    ds.RedPaletteColorLookupTableDescriptor = [256, 0, 16]
    ds.GreenPaletteColorLookupTableDescriptor = [256, 0, 16]
    ds.BluePaletteColorLookupTableDescriptor = [256, 0, 16]
    ds.RedPaletteColorLookupTableData = (idx * 257).astype("<u2").tobytes()
    ds.GreenPaletteColorLookupTableData = ((255 - idx) * 257).astype("<u2").tobytes()
    ds.BluePaletteColorLookupTableData = ((np.abs(idx - 128) * 2).clip(0, 255) * 257).astype("<u2").tobytes()
    ds.PixelData = ((xx * 4 + yy) % 256).astype(np.uint8).tobytes()
    ds.save_as(p, enforce_file_format=True)
    paths.append(p)
    # Native YBR_FULL (8-bit, interleaved).
    p = os.path.join(out_dir, "ybr_full.dcm")
    ds = new_image(p, salt, 64, 64, "YBR_FULL", 3, 8)
    ybr = np.stack([(xx * 3 + 40) % 256, (yy * 4) % 256, 255 - yy * 2], axis=-1).astype(np.uint8)
    ds.PixelData = ybr.tobytes()
    ds.save_as(p, enforce_file_format=True)
    paths.append(p)
    # JPEG-LS the sample data lacks (pydicom encodes with pyjpegls, i.e. CharLS): near-
    # lossless 12-bit, 2 frames (one fragment each), rescale and a header window.
    p = os.path.join(out_dir, "jpegls_near.dcm")
    ds = new_image(p, salt, 64, 64, "MONOCHROME2", 1, 16, frames=2)
    ds.BitsStored, ds.HighBit = 12, 11
    stack = np.stack([((xx * 40 + yy * 7 + f * 300 + (xx * yy) % 17) % 4096).astype(np.uint16) for f in range(2)])
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelData = stack.tobytes()
    ds.compress(JPEGLSNearLossless, jls_error=2, generate_instance_uid=False)
    ds.save_as(p, enforce_file_format=True)
    paths.append(p)
    # Lossless 8-bit MONOCHROME1, no window (the frame's own range).
    p = os.path.join(out_dir, "jpegls_8bit.dcm")
    ds = new_image(p, salt, 48, 64, "MONOCHROME1", 1, 8)
    ds.PixelData = ((xx[:48] * 3 + yy[:48] * 2) % 200 + 20).astype(np.uint8).tobytes()
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    ds.save_as(p, enforce_file_format=True)
    paths.append(p)
    # Colour: three components, which the hub's decoder does not do (406 naming it).
    p = os.path.join(out_dir, "jpegls_rgb.dcm")
    ds = new_image(p, salt, 64, 64, "RGB", 3, 8)
    ds.PixelData = np.stack([xx * 3, yy * 4, 255 - yy * 2], axis=-1).astype(np.uint8).tobytes()
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    ds.save_as(p, enforce_file_format=True)
    paths.append(p)
    return paths


def prepare(out_dir, samples):
    os.makedirs(out_dir, exist_ok=True)
    salt = os.path.basename(os.path.abspath(out_dir))
    paths = [renamed(s, out_dir, salt) for s in samples] + generated(out_dir, salt)
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        print("\t".join([p, ds.file_meta.TransferSyntaxUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                         ds.SOPInstanceUID, str(int(ds.get("NumberOfFrames", 1) or 1)),
                         ds.PhotometricInterpretation]))


# ----------------------------------------------------------------------------- reference

def frame_of(ds, frame):
    arr = ds.pixel_array  # pydicom 3: YBR_FULL(_422) and JPEG colour come back as RGB
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame - 1]
    return arr


def parse_window(text):
    parts = text.split(",")
    return float(parts[0]), float(parts[1]), (parts[2].upper() if len(parts) > 2 else "LINEAR")


def reference(path, frame=1, window=None, viewport=None):
    """What a rendered image of this frame should be, as uint8 (rows, cols[, 3])."""
    ds = pydicom.dcmread(path)
    arr = frame_of(ds, frame)
    pi = ds.PhotometricInterpretation
    if ds.SamplesPerPixel == 3:
        out = arr if ds.BitsAllocated == 8 else (arr >> max(0, ds.BitsStored - 8)).astype(np.uint8)
    elif pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        out = (rgb >> 8).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    else:
        x = apply_modality_lut(arr, ds).astype(np.float64)
        w = ds.copy()
        # The modality LUT is applied already; windowing works in its units.
        if window is not None:
            c, wd, f = parse_window(window)
            w.WindowCenter, w.WindowWidth, w.VOILUTFunction = c, wd, f
        elif "WindowCenter" not in ds or "WindowWidth" not in ds:
            # No window anywhere: the server spans the frame's own range.
            lo, hi = float(x.min()), float(x.max())
            w.WindowCenter, w.WindowWidth, w.VOILUTFunction = (lo + hi) / 2 + 0.5, max(hi - lo + 1, 1), "LINEAR"
        y = apply_windowing(x, w)
        # apply_windowing's output spans the stored range (after rescale); bring it to 0-255.
        bits = int(w.BitsStored)
        signed = int(w.PixelRepresentation) == 1
        y_min, y_max = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        if "RescaleSlope" in w and "RescaleIntercept" in w:
            s, i = float(w.RescaleSlope), float(w.RescaleIntercept)
            y_min, y_max = y_min * s + i, y_max * s + i
        out = np.clip(np.round((y - y_min) / (y_max - y_min) * 255.0), 0, 255).astype(np.uint8)
        if pi == "MONOCHROME1":
            out = 255 - out
    if viewport:
        out = box_shrink(out, *viewport)
    return out


def box_shrink(img, vw, vh):
    """Integer-factor box average (the cases use an exact divisor), rounded half up."""
    h, w = img.shape[:2]
    scale = min(vw / w, vh / h)
    ow, oh = round(w * scale), round(h * scale)
    fy, fx = h // oh, w // ow
    assert fy * oh == h and fx * ow == w, "reference shrinks by integer factors only"
    blocks = img.astype(np.uint32).reshape(oh, fy, ow, fx, *img.shape[2:])
    s = blocks.sum(axis=(1, 3))
    n = fy * fx
    return ((s + n // 2) // n).astype(np.uint8)


def decode_image(path):
    im = Image.open(path)
    im.load()
    a = np.asarray(im)
    return a


# ----------------------------------------------------------------------------- compare

def compare_rendered(case):
    ref = reference(case["dicom"], case.get("frame", 1), case.get("window"), case.get("viewport"))
    got = decode_image(case["image"])
    if got.shape != ref.shape:
        return False, f"shape {got.shape} != reference {ref.shape}"
    d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    mean, mx, p99 = float(d.mean()), int(d.max()), float(np.percentile(d, 99))
    ts = pydicom.dcmread(case["dicom"], stop_before_pixels=True).file_meta.TransferSyntaxUID
    if case.get("format") == "jpeg":
        ok = mean <= 3.0 and p99 <= 16
    elif ts in JPEG_LOSSY_SYNTAXES:
        ok = mean <= 1.5 and mx <= 16
    else:
        ok = mx <= 1
    return ok, f"mean {mean:.3f} p99 {p99:.1f} max {mx}"


def compare_frame(case):
    ds = pydicom.dcmread(case["dicom"])
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        # Frames of an uncompressed original are its samples as stored (YBR stays YBR);
        # decoded JPEG colour comes back as RGB from both decoders.
        ds.pixel_array_options(as_rgb=False)
    ref = np.ascontiguousarray(frame_of(ds, case.get("frame", 1)))
    got = open(case["image"], "rb").read()
    ref_bytes = ref.astype(ref.dtype.newbyteorder("<")).tobytes()
    if len(got) != len(ref_bytes):
        return False, f"{len(got)} bytes, reference {len(ref_bytes)}"
    if ds.file_meta.TransferSyntaxUID in JPEG_LOSSY_SYNTAXES:
        g = np.frombuffer(got, dtype=np.uint8).astype(np.int16)
        r = np.frombuffer(ref_bytes, dtype=np.uint8).astype(np.int16)
        d = np.abs(g - r)
        return float(d.mean()) <= 1.5 and int(d.max()) <= 16, f"mean {d.mean():.3f} max {d.max()}"
    return got == ref_bytes, "identical" if got == ref_bytes else "bytes differ"


def compare(cases_path):
    cases = json.load(open(cases_path))
    assert cases, "no cases"
    failed = 0
    for case in cases:
        try:
            ok, detail = (compare_frame if case.get("kind") == "frame" else compare_rendered)(case)
        except Exception as e:  # a broken case is a failure with its reason, not a crash
            ok, detail = False, f"{type(e).__name__}: {e}"
        label = f"{os.path.basename(case['dicom'])} {case.get('kind', 'rendered')} frame={case.get('frame', 1)} " \
                f"window={case.get('window')} viewport={case.get('viewport')} {case.get('format', '')}"
        print(f"{'ok  ' if ok else 'FAIL'} {label}: {detail}")
        failed += not ok
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3:])
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "compare":
        return compare(sys.argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
