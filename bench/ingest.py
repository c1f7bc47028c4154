"""Ingest benchmark: DCMTK storescu sends a study of real CT/MR slices to the gateway, over one and
over four associations, and, in the same run, to DCMTK's storescp writing plain files (the receive
limit of this machine). Prints instances/s, MB/s, stored/received bytes and the ratios.

    .venv/bin/python bench/ingest.py [--copies 5] [--corpus ../shared/corpus]

The study is made of copies of the corpus CT and MR series with new Study/Series/SOP Instance UIDs
(5 copies = 520 slices). Each scenario starts a fresh gateway (embedded SQLite + filesystem blobs,
one codec worker per core) or a fresh storescp.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
SERIES = (
    "ct/pancreas_ct_philips_series",
    "ct/cptac_lscc_chest_siemens_series",
    "mr/brain_tumor_progression_t1post_siemens_series",
)


@dataclass
class Figures:
    name: str
    associations: int
    instances: int
    seconds: float
    received_bytes: int
    stored_bytes: int | None
    peak_rss_mb: float | None

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.received_bytes / self.seconds / 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_study(corpus: Path, copies: int, out: Path) -> list[Path]:
    manifest = json.loads((corpus / "manifest.json").read_text())
    sources = [corpus / e["path"] for e in manifest if e.get("series") in SERIES]
    files: list[Path] = []
    for copy in range(copies):
        study_uid = generate_uid()
        series_uids: dict[str, str] = {}
        for src in sources:
            ds = pydicom.dcmread(src)
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uids.setdefault(str(src.parent), generate_uid())
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = out / f"c{copy}_{src.parent.name}_{src.name}"
            ds.save_as(path)
            files.append(path)
    return files


def split(files: list[Path], parts: int, root: Path) -> list[Path]:
    dirs = []
    for i in range(parts):
        d = root / f"part{i}"
        d.mkdir()
        for f in files[i::parts]:
            os.link(f, d / f.name)
        dirs.append(d)
    return dirs


def wait_for_echo(port: int, aet: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["echoscu", "-aec", aet, "127.0.0.1", str(port)], capture_output=True,
                          env=DCMTK_ENV).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no C-ECHO answer on port {port}")


# Debian's DCMTK leaves Nagle's algorithm on unless told otherwise, and every request/response
# pair then waits for a delayed ACK (~40 ms): 20 instances/s between storescu and storescp.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def send(dirs: list[Path], port: int, aet: str, *options: str) -> float:
    started = time.perf_counter()
    procs = [
        subprocess.Popen(["storescu", "-aec", aet, "+sd", "+r", "-nh", *options, "127.0.0.1", str(port), str(d)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV)
        for d in dirs
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - started
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-2000:]}")
    return elapsed


def peak_rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            total += int(match.group(1)) / 1024
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    return pids + [c for p in pids for c in children(p)]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def run_gateway(files: list[Path], dirs: list[Path], work: Path) -> Figures:
    dicom_port, http_port = free_port(), free_port()
    data = work / "gateway-data"
    env = {**os.environ, "PACSGW_DATA_DIR": str(data), "PACSGW_DICOM__PORT": str(dicom_port),
           "PACSGW_HTTP__PORT": str(http_port), "PACSGW_LOGGING__LEVEL": "WARNING"}
    gateway = subprocess.Popen([str(Path(sys.executable).parent / "pacs-gateway"), "serve"], env=env)
    try:
        wait_for_echo(dicom_port, "PACSGW")
        elapsed = send(dirs, dicom_port, "PACSGW")
        received = metric(http_port, "pacsgw_received_bytes_total")
        stored = metric(http_port, "pacsgw_stored_bytes_total")
        instances = metric(http_port, "pacsgw_instances_received_total")
        rss = peak_rss_mb([gateway.pid, *children(gateway.pid)])
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
    if int(instances) != len(files):
        raise RuntimeError(f"gateway stored {instances} of {len(files)} instances")
    return Figures("pacs-gateway", len(dirs), len(files), elapsed, int(received), int(stored), rss)


def run_storescp(files: list[Path], dirs: list[Path], work: Path) -> Figures:
    port = free_port()
    out = work / "storescp-out"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "--fork", "-aet", "STORESCP", "-od", str(out), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_for_echo(port, "STORESCP")
        elapsed = send(dirs, port, "STORESCP")
    finally:
        scp.terminate()
        scp.wait(timeout=30)
    written = list(out.iterdir())
    if len(written) != len(files):
        raise RuntimeError(f"storescp wrote {len(written)} of {len(files)} files")
    received = sum(f.stat().st_size for f in files)
    return Figures("dcmtk storescp (plain files)", len(dirs), len(files), elapsed, received,
                   sum(f.stat().st_size for f in written), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--associations", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "echoscu"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: install DCMTK (Debian package dcmtk)")
    with tempfile.TemporaryDirectory(prefix="pacsgw-bench-") as tmp:
        root = Path(tmp)
        (root / "study").mkdir()
        files = make_study(args.corpus, args.copies, root / "study")
        size = sum(f.stat().st_size for f in files)
        print(f"study: {len(files)} CT/MR slices, {size / 1e6:.1f} MB, on {os.cpu_count()} cores")
        results: list[tuple[Figures, Figures]] = []
        for n in args.associations:
            parts = root / f"split{n}"
            parts.mkdir()
            dirs = split(files, n, parts)
            work_gw, work_scp = root / f"gw{n}", root / f"scp{n}"
            work_gw.mkdir()
            work_scp.mkdir()
            results.append((run_gateway(files, dirs, work_gw), run_storescp(files, dirs, work_scp)))
        print()
        print(f"{'receiver':30} {'assoc':>5} {'inst/s':>8} {'MB/s':>7} {'stored/received':>16} {'peak RSS MB':>12}")
        for gw, scp in results:
            for f in (gw, scp):
                ratio = f"{f.stored_bytes / f.received_bytes:.3f}" if f.stored_bytes else "-"
                rss = f"{f.peak_rss_mb:.0f}" if f.peak_rss_mb else "-"
                print(f"{f.name:30} {f.associations:>5} {f.rate:>8.1f} {f.mb_per_s:>7.1f} {ratio:>16} {rss:>12}")
            print(f"{'  gateway / storescp speed':30} {gw.associations:>5} {gw.rate / scp.rate:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
