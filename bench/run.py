#!/usr/bin/env python3
"""Re-runnable performance benchmark of the hub and the township gateway, side by side
with Orthanc (when the Debian packages `orthanc` and `orthanc-dicomweb` are installed).

    python3 bench/run.py [--workdir DIR] [--ct-slices 300] [--skip-orthanc]
                         [--only cstore,stow,qido,metadata,memory,rendered] [--no-build]
                         [--rounds 3] [--memory-mb 1000] [--keep] [--python-client]
                         [--keep-caches]

See docs/benchmark.md for the method and the latest figures.

Loads (each reported as ours, Orthanc's, the ratio and the target):
  cstore    C-STORE of the CT series over ONE association (dcmtk /usr/bin/storescu)
            into our gateway vs Orthanc's DICOM port; instances/s of the storescu run.
            Target: ours >= 2x Orthanc. (Median of --rounds; plus, for information,
            the same into a gateway whose hub is not on this machine.)
  stow      STOW-RS of the CT series (a --salt copy, so it is new to both servers):
            4 client threads, 10 instances per request; instances/s. Target: >= 2x.
  qido      QIDO-RS study search, 16 clients x 50 requests over the qido studies
            (loaded by STOW first), a mix of PatientID / PatientName wildcard /
            StudyDate range / ModalitiesInStudy / plain limit queries; p50 and p99.
            Target: our p99 <= 1/5 of Orthanc's.
  metadata  WADO-RS series metadata of the CT series, 1 warm-up + 30 sequential
            requests; median and p99. Target: ours >= 10x faster (median).
  memory    ~1 GB study (copies of the CT series with new UIDs) sent by storescu into
            a fresh gateway, forwarded to a fresh hub; peak RSS (VmHWM) of each.
            Target: each < 200 MB (10^6 bytes). Orthanc's peak for the same study
            is shown for information.
  rendered  WADO-RS `.../instances/{sop}/rendered` as image/jpeg of the 512x512 16-bit CT
            slices: every slice once, sequentially, with the header's window (ours: server
            time from the hub's access log %D, plus client time on loopback), then the
            rate pass: wrk (a C load generator; Debian: `apt-get install wrk`), one thread,
            4 connections, 15 s per server, over the same list of 30000 distinct
            (slice, window) URLs for both servers (images/s, CPU ms per image). Without wrk
            (or with --python-client) the rate pass is 4 Python threads over every slice
            x 3 windows, as before. Every request renders (ours: no render-cache hit).
            Targets: our median server time < 10 ms; our rate >= 2x Orthanc's.

Every server runs on 127.0.0.1 with a fresh data directory under the work directory.
Our hub authenticates every request: after starting a hub the script creates, with the
hub's own admin CLI (`hub admin`, same HUB_DATA_DIR), a site "bench", a gateway key for
it (STOW-RS into the hub and the gateway's `hub_key`) and a reader with every specialty,
who logs in for a bearer token (QIDO/WADO reads). Orthanc runs without authentication.
The final table is printed and written to <workdir>/results.json. The exit status is 0
even when a target is missed (this is a report); it is 1 when the product failed to
build, start or do what a load asked, 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import queue
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import requests
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parent.parent
MAKE_CORPUS = (REPO / ".." / "shared" / "tools" / "make_corpus.py").resolve()
STORESCU = "/usr/bin/storescu"  # dcmtk; a pynetdicom script of the same name may shadow it on PATH
ORTHANC_BIN = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
LOADS = ["cstore", "stow", "qido", "metadata", "memory", "rendered"]
DICOM_JSON = "application/dicom+json"

# Load parameters (kept here so the report and docs/benchmark.md agree).
STOW_CLIENTS = 4
STOW_BATCH = 10
QIDO_CLIENTS = 16
QIDO_REQUESTS_PER_CLIENT = 50
METADATA_REQUESTS = 30
MEMORY_LIMIT_MB = 200
RENDER_CLIENTS = 4  # rate pass of the rendered load: 2 per core
# Rate pass: every slice once per window, windows the latency pass does not ask for (no
# cache hits for ours; identical output from both servers), in PS3.18's form with the
# function (Orthanc refuses center,width alone).
RENDER_RATE_WINDOWS = ["40,400,linear", "-600,1500,linear", "50,350,linear"]
RENDER_SERVER_MS = 10  # target: median server time of one 512x512 CT slice to JPEG
# With wrk: a fixed time per server over (slice, window) pairs never asked for before,
# windows 40+2k,400 for k < RENDER_RATE_WINDOW_COUNT (300 slices x 100 = 30000 distinct
# URLs, more than either server answers in RENDER_WRK_SECONDS: no render-cache hit).
RENDER_WRK_SECONDS = 15
RENDER_RATE_WINDOW_COUNT = 100
# wrk (Debian: apt-get install wrk), a C load generator using ~0.05 ms CPU per request;
# without it the rate pass falls back to Python threads.
WRK = shutil.which("wrk")

# Accounts the script creates in every hub it starts (the hub authenticates every request).
BENCH_SITE = "bench"
BENCH_READER = "benchreader"
KEY_LINE = "key (shown once; put it in the gateway's hub_key): "

# Bounds on every wait, in seconds.
START_TIMEOUT = 60
HTTP_TIMEOUT = 300
STORESCU_TIMEOUT = 3600
FORWARD_TIMEOUT = 1800


class ProductError(Exception):
    """The product (hub, gateway) or the reference server failed to do what was asked."""


# Set on Ctrl-C/SIGTERM: client threads stop before their next request.
STOP = threading.Event()


def check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Processes: the one place that starts and stops servers
# --------------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    ready_line: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Hub:
    proc: Proc
    url: str  # http://127.0.0.1:PORT
    gateway_key: str = ""  # gk_...: site "bench"'s key; STOW-RS and the gateway's hub_key
    reader_token: str = ""  # bearer token of the reader BENCH_READER: QIDO/WADO

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicomweb"

    @property
    def stow_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.gateway_key}"}

    @property
    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.reader_token}"}


@dataclass
class GatewayProc:
    proc: Proc
    host: str
    port: int
    ae: str


@dataclass
class Orthanc:
    proc: Proc
    http: str
    dicom_port: int
    ae: str = "ORTHANC"

    @property
    def dicomweb(self) -> str:
        return self.http + "/dicom-web"


class Processes:
    """Starts hub, gateway and Orthanc processes in fresh data dirs; stops them all."""

    def __init__(self, run_dir: Path, bin_dir: Path):
        self.run_dir = run_dir
        self.bin_dir = bin_dir
        self.procs: list[Proc] = []
        self.lock = threading.Lock()

    def _spawn(self, name: str, argv: list[str], env: dict, ready_prefix: str | None) -> Proc:
        log_path = self.run_dir / f"{name}.log"
        logf = open(log_path, "ab")
        popen = subprocess.Popen(
            argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if ready_prefix else logf, stderr=logf,
            start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
        )
        logf.close()
        proc = Proc(name, popen, log_path)
        with self.lock:
            self.procs.append(proc)
        if ready_prefix is None:
            return proc
        # Read stdout in a thread (bounded wait for the ready line), then keep draining it.
        lines: queue.Queue = queue.Queue()

        def pump():
            with open(log_path.with_suffix(".stdout"), "ab") as out:
                for raw in popen.stdout:
                    out.write(raw)
                    out.flush()
                    lines.put(raw.decode(errors="replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"{name}-stdout").start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(0.1, remaining)) if remaining > 0 else None
            except queue.Empty:
                line = None
            if line is None:
                raise ProductError(f"{name} did not print '{ready_prefix}' within {START_TIMEOUT}s "
                                   f"(exit code {popen.poll()}); log tail:\n{proc.log_tail()}")
            if line.startswith(ready_prefix):
                proc.ready_line = line
                return proc

    def start_hub(self, tag: str) -> Hub:
        data = self.run_dir / f"hub-{tag}"
        exe = self.bin_dir / "hub"
        if not exe.exists():
            raise ProductError(f"{exe} is missing (build with cargo build --release -p hub)")
        proc = self._spawn(f"hub-{tag}", [str(exe), "serve", "--listen", "127.0.0.1:0"],
                           {"HUB_DATA_DIR": str(data)}, "hub ready:")
        url = proc.ready_line.split("http=", 1)[1].strip()
        hub = Hub(proc, url)
        wait_http_ok(hub.url + "/healthz", f"hub-{tag}")
        self._provision_hub(hub, exe, data, tag)
        log(f"started hub-{tag} pid {proc.pid} at {url} (site {BENCH_SITE}: gateway key + reader token)")
        return hub

    def _provision_hub(self, hub: Hub, exe: Path, data: Path, tag: str) -> None:
        """Site, gateway key and reader for the loads, made with the hub's admin CLI on
        the hub's own database (same HUB_DATA_DIR); then the reader logs in for a token."""
        env = {**os.environ, "HUB_DATA_DIR": str(data)}

        def admin(*args: str, stdin: str | None = None) -> str:
            argv = [str(exe), "admin", *args]
            try:
                p = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                                   timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise ProductError(f"hub-{tag}: `hub admin {args[0]}` did not finish within {START_TIMEOUT}s")
            if p.returncode != 0:
                raise ProductError(f"hub-{tag}: `hub admin {' '.join(args)}` failed (exit {p.returncode}):\n"
                                   + (p.stdout + p.stderr).strip()[-1500:])
            return p.stdout

        admin("site-add", BENCH_SITE, "Bench township", "--kind", "township")
        out = admin("key-create", "--site", BENCH_SITE, "--label", "bench")
        key = next((line[len(KEY_LINE):].strip() for line in out.splitlines() if line.startswith(KEY_LINE)), "")
        if not key.startswith("gk_"):
            raise ProductError(f"hub-{tag}: no gateway key in the output of `hub admin key-create`:\n{out}")
        password = "bench-" + uuid.uuid4().hex  # >= 10 characters
        admin("user-add", BENCH_READER, "--role", "reader", "--specialty", "radiology",
              "--specialty", "cardiology", "--specialty", "laboratory", "--grade", "senior",
              "--password-stdin", stdin=password + "\n")
        r = requests.post(hub.url + "/api/auth/login", timeout=60,
                          json={"username": BENCH_READER, "password": password, "kind": "bearer"})
        token = r.json().get("token") if r.status_code == 200 else None
        if not token:
            raise ProductError(f"hub-{tag}: login of {BENCH_READER} failed: HTTP {r.status_code}: {r.text[:300]}")
        hub.gateway_key, hub.reader_token = key, token

    def start_gateway(self, tag: str, hub_url: str, hub_key: str, quiet_period_secs: int = 5) -> GatewayProc:
        data = self.run_dir / f"gateway-{tag}"
        exe = self.bin_dir / "gateway"
        if not exe.exists():
            raise ProductError(f"{exe} is missing (build with cargo build --release -p gateway)")
        cfg = self.run_dir / f"gateway-{tag}.toml"
        cfg.write_text(
            f'ae_title = "BENCH_GW"\n'
            f'listen = "127.0.0.1:0"\n'
            f'hub_url = "{hub_url}"\n'
            f'hub_key = "{hub_key}"\n'
            f'site = "{BENCH_SITE}"\n'  # a label only: the hub knows the site from hub_key
            f'data_dir = "{data}"\n'
            f"quiet_period_secs = {quiet_period_secs}\n"
        )
        proc = self._spawn(f"gateway-{tag}", [str(exe), "run", "--config", str(cfg)], {}, "gateway ready:")
        # gateway ready: dicom=127.0.0.1:PORT ae=BENCH_GW
        fields = dict(kv.split("=", 1) for kv in proc.ready_line.split()[2:] if "=" in kv)
        host, port = fields["dicom"].rsplit(":", 1)
        gw = GatewayProc(proc, host, int(port), fields.get("ae", "BENCH_GW"))
        log(f"started gateway-{tag} pid {proc.pid} at {host}:{port} ae={gw.ae}")
        return gw

    def start_orthanc(self, tag: str) -> Orthanc:
        data = self.run_dir / f"orthanc-{tag}"
        data.mkdir(parents=True)
        http_port, dicom_port = free_port(), free_port()
        # Orthanc's defaults, plus what the benchmark needs: its own storage, free ports,
        # DICOMweb on, no authentication (only 127.0.0.1 can reach it), no compression.
        config = {
            "Name": f"bench-{tag}",
            "StorageDirectory": str(data),
            "IndexDirectory": str(data),
            "StorageCompression": False,
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [ORTHANC_DICOMWEB],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        cfg = self.run_dir / f"orthanc-{tag}.json"
        cfg.write_text(json.dumps(config, indent=2))
        proc = self._spawn(f"orthanc-{tag}", [ORTHANC_BIN, str(cfg)], {"TCP_NODELAY": "1"}, None)
        orthanc = Orthanc(proc, f"http://127.0.0.1:{http_port}", dicom_port)
        wait_http_ok(orthanc.http + "/system", f"orthanc-{tag}", proc)
        plugins = requests.get(orthanc.http + "/plugins", timeout=10).json()
        if "dicom-web" not in plugins:
            raise ProductError(f"Orthanc started without its DICOMweb plugin (plugins: {plugins})")
        log(f"started orthanc-{tag} pid {proc.pid} http={orthanc.http} dicom=127.0.0.1:{dicom_port}")
        return orthanc

    def stop(self, proc: Proc, grace: float = 20.0) -> None:
        p = proc.popen
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(timeout=10)
        with self.lock:
            if proc in self.procs:
                self.procs.remove(proc)

    def stop_all(self) -> None:
        with self.lock:
            procs = list(reversed(self.procs))
        for proc in procs:
            try:
                self.stop(proc)
            except Exception as e:  # keep stopping the others
                print(f"warning: could not stop {proc.name} (pid {proc.pid}): {e}", file=sys.stderr)

    def check_alive(self) -> None:
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.popen.poll() is not None:
                raise ProductError(f"{proc.name} exited with code {proc.popen.returncode}; "
                                   f"log tail:\n{proc.log_tail()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ok(url: str, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise ProductError(f"{what} exited with code {proc.popen.returncode}; log tail:\n{proc.log_tail()}")
        try:
            r = requests.get(url, timeout=5)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = str(e)
        time.sleep(0.2)
    raise ProductError(f"{what} not healthy at {url} within {START_TIMEOUT}s: {last}")


# --------------------------------------------------------------------------------------
# Targets: what one load is run against ("ours" and "orthanc")
# --------------------------------------------------------------------------------------

class Target:
    """One system under test: a DICOMweb root for STOW/QIDO/WADO and a C-STORE SCP, with
    the HTTP headers its requests carry (our hub: Authorization; Orthanc: none)."""

    def __init__(self, name: str, dicomweb: str, dicom=None, pids=None,
                 stow_headers: dict | None = None, read_headers: dict | None = None):
        self.name = name
        self.dicomweb = dicomweb
        self._dicom = dicom  # callable returning (host, port, ae), started lazily
        self._pids = pids  # callable returning {process name: pid}, for CPU accounting
        self.stow_headers = dict(stow_headers or {})  # STOW-RS
        self.read_headers = dict(read_headers or {})  # QIDO-RS, WADO-RS

    @classmethod
    def hub(cls, name: str, hub: Hub, dicom=None, pids=None) -> "Target":
        return cls(name, hub.dicomweb, dicom, pids, hub.stow_headers, hub.read_headers)

    def dicom(self) -> tuple[str, int, str]:
        return self._dicom()

    def pids(self) -> dict[str, int]:
        return self._pids() if self._pids else {}


class Targets:
    """Our hub (+ lazily started gateway) and, when available, one Orthanc, shared by
    the cstore/stow/qido/metadata loads of one run."""

    def __init__(self, procs: Processes, want_orthanc: bool):
        self.procs = procs
        self.hub = procs.start_hub("main")
        self.gateway: GatewayProc | None = None
        self.ours = Target.hub("ours", self.hub, self._gateway_addr, self._our_pids)
        self.orthanc_proc = procs.start_orthanc("main") if want_orthanc else None
        self.orthanc = None
        if self.orthanc_proc:
            o = self.orthanc_proc
            self.orthanc = Target("orthanc", o.dicomweb, lambda: ("127.0.0.1", o.dicom_port, o.ae),
                                  lambda: {"orthanc": o.proc.pid})

    def _our_pids(self):
        pids = {"hub": self.hub.proc.pid}
        if self.gateway:
            pids["gateway"] = self.gateway.proc.pid
        return pids

    def _gateway_addr(self):
        if self.gateway is None:
            self.gateway = self.procs.start_gateway("main", self.hub.url, self.hub.gateway_key)
        return self.gateway.host, self.gateway.port, self.gateway.ae

    def all(self) -> list[Target]:
        return [t for t in (self.ours, self.orthanc) if t is not None]


# --------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------

@dataclass
class Series:
    study_uid: str
    series_uid: str
    files: list[Path]

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


@dataclass
class Corpus:
    root: Path
    ct: Series
    qido_files: list[Path]


def run_make_corpus(out: Path, ct_slices: int, extra: list[str]) -> None:
    if not MAKE_CORPUS.exists():
        raise SystemExit(f"corpus generator not found: {MAKE_CORPUS}")
    cmd = [sys.executable, str(MAKE_CORPUS), str(out), "--ct-slices", str(ct_slices), "--quiet", *extra]
    log("generating corpus: " + " ".join(cmd))
    subprocess.run(cmd, check=True, timeout=3600)


def load_corpus(out: Path, ct_slices: int, extra: list[str]) -> Corpus:
    """Generate (or reuse) a corpus with make_corpus.py and read its manifest."""
    manifest = out / "MANIFEST.tsv"

    def read():
        with open(manifest, newline="") as f:
            return list(csv.DictReader(f, delimiter="\t"))

    rows = read() if manifest.exists() else []
    n_ct = sum(1 for r in rows if r["path"].startswith("ct/"))
    if n_ct != ct_slices:
        if out.exists():
            shutil.rmtree(out)
        run_make_corpus(out, ct_slices, extra)
        rows = read()
    else:
        log(f"reusing corpus {out}")
    ct_rows = sorted((r for r in rows if r["path"].startswith("ct/")), key=lambda r: r["path"])
    qido = sorted(out / r["path"] for r in rows if r["path"].startswith("qido/"))
    if not ct_rows:
        raise SystemExit(f"corpus {out} has no ct/ series")
    ct = Series(ct_rows[0]["study_uid"], ct_rows[0]["series_uid"], [out / r["path"] for r in ct_rows])
    return Corpus(out, ct, qido)


def make_big_study(src: Series, out: Path, target_mb: int) -> Series:
    """Copies of the CT series with new UIDs, all in one new study, until target_mb
    (10^6 bytes) is reached. Deterministic UIDs; reused when already complete."""
    marker = out / "COMPLETE.json"
    key = {"target_mb": target_mb, "source_series": src.series_uid, "slices": len(src.files)}
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("key") == key:
            log(f"reusing big study {out} ({len(info['files'])} instances)")
            return Series(info["study_uid"], "", [out / f for f in info["files"]])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    seed = f"hub-bench-big-{target_mb}-{src.series_uid}"
    uid = lambda *parts: generate_uid(prefix=None, entropy_srcs=[seed, *map(str, parts)])  # noqa: E731
    study_uid = uid("study")
    target = target_mb * 1_000_000
    total, files, copy = 0, [], 0
    log(f"writing a ~{target_mb} MB study into {out}")
    while total < target:
        series_uid = uid("series", copy)
        for i, f in enumerate(src.files):
            ds = pydicom.dcmread(f)
            sop = uid("instance", copy, i)
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.SeriesNumber = copy + 1
            ds.SeriesDescription = f"BENCH COPY {copy + 1}"
            name = f"BIG_{copy:02d}_{i:04d}.dcm"
            ds.save_as(out / name, enforce_file_format=True)
            files.append(name)
            total += (out / name).stat().st_size
            if total >= target:
                break
        copy += 1
        if copy > 10_000:
            raise SystemExit("big study: source series is empty?")
    marker.write_text(json.dumps({"key": key, "study_uid": study_uid, "bytes": total, "files": files}))
    return Series(study_uid, "", [out / f for f in files])


def warm_page_cache(files: list[Path]) -> None:
    """Read the files once so neither server's run pays for cold client-side reads."""
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass


# --------------------------------------------------------------------------------------
# DICOM helpers: storescu, STOW-RS, QIDO counts
# --------------------------------------------------------------------------------------

def storescu(files: list[Path], host: str, port: int, ae: str) -> float:
    """Send all files over one association; returns the wall time in seconds."""
    argv = [STORESCU, "-aet", "BENCHSCU", "-aec", ae, host, str(port), *map(str, files)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=STORESCU_TIMEOUT,
                           env={**os.environ, "TCP_NODELAY": "1"})
    except subprocess.TimeoutExpired:
        raise ProductError(f"storescu to {host}:{port} did not finish within {STORESCU_TIMEOUT}s")
    wall = time.perf_counter() - t0
    output = (p.stdout + p.stderr).strip()
    errors = [line for line in output.splitlines() if line.startswith(("E:", "F:"))]
    if p.returncode != 0 or errors:
        raise ProductError(f"storescu to {ae}@{host}:{port} failed (exit {p.returncode}):\n"
                           + "\n".join((errors or output.splitlines())[:15]))
    return wall


def multipart_body(files: list[Path], boundary: str, chunk: int = 1 << 20):
    """multipart/related body streamed from the files (never all in memory)."""
    for f in files:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with open(f, "rb") as fh:
            while True:
                data = fh.read(chunk)
                if not data:
                    break
                yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def stow(session: requests.Session, t: Target, files: list[Path]) -> None:
    check_stop()
    dicomweb = t.dicomweb
    boundary = uuid.uuid4().hex
    r = session.post(
        dicomweb + "/studies",
        data=multipart_body(files, boundary),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                 "Accept": DICOM_JSON, **t.stow_headers},
        timeout=HTTP_TIMEOUT,
    )
    if r.status_code != 200:
        raise ProductError(f"STOW-RS of {len(files)} instances to {dicomweb}: HTTP {r.status_code}: {r.text[:500]}")
    failed = (r.json() or {}).get("00081198", {}).get("Value") if r.content else None
    if failed:
        raise ProductError(f"STOW-RS to {dicomweb}: {len(failed)} instances failed: {json.dumps(failed)[:500]}")


def stow_all(t: Target, files: list[Path], clients: int = 2, batch: int = 50) -> None:
    """Untimed loading: STOW the files in batches with a few clients."""
    batches = [files[i:i + batch] for i in range(0, len(files), batch)]

    def worker(part):
        with requests.Session() as s:
            for b in part:
                stow(s, t, b)

    with ThreadPoolExecutor(clients) as ex:
        for fut in [ex.submit(worker, batches[i::clients]) for i in range(clients)]:
            fut.result()


def study_instance_count(t: Target, study_uid: str) -> int:
    r = requests.get(t.dicomweb + "/studies", params={"StudyInstanceUID": study_uid, "includefield": "00201208"},
                     headers={"Accept": DICOM_JSON, **t.read_headers}, timeout=60)
    if r.status_code == 204 or not r.content:
        return 0
    r.raise_for_status()
    hits = r.json()
    if not hits:
        return 0
    return int(hits[0].get("00201208", {}).get("Value", [0])[0])


def wait_study_count(target: Target, study_uid: str, n: int, timeout: float, procs: Processes) -> float:
    """Poll QIDO until the study has n instances; returns when it did (monotonic time)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            last = study_instance_count(target, study_uid)
        except requests.RequestException:
            pass
        if last >= n:
            return time.monotonic()
        time.sleep(0.25)
    raise ProductError(f"{target.name}: study {study_uid} has {last} of {n} instances after {timeout:.0f}s")


def ensure_series(target: Target, series: Series, procs: Processes) -> None:
    """Make sure the target holds the series' study (STOW it, untimed, if not)."""
    if study_instance_count(target, series.study_uid) >= len(series.files):
        return
    log(f"{target.name}: loading {len(series.files)} instances by STOW-RS (untimed setup)")
    stow_all(target, series.files)
    wait_study_count(target, series.study_uid, len(series.files), 60, procs)


def qs(params: dict) -> str:
    """Query string with DICOM wildcards and list commas left literal: Orthanc 1.10 does not
    match a percent-encoded '*' (PatientName=ZHAO%2A finds nothing)."""
    return urllib.parse.urlencode(params, safe="*,")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------

@dataclass
class Row:
    load: str
    metric: str
    unit: str
    ours: float | None
    orthanc: float | None
    ratio: float | None  # "how many times better ours is", per the target's direction
    target: str
    passed: bool | None  # None: not decidable (no Orthanc)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def compare(self, load, metric, unit, ours, orthanc, better: str, factor: float, target: str):
        """better='higher': ratio = ours/orthanc; 'lower': ratio = orthanc/ours."""
        ratio = None
        if ours is not None and orthanc is not None and ours > 0 and orthanc > 0:
            ratio = ours / orthanc if better == "higher" else orthanc / ours
        passed = None if ratio is None else ratio >= factor
        self.rows.append(Row(load, metric, unit, ours, orthanc, ratio, target, passed))


# --------------------------------------------------------------------------------------
# Loads
# --------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, procs: Processes, corpus: Corpus, report: Report):
        self.args = args
        self.procs = procs
        self.corpus = corpus
        self.report = report
        self._targets: Targets | None = None

    @property
    def targets(self) -> Targets:
        if self._targets is None:
            self._targets = Targets(self.procs, self.args.orthanc)
        return self._targets

    # Rounds: the throughput loads are short (a few seconds) and noisy on a small VM, so
    # they run --rounds times, each round on a CT copy new to every server, alternating
    # which server goes first; the median round is reported.
    def ct_for_round(self, load: str, k: int) -> Series:
        if load == "cstore" and k == 0:
            return self.corpus.ct  # the canonical series (the metadata load reads it later)
        salt = load if k == 0 else f"{load}-{k}"
        return load_corpus(Path(self.args.workdir) / f"corpus-{salt}", self.args.ct_slices,
                           ["--salt", salt, "--only", "ct"]).ct

    def rounds(self, load: str, once) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for k in range(self.args.rounds):
            series = self.ct_for_round(load, k)
            order = self.targets.all() if k % 2 == 0 else self.targets.all()[::-1]
            for t in order:
                if study_instance_count(t, series.study_uid):
                    raise ProductError(f"{load}: {t.name} already holds study {series.study_uid}; it must be new")
                warm_page_cache(series.files)
                r = once(t, series)
                r["round"] = k + 1
                out.setdefault(t.name, []).append(r)
        return out

    @staticmethod
    def median_of(runs: list[dict], key: str) -> float | None:
        return statistics.median(r[key] for r in runs) if runs else None

    # a. C-STORE ---------------------------------------------------------------------
    def cstore_once(self, t: Target, series: Series) -> dict:
        n = len(series.files)
        host, port, ae = t.dicom()
        log(f"cstore: {n} instances ({series.nbytes / 1e6:.0f} MB) -> {t.name} {ae}@{host}:{port}, one association")
        t0 = time.monotonic()
        with CpuMeter(t.pids()) as cpu:
            wall = storescu(series.files, host, port, ae)
        done = wait_study_count(t, series.study_uid, n, FORWARD_TIMEOUT, self.procs)
        log(f"cstore: {t.name}: {n / wall:.1f} instances/s (storescu {wall:.2f}s; "
            f"all {n} queryable after {done - t0:.2f}s); {cpu.summary()}")
        return {"storescu_s": wall, "instances_per_s": n / wall, "mb_per_s": series.nbytes / 1e6 / wall,
                "queryable_after_s": done - t0, "cpu_s_during_storescu": cpu.cpu_s}

    def cstore(self):
        runs = self.rounds("cstore", self.cstore_once)
        ct = self.corpus.ct
        n = len(ct.files)
        # The same send into a gateway whose hub is elsewhere (here: a closed port, so the
        # forwarder only verifies its items and backs off): roughly what a township
        # modality sees when the hub does not share the gateway's 2 cores, as deployed.
        solo = self.procs.start_gateway("solo", f"http://127.0.0.1:{free_port()}",
                                        self.targets.hub.gateway_key)
        warm_page_cache(ct.files)
        log(f"cstore: {n} instances -> gateway alone (its hub is not on this machine)")
        with CpuMeter({"gateway": solo.proc.pid}) as cpu:
            wall = storescu(ct.files, solo.host, solo.port, solo.ae)
        self.procs.stop(solo.proc)
        alone = {"storescu_s": wall, "instances_per_s": n / wall, "cpu_s": cpu.cpu_s}
        log(f"cstore: gateway alone: {n / wall:.1f} instances/s (storescu {wall:.2f}s); {cpu.summary()}")
        self.report.details["cstore"] = {**runs, "ours_gateway_alone": alone}
        ours, orth = runs["ours"], runs.get("orthanc", [])
        self.report.compare("cstore", f"C-STORE {n} CT slices, 1 association", "inst/s",
                            self.median_of(ours, "instances_per_s"), self.median_of(orth, "instances_per_s"),
                            "higher", 2, "ours >= 2x")
        self.report.compare("cstore", "  (info) same, hub not on this machine", "inst/s",
                            alone["instances_per_s"], self.median_of(orth, "instances_per_s"), "higher", 0, "info")
        self.report.rows[-1].passed = None
        self.report.compare("cstore", "  (info) until all queryable at hub", "s",
                            self.median_of(ours, "queryable_after_s"), self.median_of(orth, "queryable_after_s"),
                            "lower", 0, "info")
        self.report.rows[-1].passed = None

    # b. STOW-RS ---------------------------------------------------------------------
    def stow_once(self, t: Target, series: Series) -> dict:
        n = len(series.files)
        parts = [series.files[i * n // STOW_CLIENTS:(i + 1) * n // STOW_CLIENTS] for i in range(STOW_CLIENTS)]
        barrier = threading.Barrier(STOW_CLIENTS + 1)

        def client(files):
            with requests.Session() as s:
                barrier.wait(timeout=60)
                for i in range(0, len(files), STOW_BATCH):
                    stow(s, t, files[i:i + STOW_BATCH])

        log(f"stow: {n} instances -> {t.name}, {STOW_CLIENTS} clients x {STOW_BATCH} per request")
        with ThreadPoolExecutor(STOW_CLIENTS) as ex:
            futs = [ex.submit(client, p) for p in parts]
            barrier.wait(timeout=60)
            with CpuMeter(t.pids()) as cpu:
                t0 = time.perf_counter()
                for f in futs:
                    f.result()
                wall = time.perf_counter() - t0
        count = study_instance_count(t, series.study_uid)
        if count != n:
            raise ProductError(f"stow: {t.name} reports {count} of {n} instances after STOW")
        log(f"stow: {t.name}: {n / wall:.1f} instances/s ({wall:.2f}s); {cpu.summary()}")
        return {"wall_s": wall, "instances_per_s": n / wall, "mb_per_s": series.nbytes / 1e6 / wall,
                "cpu_s": cpu.cpu_s}

    def stow(self):
        runs = self.rounds("stow", self.stow_once)
        self.report.details["stow"] = runs
        n = self.args.ct_slices
        self.report.compare("stow", f"STOW-RS {n} CT slices, {STOW_CLIENTS} clients x {STOW_BATCH}/req",
                            "inst/s", self.median_of(runs["ours"], "instances_per_s"),
                            self.median_of(runs.get("orthanc", []), "instances_per_s"), "higher", 2, "ours >= 2x")

    # c. QIDO-RS ---------------------------------------------------------------------
    def qido_queries(self) -> list[tuple[str, dict]]:
        """A deterministic, realistic mix of study searches over the qido studies."""
        patients, families, months = set(), set(), set()
        for f in self.corpus.qido_files:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            patients.add(str(ds.PatientID))
            families.add(str(ds.PatientName).split("^")[0].split("=")[0])
            months.add(str(ds.StudyDate)[:6])
        patients, families, months = sorted(patients), sorted(families), sorted(months)
        rng = random.Random(20240620)

        def month_range(m):
            return f"{m}01-{m}31" if rng.random() < 0.5 else f"{m}01-{m}10"

        kinds = [  # (weight, name, params factory)
            (30, "PatientID", lambda: {"PatientID": rng.choice(patients)}),
            (25, "PatientName*", lambda: {"PatientName": rng.choice(families) + "*"}),
            (20, "StudyDate range", lambda: {"StudyDate": month_range(rng.choice(months))}),
            (15, "ModalitiesInStudy+date", lambda: {"ModalitiesInStudy": "CT",
                                                    "StudyDate": month_range(rng.choice(months))}),
            (10, "limit=100", lambda: {"limit": "100"}),
        ]
        weights = [k[0] for k in kinds]
        total = QIDO_CLIENTS * QIDO_REQUESTS_PER_CLIENT
        out = []
        for _ in range(total):
            _, name, make = rng.choices(kinds, weights)[0]
            out.append((name, qs(make())))
        return out

    def qido(self):
        files = self.corpus.qido_files
        if not files:
            raise SystemExit("the corpus has no qido/ studies")
        queries = self.qido_queries()
        res, counts = {}, {}
        for t in self.targets.all():
            # Setup (untimed): load the qido studies if this server does not hold them yet.
            first = pydicom.dcmread(files[-1], stop_before_pixels=True)
            if study_instance_count(t, str(first.StudyInstanceUID)) == 0:
                log(f"qido: loading {len(files)} studies into {t.name} by STOW-RS (untimed setup)")
                stow_all(t, files)
            # Warm-up: one request of each kind, not measured; then record result sizes.
            counts[t.name] = {}
            read_headers = {"Accept": DICOM_JSON, **t.read_headers}
            with requests.Session() as s:
                for name, params in queries:
                    key = params
                    if key in counts[t.name]:
                        continue
                    r = s.get(f"{t.dicomweb}/studies?{params}", headers=read_headers,
                              timeout=HTTP_TIMEOUT)
                    if r.status_code not in (200, 204):
                        raise ProductError(f"qido: {t.name} {params}: HTTP {r.status_code}: {r.text[:300]}")
                    counts[t.name][key] = len(r.json()) if r.content else 0
            latencies: dict[str, list[float]] = {}
            lock = threading.Lock()
            barrier = threading.Barrier(QIDO_CLIENTS + 1)

            def client(mine, dicomweb=t.dicomweb, name_=t.name, headers=read_headers):
                local = []
                with requests.Session() as s:
                    barrier.wait(timeout=60)
                    for kind, params in mine:
                        check_stop()
                        t0 = time.perf_counter()
                        r = s.get(f"{dicomweb}/studies?{params}", headers=headers,
                                  timeout=HTTP_TIMEOUT)
                        _ = r.content
                        dt = time.perf_counter() - t0
                        if r.status_code not in (200, 204):
                            raise ProductError(f"qido: {name_} {params}: HTTP {r.status_code}")
                        local.append((kind, dt))
                with lock:
                    for kind, dt in local:
                        latencies.setdefault(kind, []).append(dt)

            log(f"qido: {len(queries)} searches -> {t.name}, {QIDO_CLIENTS} clients")
            with ThreadPoolExecutor(QIDO_CLIENTS) as ex:
                futs = [ex.submit(client, queries[i::QIDO_CLIENTS]) for i in range(QIDO_CLIENTS)]
                barrier.wait(timeout=60)
                with CpuMeter(t.pids()) as cpu:
                    t0 = time.perf_counter()
                    for f in futs:
                        f.result()
                    wall = time.perf_counter() - t0
            every = [x for v in latencies.values() for x in v]
            res[t.name] = {
                "requests": len(every), "wall_s": wall, "requests_per_s": len(every) / wall,
                "p50_ms": pct(every, 50) * 1e3, "p99_ms": pct(every, 99) * 1e3, "max_ms": max(every) * 1e3,
                "by_kind": {k: {"n": len(v), "p50_ms": pct(v, 50) * 1e3, "p99_ms": pct(v, 99) * 1e3}
                            for k, v in sorted(latencies.items())},
                "cpu_s": cpu.cpu_s,
            }
            log(f"qido: {t.name}: p50 {res[t.name]['p50_ms']:.1f} ms, p99 {res[t.name]['p99_ms']:.1f} ms, "
                f"{len(every) / wall:.0f} req/s; {cpu.summary()}")
        if "orthanc" in counts:
            diff = {k: (counts["ours"][k], counts["orthanc"].get(k)) for k in counts["ours"]
                    if counts["ours"][k] != counts["orthanc"].get(k)}
            if diff:
                self.report.notes.append(
                    f"qido: {len(diff)} of {len(counts['ours'])} distinct queries returned a different number "
                    f"of studies (ours, orthanc): " + "; ".join(f"{k} -> {v}" for k, v in list(diff.items())[:5]))
        res["result_counts"] = {k: counts["ours"][k] for k in sorted(counts["ours"])}
        self.report.details["qido"] = res
        o = res.get("orthanc", {})
        self.report.compare("qido", f"QIDO p99, {QIDO_CLIENTS} clients x {QIDO_REQUESTS_PER_CLIENT}", "ms",
                            res["ours"]["p99_ms"], o.get("p99_ms"), "lower", 5, "ours <= 1/5")
        self.report.compare("qido", "  (info) QIDO p50", "ms", res["ours"]["p50_ms"], o.get("p50_ms"),
                            "lower", 0, "info")
        self.report.rows[-1].passed = None

    # d. WADO-RS series metadata -------------------------------------------------------
    def metadata(self):
        ct = self.corpus.ct
        n = len(ct.files)
        res = {}
        for t in self.targets.all():
            ensure_series(t, ct, self.procs)
            url = f"{t.dicomweb}/studies/{ct.study_uid}/series/{ct.series_uid}/metadata"
            times = []
            headers = {"Accept": DICOM_JSON, **t.read_headers}
            with requests.Session() as s, CpuMeter(t.pids()) as cpu:
                for i in range(METADATA_REQUESTS + 1):
                    t0 = time.perf_counter()
                    r = s.get(url, headers=headers, timeout=HTTP_TIMEOUT)
                    body = r.content
                    dt = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise ProductError(f"metadata: {t.name}: HTTP {r.status_code}: {r.text[:300]}")
                    if i == 0:
                        got = len(json.loads(body))
                        if got != n:
                            raise ProductError(f"metadata: {t.name} returned {got} of {n} instances")
                        size = len(body)
                        continue  # warm-up
                    times.append(dt)
            res[t.name] = {"median_ms": statistics.median(times) * 1e3, "p99_ms": pct(times, 99) * 1e3,
                           "min_ms": min(times) * 1e3, "response_bytes": size, "requests": len(times)}
            res[t.name]["cpu_s"] = cpu.cpu_s
            log(f"metadata: {t.name}: median {res[t.name]['median_ms']:.1f} ms, p99 {res[t.name]['p99_ms']:.1f} ms, "
                f"{size / 1e3:.0f} kB; {cpu.summary()}")
        self.report.details["metadata"] = res
        o = res.get("orthanc", {})
        self.report.compare("metadata", f"series metadata ({n} inst) median", "ms",
                            res["ours"]["median_ms"], o.get("median_ms"), "lower", 10, "ours >= 10x faster")
        self.report.compare("metadata", "  (info) series metadata p99", "ms",
                            res["ours"]["p99_ms"], o.get("p99_ms"), "lower", 0, "info")
        self.report.rows[-1].passed = None

    # f. Rendered ------------------------------------------------------------------------
    def rendered(self):
        ct = self.corpus.ct
        sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in ct.files]
        n = len(sops)
        res = {}
        for t in self.targets.all():
            ensure_series(t, ct, self.procs)
            for pid in t.pids().values():
                wait_cpu_idle(pid)
            base = f"{t.dicomweb}/studies/{ct.study_uid}/series/{ct.series_uid}/instances/"
            headers = {"Accept": "image/jpeg", **t.read_headers}

            def get(s, sop, query=""):
                t0 = time.perf_counter()
                r = s.get(f"{base}{sop}/rendered{query}", headers=headers, timeout=HTTP_TIMEOUT)
                body = r.content
                dt = time.perf_counter() - t0
                if r.status_code != 200 or not r.headers.get("Content-Type", "").startswith("image/jpeg"):
                    raise ProductError(f"rendered: {t.name}: HTTP {r.status_code} "
                                       f"{r.headers.get('Content-Type')}: {r.text[:300]}")
                if jpeg_size(body) != (512, 512):
                    raise ProductError(f"rendered: {t.name} answered a JPEG of {jpeg_size(body)}, not 512x512")
                return dt, len(body), r.headers.get("Server-Timing", "")

            with requests.Session() as s:
                for _ in range(3):  # warm-up (code paths, connections), a quality nobody asks for later
                    get(s, sops[0], "?quality=89")
                log_path = getattr(self.targets.hub.proc, "log_path", None) if t.name == "ours" else None
                offset = log_path.stat().st_size if log_path else 0
                times, sizes, timing = [], [], []
                with CpuMeter(t.pids()) as cpu:
                    for sop in sops:
                        check_stop()
                        dt, size, st = get(s, sop)
                        times.append(dt)
                        sizes.append(size)
                        timing.append(st)
            server_ms = access_log_ms(log_path, offset, "/rendered ") if log_path else []
            # Server-Timing app;dur= (our handler's own time), when the server sends it.
            app_ms = [float(p.split("dur=")[1]) for st in timing for p in st.split(",")
                      if p.strip().startswith("app;dur=")]
            seq = {"requests": n, "client_median_ms": statistics.median(times) * 1e3,
                   "client_p99_ms": pct(times, 99) * 1e3, "mean_jpeg_bytes": statistics.mean(sizes),
                   "cpu_s": cpu.cpu_s}
            if server_ms:
                seq["server_median_ms"] = statistics.median(server_ms)
                seq["server_p99_ms"] = pct(server_ms, 99)
                seq["server_samples"] = len(server_ms)
            if app_ms:
                seq["handler_median_ms"] = statistics.median(app_ms)
            log(f"rendered: {t.name}: sequential, {n} slices: client median {seq['client_median_ms']:.2f} ms"
                + (f", server median {seq['server_median_ms']:.2f} ms (access log)" if server_ms else "")
                + (f", handler median {seq['handler_median_ms']:.2f} ms (Server-Timing)" if app_ms else "")
                + f", {seq['mean_jpeg_bytes'] / 1e3:.0f} kB/image; {cpu.summary()}")

            # Rate: every request a (slice, window) pair never asked for before, from
            # RENDER_CLIENTS concurrent connections: wrk (C, one thread) when installed,
            # else Python threads (which take 1-2 ms of CPU per request on the same cores).
            if WRK and not self.args.python_client:
                rate = self.rendered_rate_wrk(t, base, sops, headers)
            else:
                rate = self.rendered_rate_python(t, sops, get)
            check_rendered_sample(t, base, headers, rate.pop("check_paths"))
            log(f"rendered: {t.name}: {rate['client']}, {rate['requests']} requests: "
                f"{rate['images_per_s']:.1f} images/s, CPU per image: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in rate["cpu_ms_per_image"].items()))
            res[t.name] = {"sequential": seq, "rate": rate}
        self.report.details["rendered"] = res
        ours, orth = res["ours"], res.get("orthanc")
        server = ours["sequential"].get("server_median_ms")
        self.report.rows.append(Row("rendered", "JPEG of a 512x512 CT slice, server time median", "ms",
                                    server, None, None, f"< {RENDER_SERVER_MS} ms",
                                    None if server is None else server < RENDER_SERVER_MS))
        self.report.compare("rendered", "  (info) same, client time median (loopback)", "ms",
                            ours["sequential"]["client_median_ms"],
                            orth["sequential"]["client_median_ms"] if orth else None, "lower", 0, "info")
        self.report.rows[-1].passed = None
        self.report.compare("rendered", f"rendered JPEG rate, {ours['rate']['client']}", "img/s",
                            ours["rate"]["images_per_s"], orth["rate"]["images_per_s"] if orth else None,
                            "higher", 2, "ours >= 2x")
        self.report.compare("rendered", "  (info) server CPU per image, rate pass", "ms",
                            ours["rate"]["cpu_ms_per_image"].get("hub"),
                            orth["rate"]["cpu_ms_per_image"].get("orthanc") if orth else None,
                            "lower", 0, "info")
        self.report.rows[-1].passed = None

    def rendered_rate_wrk(self, t: Target, base: str, sops: list[str], headers: dict) -> dict:
        """wrk, one thread, RENDER_CLIENTS connections, for RENDER_WRK_SECONDS over a list of
        distinct (slice, window) URLs in the same order for every server."""
        paths = rate_paths(base, sops)
        run_dir = Path(self.procs.run_dir)
        script = run_dir / f"rendered-{t.name}.lua"
        script.write_text(wrk_script(paths, headers))
        url = urllib.parse.urlsplit(base)
        argv = [WRK, "-t1", f"-c{RENDER_CLIENTS}", f"-d{RENDER_WRK_SECONDS}s", "--timeout", "30s",
                "-s", str(script), f"{url.scheme}://{url.netloc}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with CpuMeter(t.pids()) as cpu:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=RENDER_WRK_SECONDS + 120)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next((x for x in p.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
        if p.returncode != 0 or line is None:
            raise ProductError(f"rendered: wrk against {t.name} failed (exit {p.returncode}):\n"
                               + (p.stdout + p.stderr)[-1500:])
        w = json.loads(line[len("WRK_JSON "):])
        n, wall = w["requests"], w["duration_us"] / 1e6
        if w["status_errors"] or w["socket_errors"]:
            raise ProductError(f"rendered: {t.name}: {w['status_errors']} non-2xx answers, "
                               f"{w['socket_errors']} socket errors under wrk:\n{p.stdout[-1500:]}")
        if n > len(paths):
            raise ProductError(f"rendered: {t.name}: {n} requests > {len(paths)} distinct URLs: "
                               "raise RENDER_RATE_WINDOW_COUNT (repeats would hit our render cache)")
        cpu_ms = {k: v * 1e3 / n for k, v in cpu.cpu_s.items() if k not in ("client", "storescu")}
        cpu_ms["wrk"] = ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) * 1e3 / n
        return {"client": f"wrk, {RENDER_CLIENTS} connections", "requests": n, "wall_s": wall,
                "images_per_s": n / wall, "latency_p50_ms": w["p50_us"] / 1e3,
                "latency_p99_ms": w["p99_us"] / 1e3, "distinct_urls": len(paths),
                "cpu_s": cpu.cpu_s, "cpu_ms_per_image": cpu_ms, "check_paths": paths[:3]}

    def rendered_rate_python(self, t: Target, sops: list[str], get) -> dict:
        """The fallback client: RENDER_CLIENTS Python threads, one requests.Session each,
        every slice once per window of RENDER_RATE_WINDOWS."""
        parts = [sops[i::RENDER_CLIENTS] for i in range(RENDER_CLIENTS)]
        total = len(sops) * len(RENDER_RATE_WINDOWS)
        barrier = threading.Barrier(RENDER_CLIENTS + 1)

        def client(mine):
            with requests.Session() as s:
                get(s, sops[0], "?quality=89")  # connection up before the clock starts
                barrier.wait(timeout=60)
                for window in RENDER_RATE_WINDOWS:
                    for sop in mine:
                        check_stop()
                        get(s, sop, f"?window={window}")

        with ThreadPoolExecutor(RENDER_CLIENTS) as ex:
            futs = [ex.submit(client, p) for p in parts]
            barrier.wait(timeout=120)
            with CpuMeter(t.pids()) as rcpu:
                t0 = time.perf_counter()
                for f in futs:
                    f.result()
                wall = time.perf_counter() - t0
        cpu_ms = {k: v * 1e3 / total for k, v in rcpu.cpu_s.items() if k != "storescu"}
        return {"client": f"{RENDER_CLIENTS} Python clients", "requests": total, "wall_s": wall,
                "images_per_s": total / wall, "cpu_s": rcpu.cpu_s, "cpu_ms_per_image": cpu_ms,
                "check_paths": [f"{sops[0]}/rendered?window={RENDER_RATE_WINDOWS[0]}"]}

    # e. Memory ------------------------------------------------------------------------
    def memory(self):
        big = make_big_study(self.corpus.ct, Path(self.args.workdir) / f"big-{self.args.memory_mb}mb",
                             self.args.memory_mb)
        n, nbytes = len(big.files), big.nbytes
        res = {"instances": n, "bytes": nbytes}
        # Fresh processes: VmHWM is the peak since the process started.
        hub = self.procs.start_hub("mem")
        gw = self.procs.start_gateway("mem", hub.url, hub.gateway_key)
        target = Target.hub("ours", hub)
        warm_page_cache(big.files)
        pids = {"hub": hub.proc.pid, "gateway": gw.proc.pid}
        with RssSampler(pids) as rss, CpuMeter(pids) as cpu:
            log(f"memory: {n} instances ({nbytes / 1e6:.0f} MB) -> gateway -> hub")
            t0 = time.monotonic()
            wall = storescu(big.files, gw.host, gw.port, gw.ae)
            done = wait_study_count(target, big.study_uid, n, FORWARD_TIMEOUT, self.procs)
        res["ours"] = {"storescu_s": wall, "at_hub_after_s": done - t0, **rss.result(), "cpu_s": cpu.cpu_s}
        log(f"memory: hub peak {rss.peak_mb('hub'):.0f} MB, gateway peak {rss.peak_mb('gateway'):.0f} MB "
            f"(storescu {wall:.1f}s, all at hub after {done - t0:.1f}s); {cpu.summary()}")
        self.procs.stop(gw.proc)
        self.procs.stop(hub.proc)
        orthanc_peak = None
        if self.args.orthanc:
            orthanc = self.procs.start_orthanc("mem")
            otarget = Target("orthanc", orthanc.dicomweb)
            opids = {"orthanc": orthanc.proc.pid}
            with RssSampler(opids) as orss, CpuMeter(opids) as ocpu:
                t0 = time.monotonic()
                wall = storescu(big.files, "127.0.0.1", orthanc.dicom_port, orthanc.ae)
                done = wait_study_count(otarget, big.study_uid, n, FORWARD_TIMEOUT, self.procs)
            res["orthanc"] = {"storescu_s": wall, "queryable_after_s": done - t0, **orss.result(),
                              "cpu_s": ocpu.cpu_s}
            orthanc_peak = orss.peak_mb("orthanc")
            log(f"memory: orthanc peak {orthanc_peak:.0f} MB (storescu {wall:.1f}s); {ocpu.summary()}")
            self.procs.stop(orthanc.proc)
        self.report.details["memory"] = res
        for name in ("hub", "gateway"):
            peak = res["ours"][f"{name}_vmhwm_mb"]
            self.report.rows.append(Row("memory", f"peak RSS of {name}, {nbytes / 1e9:.2f} GB study",
                                        "MB", peak, orthanc_peak, None, f"< {MEMORY_LIMIT_MB} MB",
                                        peak < MEMORY_LIMIT_MB))


def wait_cpu_idle(pid: int, quiet_s: float = 1.0, timeout: float = 120) -> None:
    """Wait until a server process has used (almost) no CPU for quiet_s: background work
    after ingest (our thumbnails, Orthanc's own jobs) must not run during a timed pass."""
    deadline = time.monotonic() + timeout
    last, since = CpuMeter._proc(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = CpuMeter._proc(pid)
        if now - last > 0.03:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, None if it is not a JPEG."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + length
    return None


def rate_paths(base: str, sops: list[str]) -> list[str]:
    """Request paths of the wrk rate pass: every slice with window k, then k+1...; every
    (slice, window) pair distinct, so neither server can answer from a rendered cache."""
    path = urllib.parse.urlsplit(base).path
    return [f"{path}{sop}/rendered?window={40 + 2 * k},400,linear"
            for k in range(RENDER_RATE_WINDOW_COUNT) for sop in sops]


def wrk_script(paths: list[str], headers: dict) -> str:
    """A wrk Lua script walking `paths` in order (one wrk thread, so one walk shared by
    all connections) and printing a WRK_JSON summary line."""
    hdrs = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    lines = ",\n".join(json.dumps(p) for p in paths)
    return f"""-- generated by bench/run.py (rendered load)
local paths = {{
{lines}
}}
local headers = {{ {hdrs} }}
local i = 0
request = function()
  i = i + 1
  if i > #paths then i = 1 end
  return wrk.format("GET", paths[i], headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def check_rendered_sample(t: Target, base: str, headers: dict, paths: list[str]) -> None:
    """After a rate pass: a few of its URLs answer a 512x512 JPEG (wrk only counts
    statuses)."""
    root = urllib.parse.urlsplit(base)
    with requests.Session() as s:
        for p in paths:
            # wrk's paths are absolute; the Python client's are relative to `base`.
            url = f"{root.scheme}://{root.netloc}{p}" if p.startswith("/") else base + p
            r = s.get(url, headers=headers, timeout=HTTP_TIMEOUT)
            if r.status_code != 200 or jpeg_size(r.content) != (512, 512):
                raise ProductError(f"rendered: {t.name}: {p}: HTTP {r.status_code}, "
                                   f"JPEG size {jpeg_size(r.content)}")


def access_log_ms(log_path: Path, offset: int, needle: str) -> list[float]:
    """%D (ms) of the hub's access-log lines (actix Logger: `"%r" %s %b %Dms`) written after
    `offset` for successful GETs whose path contains needle."""
    out = []
    with open(log_path, "rb") as f:
        f.seek(offset)
        for raw in f:
            line = raw.decode(errors="replace")
            if needle not in line or '" 200 ' not in line:
                continue
            last = line.rstrip().rsplit(" ", 1)[-1]
            if last.endswith("ms"):
                with contextlib.suppress(ValueError):
                    out.append(float(last[:-2]))
    return out


class CpuMeter:
    """CPU seconds (user+system) spent between enter and exit by the server processes,
    by this Python client (all its threads) and by its finished children (storescu):
    with 2 cores, this shows where the wall time goes."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.cpu_s: dict[str, float] = {}
        self.wall_s = 0.0

    @classmethod
    def _proc(cls, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / cls.TICK  # utime, stime
        except (OSError, IndexError, ValueError):
            return 0.0

    def _snapshot(self) -> dict[str, float]:
        me, kids = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
        snap = {name: self._proc(pid) for name, pid in self.pids.items()}
        snap["client"] = me.user + me.system
        snap["storescu"] = kids.ru_utime + kids.ru_stime
        return snap

    def __enter__(self):
        self._t0, self._start = time.perf_counter(), self._snapshot()
        return self

    def __exit__(self, *exc):
        end = self._snapshot()
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = {k: round(end[k] - self._start[k], 2) for k in end if end[k] - self._start[k] > 0.004}

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.cpu_s.items())
        return f"cpu-s: {parts} (wall {self.wall_s:.2f}s x {os.cpu_count()} cores)"


class RssSampler:
    """Samples VmRSS of some processes and reads their VmHWM (peak RSS) at the end."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2):
        self.pids = pids
        self.interval = interval
        self.max_rss_kb = {k: 0 for k in pids}
        self.hwm_kb = {k: 0 for k in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")

    @staticmethod
    def _status(pid: int) -> dict[str, int]:
        out = {}
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        k, v = line.split(":", 1)
                        out[k] = int(v.split()[0])
        except OSError:
            pass
        return out

    def _sample(self):
        for name, pid in self.pids.items():
            st = self._status(pid)
            self.max_rss_kb[name] = max(self.max_rss_kb[name], st.get("VmRSS", 0))
            self.hwm_kb[name] = max(self.hwm_kb[name], st.get("VmHWM", 0))

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()  # final VmHWM while the processes are still alive

    def peak_mb(self, name: str) -> float:
        return max(self.hwm_kb[name], self.max_rss_kb[name]) * 1024 / 1e6

    def result(self) -> dict:
        out = {}
        for name in self.pids:
            out[f"{name}_vmhwm_mb"] = self.peak_mb(name)
            out[f"{name}_max_sampled_rss_mb"] = self.max_rss_kb[name] * 1024 / 1e6
        return out


# --------------------------------------------------------------------------------------
# Report output
# --------------------------------------------------------------------------------------

def fmt(v, unit=""):
    if v is None:
        return "-"
    if unit == "inst/s" or abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def print_table(report: Report, orthanc: bool) -> None:
    header = ["load", "metric", "unit", "ours", "orthanc", "ratio", "target", "result"]
    lines = []
    for r in report.rows:
        result = {True: "PASS", False: "FAIL", None: "-" if r.target == "info" else "n/a"}[r.passed]
        lines.append([r.load, r.metric, r.unit, fmt(r.ours, r.unit), fmt(r.orthanc, r.unit),
                      "-" if r.ratio is None else f"{r.ratio:.2f}x", r.target, result])
    for load, err in report.errors.items():
        lines.append([load, "ERROR: " + err.splitlines()[0][:60], "", "", "", "", "", "ERROR"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    print("\nratio: how many times better ours is (throughput ours/Orthanc; latency Orthanc/ours).")
    if not orthanc:
        print("Orthanc was not run (not installed or --skip-orthanc): our figures only; ratios n/a.")
    for n in report.notes:
        print("note: " + n)


def cpu_busy_fraction(seconds: float = 2.0) -> float:
    """Share of all CPUs busy (from /proc/stat) while this script sleeps: other work."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    (t0, i0) = sample()
    time.sleep(seconds)
    (t1, i1) = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def settle_page_cache(warm: list[Path]) -> bool:
    """Start a load from the same memory state: write back and drop the page cache, then
    read `warm` (the CT series the first rounds send) back in. On this VM a page cache
    filled by earlier builds and runs made creating and writing files cost up to a third
    more CPU, for both servers, and varied within a load. Needs root; returns whether it
    was done."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    warm_page_cache(warm)
    return True


def fsync_probe(directory: Path, size: int = 512 * 1024, n: int = 20) -> float:
    """Median ms to write and fsync a CT-slice-sized file here: the disk's part in any
    durable-before-acknowledge figure (C-STORE especially), for comparing machines."""
    buf, times = os.urandom(size), []
    for i in range(n):
        path = directory / f".fsync-probe-{i}"
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            f.write(buf)
            f.flush()
            os.fsync(f.fileno())
        times.append(time.perf_counter() - t0)
        path.unlink()
    return round(statistics.median(times) * 1e3, 2)


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return next((line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()), "?")
    except (OSError, subprocess.SubprocessError):
        return "not installed"


def git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "hub-bench"),
                    help="corpus, big study, run data and results.json (default: %(default)s)")
    ap.add_argument("--ct-slices", type=int, default=300)
    ap.add_argument("--skip-orthanc", action="store_true", help="do not run Orthanc even if installed")
    ap.add_argument("--only", default=",".join(LOADS), help="comma list of loads (default: all)")
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release binaries")
    ap.add_argument("--memory-mb", type=int, default=1000, help="size of the memory-load study (10^6 bytes)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the cstore and stow loads, each on a new CT copy; median reported")
    ap.add_argument("--keep", action="store_true", help="keep the run's data directories and logs")
    ap.add_argument("--keep-caches", action="store_true",
                    help="do not drop the page cache before each load (done by default when root)")
    ap.add_argument("--python-client", action="store_true",
                    help="rendered rate pass with Python threads even when wrk is installed")
    args = ap.parse_args(argv)
    args.loads = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.loads) - set(LOADS)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if unknown:
        ap.error(f"unknown loads {sorted(unknown)}; choose from {','.join(LOADS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = str(workdir)

    have_orthanc = Path(ORTHANC_BIN).exists() and Path(ORTHANC_DICOMWEB).exists()
    args.orthanc = have_orthanc and not args.skip_orthanc
    if not have_orthanc and not args.skip_orthanc:
        log(f"Orthanc not found ({ORTHANC_BIN} + {ORTHANC_DICOMWEB}; Debian packages orthanc, "
            f"orthanc-dicomweb): reporting our figures alone")
    if not Path(STORESCU).exists() and {"cstore", "memory"} & set(args.loads):
        raise SystemExit(f"{STORESCU} (dcmtk) is required for the cstore and memory loads")

    if not args.no_build:
        log("building: cargo build --release -p hub -p gateway")
        if subprocess.run(["cargo", "build", "--release", "-p", "hub", "-p", "gateway"], cwd=REPO).returncode:
            log("build failed")
            return 1
    bin_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"

    corpus = load_corpus(workdir / "corpus", args.ct_slices, [])
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    busy = cpu_busy_fraction()
    if busy > 0.15:
        log(f"warning: {busy:.0%} of the CPUs were busy with other work just before the loads: "
            f"that skews the figures (compare runs made on an idle machine)")
    fsync_ms = fsync_probe(run_dir)
    log(f"disk: write+fsync of 512 KiB takes {fsync_ms} ms (median) in {run_dir}")
    procs = Processes(run_dir, bin_dir)
    report = Report()
    bench = Bench(args, procs, corpus, report)
    interrupted = False

    def on_signal(signum, frame):
        STOP.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.time()
    cache_settled = False
    try:
        for load in [x for x in LOADS if x in args.loads]:
            log(f"=== {load} ===")
            if not args.keep_caches:
                if settle_page_cache(corpus.ct.files):
                    log("page cache dropped; the CT series read back in (--keep-caches to skip)")
                    cache_settled = True
                else:
                    log("page cache not dropped (needs root): figures depend on the memory state")
            try:
                getattr(bench, load)()
            except ProductError as e:
                report.errors[load] = str(e)
                log(f"{load} FAILED: {e}")
            except (requests.RequestException, OSError) as e:
                report.errors[load] = f"{type(e).__name__}: {e}"
                log(f"{load} FAILED: {type(e).__name__}: {e}")
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping servers")
    finally:
        procs.stop_all()

    print_table(report, args.orthanc)
    results = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "git": git_rev(), "host": platform.node(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "ct_slices": len(corpus.ct.files),
            "qido_studies": len(corpus.qido_files), "loads": args.loads,
            "orthanc": args.orthanc, "interrupted": interrupted,
            "storescu": tool_version([STORESCU, "--version"]),
            "orthanc_version": tool_version([ORTHANC_BIN, "--version"]) if args.orthanc else None,
            "fsync_512k_median_ms": fsync_ms, "cpu_busy_before_loads": round(busy, 2),
            "page_cache_dropped_before_loads": cache_settled,
        },
        "rows": [r.__dict__ for r in report.rows],
        "details": report.details,
        "errors": report.errors,
        "notes": report.notes,
    }
    out = workdir / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out}")
    if report.errors or interrupted or args.keep:
        print(f"run directory (data, logs) kept: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
