#!/usr/bin/env python3
"""Check the hub's DICOMweb answers with the third-party `dicomweb-client` package.

    HUB_TOKEN=... dicomweb_check.py DICOMWEB_ROOT

Every study found by QIDO is listed at series and instance level, its instances are
retrieved (WADO-RS) and parse with pydicom, and /metadata agrees with them.
"""
import os
import sys

from dicomweb_client.api import DICOMwebClient


def main():
    client = DICOMwebClient(
        url=sys.argv[1],
        headers={"Authorization": "Bearer " + os.environ["HUB_TOKEN"]},
    )
    studies = client.search_for_studies()
    assert studies, "no studies found"
    for st in studies:
        study = st["0020000D"]["Value"][0]
        series = client.search_for_series(study_instance_uid=study)
        assert len(series) == int(st["00201206"]["Value"][0]), (study, series)
        instances = client.search_for_instances(study_instance_uid=study)
        assert len(instances) == int(st["00201208"]["Value"][0]), (study, instances)
        for inst in instances:
            se = inst["0020000E"]["Value"][0]
            sop = inst["00080018"]["Value"][0]
            ds = client.retrieve_instance(study, se, sop)
            assert ds.SOPInstanceUID == sop, (ds.SOPInstanceUID, sop)
            meta = client.retrieve_instance_metadata(study, se, sop)
            assert meta["00080018"]["Value"][0] == sop
            assert meta["0020000D"]["Value"][0] == study
        retrieved = client.retrieve_study(study)
        assert len(retrieved) == len(instances)
    print(f"dicomweb-client: {len(studies)} studies checked")


if __name__ == "__main__":
    main()
