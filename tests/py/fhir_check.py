#!/usr/bin/env python3
"""Validate a FHIR R4 DiagnosticReport (JSON file) with the `fhir.resources` package.

    fhir_check.py REPORT.json

R4B models are used: fhir.resources ships no separate R4 package, and DiagnosticReport did
not change between R4 and R4B. Contained resources are validated too, every local
reference must resolve, and the presented PDF must decode. Exit status 0 = valid.
"""
import base64
import json
import sys

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.diagnosticreport import DiagnosticReport


def local_references(node):
    """Every `reference` value starting with '#' anywhere in the resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith("#"):
                yield value
            else:
                yield from local_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from local_references(item)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    DiagnosticReport.model_validate(data)
    assert data["status"] in ("registered", "partial", "preliminary", "final", "amended",
                              "corrected", "appended", "cancelled", "entered-in-error",
                              "unknown"), data["status"]
    ids = set()
    for c in data.get("contained", []):
        get_fhir_model_class(c["resourceType"]).model_validate(c)
        ids.add("#" + c["id"])
    for ref in local_references(data):
        assert ref in ids, f"reference {ref} does not resolve"
    for form in data.get("presentedForm", []):
        pdf = base64.b64decode(form["data"])
        assert pdf.startswith(b"%PDF"), "presentedForm is not a PDF"
    print("valid", data["resourceType"], data["status"])


if __name__ == "__main__":
    main()
