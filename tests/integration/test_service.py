"""The installed command: serve on the embedded default, HTTP side, verify, and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CorpusFile
from tests.integration.conftest import send_files

CLI = str(Path(sys.executable).parent / "pacs-gateway")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.read().decode()


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}")
        try:
            if _get(port, "/readyz")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gateway did not become ready")


@pytest.fixture
def served(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int, dict[str, str]]:
    """`pacs-gateway serve` with no configuration file, in an empty directory."""
    dicom_port, http_port = _free_port(), _free_port()
    env = {**os.environ, "PACSGW_DICOM__PORT": str(dicom_port), "PACSGW_HTTP__PORT": str(http_port),
           "PACSGW_INGEST__WORKERS": "1"}
    process = subprocess.Popen([CLI, "serve"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_ready(http_port, process)
    except AssertionError:
        process.kill()
        raise
    yield process, dicom_port, http_port, env
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serve_on_the_embedded_default_stores_verifies_and_stops_cleanly(
    served: tuple[subprocess.Popen[bytes], int, int, dict[str, str]],
    corpus: list[CorpusFile], tmp_path: Path,
) -> None:
    process, dicom_port, http_port, env = served
    files = [f.path for f in corpus if f.entry["series"] == "mr/brain_tumor_progression_t1post_siemens_series"]
    assert set(send_files(dicom_port, files).values()) == {0x0000}

    assert (tmp_path / "pacs-gateway-data" / "index.sqlite").is_file()
    assert _get(http_port, "/healthz") == (200, "ok\n")
    status, metrics = _get(http_port, "/metrics")
    assert status == 200
    assert 'pacsgw_dimse_requests_total{service="c_store",status_category="success"} 24.0' in metrics
    assert 'pacsgw_instances_received_total{modality="MR",result="stored"} 24.0' in metrics
    assert "pacsgw_received_bytes_total" in metrics and "pacsgw_index_instances 24.0" in metrics

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    _, stderr = process.communicate()
    log = stderr.decode()
    assert '"event": "gateway stopped"' in log
    # Patient data stays out of the logs.
    assert "PatientName" not in log and "Anonymized" not in log

    verify = subprocess.run([CLI, "verify", "--all"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verified 24 stored instance revisions: 24 ok, 0 failed" in verify.stdout


def test_verify_reports_a_damaged_blob(
    served: tuple[subprocess.Popen[bytes], int, int, dict[str, str]],
    corpus: list[CorpusFile], tmp_path: Path,
) -> None:
    process, dicom_port, _, env = served
    files = [f.path for f in corpus if f.entry["series"] == "mr/brain_tumor_progression_t1post_siemens_series"][:3]
    assert set(send_files(dicom_port, files).values()) == {0x0000}
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0

    blob = sorted(p for p in (tmp_path / "pacs-gateway-data" / "blobs").rglob("*")
                  if p.is_file() and p.parent.name != "tmp")[0]
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0x01  # one flipped bit inside the compressed pixels or the shell
    blob.write_bytes(bytes(data))

    verify = subprocess.run([CLI, "verify", "--all"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert verify.returncode == 1
    assert "verified 3 stored instance revisions: 2 ok, 1 failed" in verify.stdout
    assert verify.stdout.count("FAILED ") == 1


def test_bad_configuration_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[dicom]\nport = 70000\n[blobz]\npath = "x"\n')
    result = subprocess.run([CLI, "serve", "--config", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "dicom.port" in result.stderr and "blobz: unknown key" in result.stderr


def test_config_command_masks_the_password(tmp_path: Path) -> None:
    env = {**os.environ, "PACSGW_DATABASE__URL": "postgresql+psycopg://pacs:hunter2@db:5432/pacs"}
    result = subprocess.run([CLI, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0
    assert "hunter2" not in result.stdout and 'url = "postgresql+psycopg://pacs:***@db:5432/pacs"' in result.stdout
