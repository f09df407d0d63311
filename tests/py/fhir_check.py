#!/usr/bin/env python3
"""Validate a FHIR R4 DiagnosticReport (JSON file) with the `fhir.resources` package.

    fhir_check.py REPORT.json

fhir.resources 6.x models R4 at its root (the release to use, with pydantic < 2); later
releases model R5 there and keep R4B in a subpackage, which is used then (DiagnosticReport
did not change between R4 and R4B). Beyond the models this checks what they leave out:
the value sets of the codes used, the narrative being well-formed XHTML, every local
reference resolving and every contained resource referenced (dom-3), and the PDF
attachment decoding to its stated size. Exit status 0 = valid.
"""
import base64
import json
import sys
import xml.etree.ElementTree as ET

import fhir.resources

if fhir.resources.__version__.startswith("6."):
    from fhir.resources import get_fhir_model_class
    from fhir.resources.diagnosticreport import DiagnosticReport

    def validate(cls, data):
        cls.parse_obj(data)
else:
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    def validate(cls, data):
        cls.model_validate(data)


def local_references(node):
    """Every `reference` value starting with '#' anywhere in the resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith("#"):
                yield value[1:]
            else:
                yield from local_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from local_references(item)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        data = json.load(f)
    validate(DiagnosticReport, data)
    assert data["status"] in {"registered", "partial", "preliminary", "final", "amended",
                              "corrected", "appended", "cancelled", "entered-in-error",
                              "unknown"}, data["status"]
    for c in data.get("contained", []):
        validate(get_fhir_model_class(c["resourceType"]), c)
        if c["resourceType"] == "ImagingStudy":
            assert c["status"] in {"registered", "available", "cancelled", "entered-in-error", "unknown"}
        if c["resourceType"] == "Endpoint":
            assert c["status"] in {"active", "suspended", "error", "off", "entered-in-error", "test"}
    if "text" in data:
        assert data["text"]["status"] == "generated"
        div = ET.fromstring(data["text"]["div"])
        assert div.tag == "{http://www.w3.org/1999/xhtml}div", div.tag
    refs = set(local_references(data))
    ids = {c["id"] for c in data.get("contained", [])}
    assert refs <= ids, ("unresolved references", refs - ids)
    assert ids <= refs, ("contained but not referenced (dom-3)", ids - refs)
    for form in data.get("presentedForm", []):
        if "data" in form:
            pdf = base64.b64decode(form["data"], validate=True)
            assert pdf.startswith(b"%PDF-"), pdf[:8]
            assert form.get("size", len(pdf)) == len(pdf)
    print("valid", data["resourceType"], data["status"])


if __name__ == "__main__":
    main()
