"""The logs of a real `pacs-gateway serve` that stored and served corpus files: one JSON object per
line, association and instance lines with their fields, and no patient name or ID at INFO or above."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from gateway import logs
from tests.conftest import CorpusFile
from tests.integration.conftest import send_files
from tests.ops.helpers import find_studies, get_study, sendable, study_uid

CLI = str(Path(sys.executable).parent / "pacs-gateway")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _one_per_patient(corpus: list[CorpusFile]) -> list[CorpusFile]:
    """One sendable file for each distinct patient name and ID in the corpus."""
    seen: set[tuple[str, str]] = set()
    picked = []
    for f in sendable(corpus):
        ds = dcmread(f.path, stop_before_pixels=True)
        key = (str(ds.get("PatientName", "")), str(ds.get("PatientID", "")))
        if key not in seen and any(key):
            seen.add(key)
            picked.append(f)
    return picked


def _patient_strings(files: list[CorpusFile]) -> tuple[set[str], set[str]]:
    """(strings that must not occur inside any logged value, values no field may equal).

    Short names and IDs ("95", "PLA") occur by chance inside numbers and words, so only the long
    ones are searched for as substrings; every one must never be a whole field value.
    """
    inside: set[str] = set()
    whole: set[str] = set()
    for f in files:
        ds = dcmread(f.path, stop_before_pixels=True)
        for raw in (str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))):
            for text in {raw, *raw.replace("=", "^").split("^")}:
                text = text.strip()
                if not text:
                    continue
                whole.add(text)
                if len(text) >= 6 and not text.isdigit():
                    inside.add(text)
    return inside, whole


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def _wait_for_line(log: Path, event: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if f'"event": "{event}"' in line:
                record: dict[str, Any] = json.loads(line)
                return record
        time.sleep(0.1)
    pytest.fail(f"no {event!r} log line within {timeout} s:\n{log.read_text()[-3000:]}")


def test_served_corpus_leaves_no_patient_name_or_id_in_logs_at_info_or_above(
    corpus: list[CorpusFile], tmp_path: Path
) -> None:
    files = _one_per_patient(corpus)
    assert len(files) >= 30
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[dicom]\nport = 0\nbind_address = "127.0.0.1"\nshutdown_grace_seconds = 5\n'
        '[http]\nport = 0\nbind_address = "127.0.0.1"\n'
        '[ingest]\nworkers = 1\n'
        '[logging]\nlevel = "DEBUG"\nformat = "json"\n'
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([CLI, "serve", "--config", str(config)], stdout=subprocess.DEVNULL,
                                   stderr=stderr, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "default"})
    try:
        started = _wait_for_line(log, "gateway started", timeout=60)
        port = int(started["dicom_port"])
        statuses = send_files(port, [f.path for f in files])
        stored = [f for f in files if statuses[f.path] == 0x0000]
        assert len(stored) >= 30, statuses
        assert find_studies(port) >= 1
        first = stored[0]
        sop_class = str(dcmread(first.path, stop_before_pixels=True).SOPClassUID)
        status, received = get_study(port, study_uid(first.path), {sop_class})
        assert status == 0x0000 and received >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=60) == 0, "SIGTERM must stop the gateway cleanly"
        finally:
            if process.poll() is None:
                process.kill()

    lines = log.read_text(encoding="utf-8").splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line that is not JSON: {line[:300]}")
    inside, whole = _patient_strings(files)
    uids = {str(dcmread(f.path, stop_before_pixels=True).SOPInstanceUID) for f in stored}
    for record in records:
        if _LEVELS[record["level"]] < _LEVELS["info"]:
            continue
        for text in _strings(record):
            assert text not in whole, f"patient data at {record['level']}: {record}"
            assert not any(s in text for s in inside), f"patient data at {record['level']}: {record}"
            assert not any(uid in text for uid in uids), f"a SOP Instance UID at {record['level']}: {record}"

    # One line per association and per instance stored, each with the association bound.
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_event.setdefault(record["event"], []).append(record)
    stored_lines = by_event["instance stored"]
    assert len(stored_lines) == len(stored)
    for record in stored_lines:
        assert record["level"] == "info" and record["assoc"] and record["calling_ae"] == "TESTSCU"
        assert record["status"] == "0x0000" and record["duration_seconds"] >= 0
    ended = by_event["association released"]
    assert len(ended) == len(by_event["association accepted"]) >= 3
    assert all(r["duration_seconds"] >= 0 and r["assoc"] for r in ended)
    # UIDs are logged, at DEBUG only, with the association they came in on.
    debug_uids = {r.get("sop_instance_uid") for r in by_event["c-store instance"] if r["level"] == "debug"}
    assert uids <= debug_uids
    assert by_event["gateway stopped"]


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_pydicom_warnings_quoting_values_are_debug_lines_only(
    level: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    pynetdicom_level = logging.getLogger("pynetdicom").level
    try:
        logs.configure(level, "json")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("Invalid value for VR PN: 'Doe^John'", UserWarning, stacklevel=1)
        logging.getLogger("pydicom").warning("Invalid value for VR LO: 'PAT-4711'")
        logging.getLogger("gateway.test").info("instance stored", extra={"fields": {"status": "0x0000"}})
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(root_level)
        logging.getLogger("pynetdicom").setLevel(pynetdicom_level)
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert records[-1]["event"] == "instance stored" and records[-1]["level"] == "info"
    quoting = [r for r in records if "Doe^John" in r["event"] or "PAT-4711" in r["event"]]
    if level == "INFO":
        assert quoting == []
    else:
        assert len(quoting) == 2 and {r["level"] for r in quoting} == {"debug"}
