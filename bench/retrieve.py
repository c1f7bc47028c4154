"""Query/retrieve benchmark on PostgreSQL: C-GET of a study of real CT/MR slices, C-FIND latency
at STUDY level with 10,000 and 100,000 instances in the index, and, in the same run, DCMTK's
storescu sending the same files to storescp (the send limit of this machine) for scale.

    .venv/bin/python bench/retrieve.py [--copies 5] [--corpus ../shared/corpus]
                                       [--database-url postgresql+psycopg://postgres@127.0.0.1:5432]

The study is made of copies of the corpus CT and MR series with new UIDs (5 copies = 520 slices in
15 series), in implicit VR little endian as most modalities send. It is stored once through storescu; then
DCMTK's getscu (receiving without writing, so the figure is the gateway's) retrieves it:

- original syntax: getscu -xi proposes explicit VR LE, big endian and implicit VR LE in each
  context and the gateway takes implicit VR LE: each instance is rebuilt byte for byte (its stored
  pixels decoded from the archive codec).
- decoded to explicit VR LE: getscu +xi proposes explicit VR LE only: each instance is rebuilt and
  written in the other syntax.
- stored frames: a C-MOVE to storescp (receiving without writing) through a destination allowed
  JPEG-LS and explicit VR LE only: instances whose stored codec is JPEG-LS go as their stored
  frames, without decoding; the others are decoded to explicit VR LE.

Time to the first instance is taken with a pynetdicom C-GET SCU. For C-FIND, the index is grown
by cloning the study's rows under new patients (1 study of 520 instances each), and a pynetdicom
SCU sends STUDY-level queries inside one association: by Patient ID, by Study Instance UID, and by
a Patient Name wildcard with a Study Date range. The gateway's own time per request comes from its
pacsgw_dimse_request_duration_seconds histogram. DCMTK's findscu repeats the Patient ID query inside
one association too, a client without pynetdicom's polling delays on its side.

A scratch database pacsgw_bench is created on the server and dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import sqlalchemy as sa
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import build_context

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import DCMTK_ENV, ROOT, free_port, make_study, metric, send, wait_for_echo  # noqa: E402

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
BENCH_DB = "pacsgw_bench"


@dataclass
class Transfer:
    name: str
    instances: int
    seconds: float
    megabytes: float
    modes: dict[str, float]

    @property
    def rate(self) -> float:
        return self.instances / self.seconds


def one_study_in_implicit_vr(files: list[Path]) -> None:
    study_uid = generate_uid()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)


def recreate_database(server_url: str) -> str:
    admin = sa.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        connection.execute(sa.text(f"CREATE DATABASE {BENCH_DB}"))
    admin.dispose()
    return f"{server_url}/{BENCH_DB}"


def drop_database(server_url: str) -> None:
    admin = sa.create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
    admin.dispose()


def suboperations(http_port: int) -> dict[str, float]:
    return {mode: metric_labelled(http_port, "pacsgw_retrieve_suboperations_total", f'mode="{mode}"')
            for mode in ("original", "passthrough", "decoded")}


def metric_labelled(port: int, name: str, label: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and label in line)


def retrieve(name: str, command: list[str], port: int, study_uid: str, http_port: int, files: list[Path]) -> Transfer:
    before = suboperations(http_port)
    ignore = ["--ignore", "-pdu", "131072"] if command[0] == "getscu" else []
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "-S", "-aec", "PACSGW", *ignore, "127.0.0.1", str(port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"],
        capture_output=True, env=DCMTK_ENV,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    after = suboperations(http_port)
    modes = {mode: after[mode] - before[mode] for mode in after}
    sent = int(sum(modes.values()))
    if sent != len(files):
        raise RuntimeError(f"{name}: the gateway sent {sent} of {len(files)} instances")
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    return Transfer(name, sent, seconds, megabytes, modes)


def first_instance(port: int, study_uid: str, sop_classes: set[str]) -> tuple[float, float, int]:
    """Seconds to the first C-STORE sub-operation and to the last, with a pynetdicom SCU."""
    arrivals: list[float] = []

    def on_store(event: Event) -> int:
        arrivals.append(time.perf_counter())
        return 0x0000

    ae = AE(ae_title="BENCHGET")
    contexts = [build_context(STUDY_ROOT_GET)] + [build_context(c, [uid.ImplicitVRLittleEndian]) for c in sop_classes]
    roles = [build_role(c, scp_role=True) for c in sop_classes]
    assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title="PACSGW", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        raise RuntimeError("C-GET association rejected")
    no_delay(assoc)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        started = time.perf_counter()
        for _status, _ in assoc.send_c_get(identifier, STUDY_ROOT_GET):
            pass
    finally:
        assoc.release()
    if not arrivals:
        raise RuntimeError("no instance arrived")
    return arrivals[0] - started, arrivals[-1] - started, len(arrivals)


def no_delay(assoc: Association) -> None:
    """pynetdicom leaves Nagle on too: a request's second PDU would wait for a delayed ACK."""
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def storescu_baseline(study_dir: Path, work: Path) -> float:
    port = free_port()
    scp = subprocess.Popen(["storescp", "--ignore", "-pdu", "131072", "-aet", "STORESCP", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_for_echo(port, "STORESCP")
        return send([study_dir], port, "STORESCP", "-xi")
    finally:
        scp.terminate()
        scp.wait(timeout=30)


def grow_index(database_url: str, target: int) -> int:
    """Clone the first stored study under new patients until the index holds `target` instances."""
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    meta.reflect(engine, only=["patients", "studies", "series", "instances"])
    with engine.begin() as connection:
        current = connection.execute(sa.text("SELECT count(*) FROM instances")).scalar_one()
        study = connection.execute(sa.text("SELECT id, patient_pk FROM studies ORDER BY id LIMIT 1")).one()
        per_study = connection.execute(sa.text(
            "SELECT count(*) FROM instances i JOIN series s ON s.id = i.series_pk WHERE s.study_pk = :s"),
            {"s": study.id}).scalar_one()
        first = connection.execute(sa.text("SELECT count(*) FROM patients WHERE patient_id LIKE 'BENCH%'")
                                   ).scalar_one() + 1
        clones = max(0, -(-(target - current) // per_study))
        if clones == 0:
            return int(current)
        last = first + clones - 1
        series_g = "generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g"
        params = {"first": first, "last": last, "study": study.id, "patient": study.patient_pk}

        def clone(table: str, overrides: dict[str, str], source: str, where: str) -> None:
            columns = [c.name for c in meta.tables[table].columns if c.name != "id"]
            values = [overrides.get(c, f"src.{c}") for c in columns]
            connection.execute(sa.text(
                f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} "
                f"FROM {source} AS src, {series_g} WHERE {where}"), params)

        clone("patients", {
            "patient_id": "'BENCH' || g",
            "patient_name": "'BENCH^PATIENT' || g",
            "patient_name_folded": "'bench^patient' || g",
        }, "patients", "src.id = :patient")
        clone("studies", {
            "study_instance_uid": "'2.25.7.' || g",
            "patient_pk": "(SELECT id FROM patients WHERE patient_id = 'BENCH' || g)",
            "study_date": "to_char(date '2015-01-01' + (g % 3650), 'YYYYMMDD')",
            "accession_number": "'ACC' || g",
        }, "studies", "src.id = :study")
        clone("series", {
            "series_instance_uid": "'2.25.7.' || g || '.' || src.id",
            "study_pk": "(SELECT id FROM studies WHERE study_instance_uid = '2.25.7.' || g)",
        }, "series", "src.study_pk = :study")
        clone("instances", {
            "sop_instance_uid": "'2.25.7.' || g || '.' || src.series_pk || '.' || src.id",
            "series_pk": "(SELECT id FROM series WHERE series_instance_uid = '2.25.7.' || g || '.' || src.series_pk)",
        }, "instances", "src.series_pk IN (SELECT id FROM series WHERE study_pk = :study)")
        total = connection.execute(sa.text("SELECT count(*) FROM instances")).scalar_one()
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    engine.dispose()
    return int(total)


def find_latency(port: int, http_port: int, patients: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    """Per kind of STUDY-level query: median and p95 round trip (ms), gateway's mean (ms)."""
    def by_patient(i: int, ds: Dataset) -> None:
        ds.PatientID = f"BENCH{1 + i % patients}"

    def by_study(i: int, ds: Dataset) -> None:
        ds.StudyInstanceUID = f"2.25.7.{1 + i % patients}"

    def by_name_and_dates(i: int, ds: Dataset) -> None:
        ds.PatientName = f"BENCH^PATIENT{1 + i % patients}*"
        ds.StudyDate = "20150101-20251231"

    kinds: dict[str, Callable[[int, Dataset], None]] = {
        "PatientID": by_patient, "StudyInstanceUID": by_study, "PatientName* + StudyDate range": by_name_and_dates}
    ae = AE(ae_title="BENCHFIND")
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW")
    if not assoc.is_established:
        raise RuntimeError("C-FIND association rejected")
    no_delay(assoc)
    out: dict[str, tuple[float, float, float]] = {}
    try:
        for name, fill in kinds.items():
            times: list[float] = []
            count_before = metric_labelled(http_port, "pacsgw_dimse_request_duration_seconds_count", 'service="c_find"')
            sum_before = metric_labelled(http_port, "pacsgw_dimse_request_duration_seconds_sum", 'service="c_find"')
            for i in range(repeats):
                ds = Dataset()
                ds.QueryRetrieveLevel = "STUDY"
                for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime",
                                "AccessionNumber", "StudyDescription", "ModalitiesInStudy"):
                    setattr(ds, keyword, "")
                ds.NumberOfStudyRelatedInstances = None
                ds.NumberOfStudyRelatedSeries = None
                fill(i, ds)
                started = time.perf_counter()
                matches = sum(1 for status, _ in assoc.send_c_find(ds, STUDY_ROOT_FIND) if status.Status == 0xFF00)
                times.append(time.perf_counter() - started)
                if matches < 1:
                    raise RuntimeError(f"{name} query matched nothing")
            count = metric_labelled(http_port, "pacsgw_dimse_request_duration_seconds_count", 'service="c_find"') - count_before
            total = metric_labelled(http_port, "pacsgw_dimse_request_duration_seconds_sum", 'service="c_find"') - sum_before
            times.sort()
            out[name] = (statistics.median(times) * 1e3, times[int(0.95 * (len(times) - 1))] * 1e3,
                         total / count * 1e3 if count else float("nan"))
    finally:
        assoc.release()
    return out


def findscu_latency(port: int, patient_id: str, repeats: int) -> float:
    """DCMTK findscu's round trip per STUDY-level query by Patient ID inside one association (ms):
    `--repeat` sends the query again and again over the association, so the difference between
    many and one query leaves out the process start and the association set-up."""
    def timed(times: int) -> float:
        keys = [f"PatientID={patient_id}", "StudyInstanceUID", "PatientName", "StudyDate", "StudyTime",
                "AccessionNumber", "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
                "NumberOfStudyRelatedSeries"]
        command = ["findscu", "-S", "-aec", "PACSGW", "--repeat", str(times), "127.0.0.1", str(port),
                   "-k", "QueryRetrieveLevel=STUDY", *(arg for key in keys for arg in ("-k", key))]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, env=DCMTK_ENV)
        if done.returncode != 0:
            raise RuntimeError(f"findscu failed: {done.stderr.decode(errors='replace')[-2000:]}")
        return time.perf_counter() - started

    one = min(timed(1) for _ in range(3))
    return (timed(repeats + 1) - one) / repeats * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (without a database name)")
    parser.add_argument("--index-sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=100, help="C-FIND queries of each kind")
    parser.add_argument("--log-level", default="WARNING", help="the gateway's log level")
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "getscu", "echoscu", "findscu"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: install DCMTK (Debian package dcmtk)")
    database_url = recreate_database(args.database_url)
    try:
        with tempfile.TemporaryDirectory(prefix="pacsgw-bench-") as tmp:
            root = Path(tmp)
            study_dir = root / "study"
            study_dir.mkdir()
            files = make_study(args.corpus, args.copies, study_dir)
            one_study_in_implicit_vr(files)
            return run(args, root, study_dir, files, database_url)
    finally:
        drop_database(args.database_url)


def run(args: argparse.Namespace, root: Path, study_dir: Path, files: list[Path], database_url: str) -> int:
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    study_uid = str(headers[0].StudyInstanceUID)
    sop_classes = {str(h.SOPClassUID) for h in headers}
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"study: {len(files)} CT/MR slices in implicit VR LE, {size_mb:.1f} MB, "
          f"one study; {os.cpu_count()} cores")

    baseline = storescu_baseline(study_dir, root)
    dicom_port, http_port, scp_port = free_port(), free_port(), free_port()
    destination = {"ae_title": "BENCHSCP", "host": "127.0.0.1", "port": scp_port,
                   "transfer_syntaxes": [uid.JPEGLSLossless, uid.ExplicitVRLittleEndian]}
    env = {**os.environ, "PACSGW_DATA_DIR": str(root / "gateway-data"), "PACSGW_DICOM__PORT": str(dicom_port),
           "PACSGW_HTTP__PORT": str(http_port), "PACSGW_LOGGING__LEVEL": args.log_level,
           "PACSGW_DATABASE__URL": database_url, "PACSGW_DICOM__DESTINATIONS": json.dumps([destination])}
    gateway = subprocess.Popen([str(Path(sys.executable).parent / "pacs-gateway"), "serve"], env=env)
    received = root / "moved"
    received.mkdir()
    scp = subprocess.Popen(["storescp", "-od", str(received), "-pdu", "131072", "+xt", "-aet", "BENCHSCP", str(scp_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_for_echo(dicom_port, "PACSGW")
        send([study_dir], dicom_port, "PACSGW", "-xi")
        stored = metric(http_port, "pacsgw_instances_received_total")
        if int(stored) != len(files):
            raise RuntimeError(f"gateway stored {stored} of {len(files)} instances")

        transfers: list[Transfer] = []
        scenarios = (("C-GET, original syntax (implicit VR LE)", ["getscu", "-xi"]),
                     ("C-GET, decoded to explicit VR LE", ["getscu", "+xi"]),
                     ("C-MOVE, JPEG-LS frames or explicit VR LE", ["movescu", "-aem", "BENCHSCP"]))
        for name, command in scenarios:
            runs = [retrieve(name, command, dicom_port, study_uid, http_port, files) for _ in range(2)]
            transfers.append(min(runs, key=lambda t: t.seconds))
        first, last, count = first_instance(dicom_port, study_uid, sop_classes)

        find_figures: list[tuple[int, dict[str, tuple[float, float, float]], float]] = []
        for size in args.index_sizes:
            total = grow_index(database_url, size)
            if total <= len(files):
                print(f"index size {size}: not above the study's own {len(files)} instances, no C-FIND figures")
                continue
            patients = max(1, (total - len(files)) // len(files))
            find_figures.append((total, find_latency(dicom_port, http_port, patients, args.repeats),
                                 findscu_latency(dicom_port, f"BENCH{1 + patients // 2}", args.repeats)))
    finally:
        scp.terminate()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)
        scp.wait(timeout=30)

    print()
    print(f"{'retrieve (DCMTK getscu/movescu)':40} {'inst/s':>8} {'MB/s':>7} {'vs storescu':>12}  sent as")
    scu_rate = len(files) / baseline
    for t in transfers:
        modes = ", ".join(f"{m} {int(n)}" for m, n in t.modes.items() if n)
        print(f"{t.name:40} {t.rate:>8.1f} {t.megabytes / t.seconds:>7.1f} {t.rate / scu_rate:>12.2f}  {modes}")
    print(f"{'storescu -> storescp --ignore (send limit)':40} {scu_rate:>8.1f} {size_mb / baseline:>7.1f} {1:>12.2f}")
    print()
    print(f"pynetdicom C-GET SCU, study of {count} instances in implicit VR LE: first instance after "
          f"{first * 1e3:.0f} ms, last after {last:.2f} s")
    print()
    print(f"{'C-FIND at STUDY level (PostgreSQL)':40} {'instances':>9} {'median ms':>10} {'p95 ms':>8} {'gateway ms':>11}")
    for total, figures, _ in find_figures:
        for name, (median, p95, server) in figures.items():
            print(f"{name:40} {total:>9} {median:>10.2f} {p95:>8.2f} {server:>11.2f}")
    print()
    print("the same by PatientID, DCMTK findscu --repeat (mean round trip per query, one association):")
    for total, _, findscu_ms in find_figures:
        print(f"{'findscu, PatientID':40} {total:>9} {findscu_ms:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
