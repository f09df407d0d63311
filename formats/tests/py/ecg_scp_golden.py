#!/usr/bin/env python3
"""Independent reading of an SCP-ECG record for formats/tests/ecg_golden.rs.

Runs BioSig's `save2gdf` (Debian package biosig-tools; libbiosig's own SCP-ECG
decoder, none of our code) to convert the record to BioSig ASCII, then reads its
header and per-channel sample files. Prints one JSON object on stdout.

Usage: ecg_scp_golden.py FILE
Needs: save2gdf on PATH (apt-get install biosig-tools).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    source = os.path.abspath(sys.argv[1])
    tool = shutil.which("save2gdf")
    if tool is None:
        sys.exit("save2gdf not found: apt-get install biosig-tools")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.asc")
        run = subprocess.run(
            [tool, "-f=ASCII", source, out], capture_output=True, text=True, check=False
        )
        if not os.path.exists(out):
            sys.exit(f"save2gdf failed: {run.stdout}{run.stderr}")
        channels, current = [], None
        with open(out, encoding="latin-1") as header:
            for line in header:
                key, sep, value = line.partition("=")
                if not sep:
                    continue
                key = key.strip()
                value = value.split("#")[0].strip()
                if key == "Filename" and value.endswith(tuple(f".a{n:02d}" for n in range(100))):
                    current = {"file": value}
                    channels.append(current)
                elif current is not None:
                    current[key] = value
        labels, leads = [], []
        for channel in channels:
            labels.append(channel["Label"])
            with open(os.path.join(tmp, channel["file"]), encoding="ascii") as data:
                leads.append([float(v) for v in data.read().split()])
        version = (run.stdout + run.stderr).strip().splitlines()
    first = channels[0]
    about = subprocess.run([tool, "-v"], capture_output=True, text=True, check=False)
    name = next((l for l in about.stdout.splitlines() if l.startswith("save2gdf")), "save2gdf")
    json.dump(
        {
            "reader": f"biosig {name}",
            "sample_rate_hz": float(first["SamplingRate"]),
            "labels": labels,
            "samples_uv": leads,
            "units": sorted({c["PhysicalUnits"] for c in channels}),
            "filters": {
                "highpass_hz": float(first["HighPassFilter"]),
                "lowpass_hz": float(first["LowPassFilter"]),
                "notch_hz": float(first["NotchFilter"]),
            },
            "tool_output": version,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
