#!/usr/bin/env python3
"""Independent readings of an HL7 aECG file for formats/tests/ecg_golden.rs.

Two readers, neither sharing code with ours:
  * "xml.etree": a direct reading with Python's standard library, written from the
    HL7 aECG implementation guide (rhythm series, SLIST_PQ origin + scale x digits);
  * "aecg": the PyPI `aecg` package (needs Python >= 3.12), when it can be imported.
    It rejects an empty <confidentialityCode/>, which the CVRG example has, so that
    element is removed from the tree before the package's model reads it.
Prints one JSON object on stdout: {"readers": {name: reading}, "refused": {name: why}}
(the package refuses files without a series id, such as FDA's minimal example).

Usage: ecg_aecg_golden.py FILE
"""
import json
import re
import sys
import xml.etree.ElementTree as ET

VOLT_TO_UV = {"nV": 1e-3, "uV": 1.0, "mV": 1e3, "V": 1e6}
SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def local(tag):
    return tag.rsplit("}", 1)[-1]


def kids(node, name):
    return [c for c in node if local(c.tag) == name]


def code(node):
    found = kids(node, "code")
    return found[0].get("code") if found else None


def label(mdc_code):
    text = re.sub(r"^MDC_ECG_LEAD_", "", mdc_code)
    return {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}.get(text, text)


def etree_reading(path):
    root = ET.parse(path).getroot()
    series = [s for c in kids(root, "component") for s in kids(c, "series")]
    rhythm = next((s for s in series if code(s) == "RHYTHM"), series[0])
    sequence_set = next(s for c in kids(rhythm, "component") for s in kids(c, "sequenceSet"))
    sequences = [s for c in kids(sequence_set, "component") for s in kids(c, "sequence")]
    rate, labels, leads = None, [], []
    for seq in sequences:
        value = kids(seq, "value")[0]
        if code(seq).startswith("TIME_"):
            inc = kids(value, "increment")[0]
            rate = 1.0 / (float(inc.get("value")) * SECONDS[inc.get("unit", "s")])
            continue
        origin, scale = kids(value, "origin"), kids(value, "scale")
        o = float(origin[0].get("value")) * VOLT_TO_UV[origin[0].get("unit")] if origin else 0.0
        k = float(scale[0].get("value")) * VOLT_TO_UV[scale[0].get("unit")] if scale else 1.0
        digits = kids(value, "digits")[0].text.split()
        labels.append(label(code(seq)))
        leads.append([o + k * float(d) for d in digits])
    measurements = {}
    for annotation in root.iter():
        if local(annotation.tag) != "annotation":
            continue
        if code(annotation) == "MDC_ECG_HEART_RATE":
            measurements.setdefault("heart_rate_bpm", float(kids(annotation, "value")[0].get("value")))
    return {
        "sample_rate_hz": round(rate, 6),
        "labels": labels,
        "samples_uv": leads,
        "measurements": measurements,
    }


def package_reading(path):
    import aecg  # noqa: F401  (PyPI `aecg`, Python >= 3.12)
    from aecg.models import AnnotatedECG
    from aecg.parser import _remove_namespace
    from lxml import etree

    root = etree.parse(path).getroot()
    _remove_namespace(root)
    for element in root.findall("confidentialityCode"):
        if element.get("code") is None:
            root.remove(element)
    model = AnnotatedECG.from_xml_tree(root)
    rhythm = next((s for s in model.series if s.code.code == "RHYTHM"), model.series[0])
    frame = rhythm.sequence_sets[0].get_sequences_df()
    increment_ms = float(frame["RELATIVE_TS"].iloc[1] - frame["RELATIVE_TS"].iloc[0])
    columns = [c for c in frame.columns if c not in ("RELATIVE_TS", "ABSOLUTE_TS")]
    return {
        "version": getattr(aecg, "__version__", "?"),
        "sample_rate_hz": round(1000.0 / increment_ms, 6),
        "labels": [label(c) for c in columns],
        # physical_digits are in mV.
        "samples_uv": [[float(v) * 1000.0 for v in frame[c]] for c in columns],
    }


def main():
    path = sys.argv[1]
    readers, refused = {"xml.etree": etree_reading(path)}, {}
    try:
        readers["aecg"] = package_reading(path)
    except ImportError as missing:
        print(f"aecg package not importable: {missing}", file=sys.stderr)
    except Exception as error:  # the package's own validation refused the file
        refused["aecg"] = f"{type(error).__name__}: {error}".splitlines()[0]
    json.dump({"readers": readers, "refused": refused}, sys.stdout)


if __name__ == "__main__":
    main()
