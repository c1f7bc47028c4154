"""Peers and probes the operations tests share: real SCUs, a /metrics scrape, the README's metric table."""

from __future__ import annotations

import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from tests.conftest import REPO_ROOT, CorpusFile
from tests.integration.conftest import needs_new_meta

README = REPO_ROOT / "README.md"


def scrape(http_port: int) -> dict[str, Metric]:
    """The gateway's /metrics, parsed by prometheus_client's own text parser, by family name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], sample_name: str, **labels: str) -> float:
    """The sum of the samples of that name whose labels include `labels` (0 when there is none)."""
    family_name = re.sub(r"_(total|bucket|count|sum|info)$", "", sample_name)
    family = families.get(family_name) or families.get(sample_name)
    if family is None:
        return 0.0
    return sum(
        s.value for s in family.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def scrape_until(http_port: int, sample_name: str, expected: float, timeout: float = 10, **labels: str) -> dict[str, Metric]:
    """Scrape until the sample reaches `expected`: the server handles a release after the SCU returns."""
    deadline = time.monotonic() + timeout
    while True:
        families = scrape(http_port)
        if value(families, sample_name, **labels) == expected or time.monotonic() > deadline:
            return families
        time.sleep(0.05)


def echo(port: int, calling_aet: str = "TESTSCU") -> int:
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW")
    if not assoc.is_established:
        return -1
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def find_studies(port: int) -> int:
    """Study-level C-FIND matching everything; the number of matches."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    matches = 0
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                matches += 1
    finally:
        assoc.release()
    return matches


def get_study(port: int, study_uid: str, sop_classes: set[str]) -> tuple[int, int]:
    """C-GET one study, asking for explicit or implicit VR little endian; (final status, received)."""
    received: list[int] = []

    def on_store(event: Event) -> int:
        received.append(1)
        return 0x0000

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in sorted(sop_classes):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    roles = [build_role(sop_class, scp_role=True) for sop_class in sorted(sop_classes)]
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    final = -1
    try:
        for status, _identifier in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status and "Status" in status:
                final = int(status.Status)
    finally:
        assoc.release()
    return final, len(received)


def sendable(corpus: list[CorpusFile]) -> list[CorpusFile]:
    """Files an SCU can stream as they are (complete File Meta naming the dataset's own UIDs)."""
    return [f for f in corpus if not f.needs_force and not needs_new_meta(f.path)]


def series_files(corpus: list[CorpusFile], series: str, count: int) -> list[CorpusFile]:
    files = [f for f in sendable(corpus) if f.entry["series"] == series][:count]
    assert len(files) == count, f"the corpus lacks {count} sendable files of {series}"
    return files


def study_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


@dataclass(frozen=True)
class DocumentedMetric:
    name: str  # as exposed: counters with _total, the info metric with _info
    type: str
    labels: frozenset[str]


def readme_metric_table() -> dict[str, DocumentedMetric]:
    """The table of README.md's "Metrics" section, by exposed metric name."""
    text = README.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, DocumentedMetric] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`pacsgw_"):
            continue
        labels = frozenset(re.findall(r"`([a-z_]+)`", cells[2]))
        for name in re.findall(r"`(pacsgw_[a-z0-9_]+)`", cells[0]):
            rows[name] = DocumentedMetric(name, cells[1], labels)
    return rows


def exposed_name(family: Metric) -> str:
    """The name a reader sees in the exposition (and writes in PromQL) for a parsed family."""
    if family.type == "counter":
        return family.name + "_total"
    if family.type == "info":
        return family.name + "_info"
    return family.name
