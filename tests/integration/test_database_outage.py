"""The database really stops mid-run: C-STORE answers 0xA700, /readyz says so, and after the
server is back the next association stores again, with nothing acknowledged that was not kept."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.services.rebuild import verify
from tests.conftest import CorpusFile
from tests.integration.conftest import GatewayFactory, send_files


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster of its own, from the local binaries, that a test may stop and start."""

    bindir: Path
    datadir: Path
    port: int
    user: str

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", *args]
        _run_as(self.user, command)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.datadir / "server.log"), "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")


def _run_as(user: str, command: list[str]) -> None:
    if os.geteuid() == 0 and user != "root":
        command = ["runuser", "-u", user, "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        pytest.fail("PostgreSQL server binaries not installed (Debian package postgresql)")
    bindir = Path(candidates[-1]).parent
    # initdb refuses to run as root: the cluster belongs to the postgres system user then.
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    # Not under pytest's temporary directory: that one is private to root, and the server runs
    # as the postgres user.
    parent = Path(tempfile.mkdtemp(prefix="pacsgw-pg-"))
    datadir = parent / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(parent, user)
        shutil.chown(datadir, user)
    _run_as(user, [str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", user])
    server = ThrowawayPostgres(bindir, datadir, _free_port(), user)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(parent, ignore_errors=True)


def _readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_database_stopped_and_restarted(
    make_gateway: GatewayFactory, throwaway_postgres: ThrowawayPostgres, corpus: list[CorpusFile]
) -> None:
    series = [f.path for f in corpus if f.entry["series"] == "ct/pancreas_ct_philips_series"][:3]
    gateway = make_gateway(throwaway_postgres.url)
    assert gateway.http is not None
    http_port = gateway.http.port

    assert send_files(gateway.dicom_port, [series[0]]) == {series[0]: 0x0000}
    assert _readyz(http_port)[0] == 200

    throwaway_postgres.stop()
    assert send_files(gateway.dicom_port, [series[1]]) == {series[1]: 0xA700}
    status, body = _readyz(http_port)
    assert status == 503 and "database" in body["failures"]  # type: ignore[operator]
    assert gateway.registry.get_sample_value(
        "pacsgw_dimse_failures_total", {"service": "c_store", "reason": "out_of_resources"}) == 1

    throwaway_postgres.start()
    assert send_files(gateway.dicom_port, [series[1], series[2]]) == {series[1]: 0, series[2]: 0}
    assert _readyz(http_port)[0] == 200

    results = list(verify(gateway.index, gateway.blobs))
    assert len(results) == 3 and all(failure is None for _, failure in results)
    # The blob written while the database was down was removed, not left behind.
    blob_files = [p for p in Path(gateway.settings.blob_path).rglob("*") if p.is_file()]
    assert len(blob_files) == 3
