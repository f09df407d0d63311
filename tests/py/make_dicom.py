#!/usr/bin/env python3
"""Generate small DICOM files for the end-to-end tests (pydicom).

    make_dicom.py study OUT_DIR COUNT [--salt S] [--modality CT] [--priority STAT]
        COUNT 64x64 instances of one study (one series), UIDs derived from the salt.
    make_dicom.py chinese OUT_DIR
        gb18030.dcm (Specific Character Set GB18030) and utf8.dcm (ISO_IR 192), Chinese names.
    make_dicom.py bad-uid OUT_DIR
        bad_uid.dcm: SOP Instance UID with letters in it.
    make_dicom.py slow-ecg OUT_DIR
        slow_ecg.dcm: pydicom's real 12-lead ECG (61 bpm) declared at half its sampling
        rate, so it reads as 30 bpm: an emergency bradycardia, with new UIDs. Its
        annotations (the device's 61 bpm, which would be shown instead) are removed:
        only the automatic measurement sees the emergency.

Prints the written paths, one a line.
"""
import argparse
import hashlib
import os

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.8.498."


def uid(*parts):
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return ROOT + str(int(h[:30], 16))


def base(path, sop_uid, study, series, number, charset="ISO_IR 100"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "1"
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = "CT"
    ds.StudyDate = "20261101"
    ds.StudyTime = "083000"
    ds.AccessionNumber = "ACC" + study[-6:]
    ds.PatientID = "PID" + study[-6:]
    ds.PatientName = "TEST^PATIENT"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Rows = 64
    ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4095, (64, 64), dtype=np.uint16).tobytes()
    return ds


def study(out, count, salt, modality, priority):
    st = uid(salt, "study")
    se = uid(salt, "series")
    for n in range(1, count + 1):
        path = os.path.join(out, f"{salt}_{n:04d}.dcm")
        ds = base(path, uid(salt, "sop", n), st, se, n)
        ds.Modality = modality
        if priority:
            ds.RequestedProcedurePriority = priority
        ds.save_as(path, enforce_file_format=True)
        print(path)


def chinese(out):
    for name, charset, pn in [
        ("gb18030.dcm", "GB18030", "Zhang^San=张^三"),
        ("utf8.dcm", "ISO_IR 192", "Wang^Fang=王^芳"),
    ]:
        path = os.path.join(out, name)
        ds = base(path, uid(name, "sop"), uid(name, "study"), uid(name, "series"), 1, charset)
        ds.PatientName = pn
        ds.StudyDescription = "胸部CT平扫"
        ds.save_as(path, enforce_file_format=True)
        print(path)


def bad_uid(out):
    path = os.path.join(out, "bad_uid.dcm")
    ds = base(path, "1.2.3.4.abc", uid("bad", "study"), uid("bad", "series"), 1)
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds.save_as(path, enforce_file_format=True)
    print(path)


def slow_ecg(out):
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file("waveform_ecg.dcm"))
    for item in ds.WaveformSequence:
        item.SamplingFrequency = float(item.SamplingFrequency) / 2
    if "WaveformAnnotationSequence" in ds:
        del ds.WaveformAnnotationSequence
    ds.StudyInstanceUID = uid("slow-ecg", "study")
    ds.SeriesInstanceUID = uid("slow-ecg", "series")
    ds.SOPInstanceUID = uid("slow-ecg", "sop")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "SLOW-ECG"
    path = os.path.join(out, "slow_ecg.dcm")
    ds.save_as(path, enforce_file_format=True)
    print(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["study", "chinese", "bad-uid", "slow-ecg"])
    ap.add_argument("out")
    ap.add_argument("count", nargs="?", type=int, default=3)
    ap.add_argument("--salt", default="s")
    ap.add_argument("--modality", default="CT")
    ap.add_argument("--priority", default="")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.kind == "study":
        study(a.out, a.count, a.salt, a.modality, a.priority)
    elif a.kind == "chinese":
        chinese(a.out)
    elif a.kind == "slow-ecg":
        slow_ecg(a.out)
    else:
        bad_uid(a.out)


if __name__ == "__main__":
    main()
