#!/usr/bin/env python3
"""Independent reading of a DICOM ECG waveform for formats/tests/ecg_golden.rs.

Uses pydicom only (none of our code): `Dataset.waveform_array` applies channel
sensitivity, correction factor and baseline; we convert the channel's sensitivity
units to microvolts. Prints one JSON object on stdout.

Usage: ecg_dicom_golden.py [FILE]   (default: pydicom's waveform_ecg.dcm)
Needs: pydicom (PyPI), numpy.
"""
import json
import re
import sys

import pydicom
from pydicom.data import get_testdata_file

UNIT_TO_UV = {"nV": 1e-3, "uV": 1.0, "mV": 1e3, "V": 1e6}
MEASUREMENTS = {
    "rr interval": "rr_ms",
    "pr interval": "pr_ms",
    "qrs duration": "qrs_ms",
    "qt interval": "qt_ms",
    "qtc interval": "qtc_ms",
    "p axis": "p_axis",
    "qrs axis": "qrs_axis",
    "t axis": "t_axis",
}


def label(meaning):
    """'Lead I (Einthoven)' -> 'I', 'Lead aVR' -> 'aVR'."""
    text = re.sub(r"\(.*?\)", "", meaning).strip()
    text = re.sub(r"^lead\s+", "", text, flags=re.I)
    return {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}.get(text.upper(), text)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else get_testdata_file("waveform_ecg.dcm")
    ds = pydicom.dcmread(path)
    groups = ds.WaveformSequence
    index = next(
        (i for i, g in enumerate(groups) if g.get("WaveformOriginality") == "ORIGINAL"), 0
    )
    group = groups[index]
    values = ds.waveform_array(index)  # samples x channels, in sensitivity units
    labels, leads = [], []
    for c, channel in enumerate(group.ChannelDefinitionSequence):
        labels.append(label(channel.ChannelSourceSequence[0].CodeMeaning))
        unit = channel.ChannelSensitivityUnitsSequence[0].CodeValue
        leads.append([float(v) * UNIT_TO_UV[unit] for v in values[:, c]])
    measurements = {}
    for item in ds.get("WaveformAnnotationSequence", []):
        if "NumericValue" not in item or "ConceptNameCodeSequence" not in item:
            continue
        key = MEASUREMENTS.get(item.ConceptNameCodeSequence[0].CodeMeaning.lower())
        if key and key not in measurements:
            measurements[key] = float(item.NumericValue)
    statements = [
        str(item.UnformattedTextValue)
        for item in ds.get("WaveformAnnotationSequence", [])
        if "UnformattedTextValue" in item
    ]
    json.dump(
        {
            "reader": f"pydicom {pydicom.__version__}",
            "path": str(path),
            "sample_rate_hz": float(group.SamplingFrequency),
            "labels": labels,
            "samples_uv": leads,
            "measurements": measurements,
            "statements": statements,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
