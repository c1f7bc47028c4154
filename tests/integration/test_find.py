"""C-FIND against the whole stored corpus, asked by DCMTK findscu and by a pynetdicom SCU."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from gateway.app import Gateway
from gateway.config import Settings
from tests.conftest import CorpusFile, _create_database, _drop_database
from tests.integration.conftest import GatewayFactory, needs_new_meta, send_files, with_file_meta
from tests.integration.test_database_outage import ThrowawayPostgres, throwaway_postgres  # noqa: F401

PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"


@dataclass
class Expected:
    """What the stored corpus holds, read from the files the manifest lists."""

    instances_by_series: dict[str, set[str]]
    series_by_study: dict[str, set[str]]
    studies_by_patient: dict[str, set[str]]
    modality_by_series: dict[str, str]
    header_by_sop: dict[str, Dataset]

    def study_instances(self, study: str) -> int:
        return sum(len(self.instances_by_series[s]) for s in self.series_by_study[study])


@dataclass
class Archive:
    gateway: Gateway
    expected: Expected

    @property
    def port(self) -> int:
        return self.gateway.dicom_port


def _expected(corpus: list[CorpusFile]) -> Expected:
    instances: defaultdict[str, set[str]] = defaultdict(set)
    series: defaultdict[str, set[str]] = defaultdict(set)
    studies: defaultdict[str, set[str]] = defaultdict(set)
    modality: dict[str, str] = {}
    headers: dict[str, Dataset] = {}
    for entry in corpus:
        ds = pydicom.dcmread(entry.path, stop_before_pixels=True, force=True)
        series_uid = str(entry.entry["series_instance_uid"])
        instances[series_uid].add(str(ds.SOPInstanceUID))
        series[str(ds.StudyInstanceUID)].add(series_uid)
        studies[str(ds.get("PatientID", ""))].add(str(ds.StudyInstanceUID))
        modality[series_uid] = str(ds.get("Modality", ""))
        headers[str(ds.SOPInstanceUID)] = ds
    return Expected(dict(instances), dict(series), dict(studies), modality, headers)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, corpus: list[CorpusFile]) -> Iterator[Archive]:
    """The whole corpus stored once in a gateway on PostgreSQL, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("find")
    name = f"pacsgw_test_{uuid.uuid4().hex[:12]}"
    url = _create_database(name)
    gateway = Gateway(Settings(
        data_dir=tmp / "gw",
        dicom={"port": 0, "bind_address": "127.0.0.1", "shutdown_grace_seconds": 5},
        http={"enabled": False},
        ingest={"workers": 2},
        database={"url": url},
        logging={"format": "text"},
    ))
    gateway.start()
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        (tmp / "meta").mkdir()
        paths = [with_file_meta(f.path, tmp / "meta") if needs_new_meta(f.path) else f.path for f in corpus]
        statuses = send_files(gateway.dicom_port, paths)
        assert {p.name: s for p, s in statuses.items() if s != 0} == {}
        yield Archive(gateway, _expected(corpus))
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous
        gateway.stop()
        _drop_database(name)


def _associate(port: int, *, relational: bool = False, combined: bool = False) -> Association:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(PATIENT_ROOT)
    ae.add_requested_context(STUDY_ROOT)
    negotiation = []
    if relational or combined:
        for sop_class in (PATIENT_ROOT, STUDY_ROOT):
            item = SOPClassExtendedNegotiation()
            item.sop_class_uid = sop_class
            item.service_class_application_information = bytes([int(relational), int(combined)])
            negotiation.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW", ext_neg=negotiation)
    assert assoc.is_established
    # Otherwise the request's second PDU waits for a delayed ACK (~40 ms), as DESIGN.md explains.
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def _find(assoc: Association, model: str, **keys: Any) -> tuple[int, list[Dataset]]:
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    matches: list[Dataset] = []
    final = -1
    for status, response in assoc.send_c_find(identifier, model):
        assert "Status" in status, "no response from the gateway"
        if status.Status in (0xFF00, 0xFF01):
            assert response is not None
            matches.append(response)
        else:
            final = int(status.Status)
    return final, matches


def find(port: int, model: str, **keys: Any) -> tuple[int, list[Dataset]]:
    assoc = _associate(port)
    try:
        return _find(assoc, model, **keys)
    finally:
        assoc.release()


def test_study_level_with_findscu(archive: Archive, tmp_path: Path) -> None:
    out = tmp_path / "rsp"
    out.mkdir()
    done = subprocess.run(
        ["findscu", "-S", "-aec", "PACSGW", "-X", "-od", str(out), "127.0.0.1", str(archive.port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName",
         "-k", "NumberOfStudyRelatedSeries", "-k", "NumberOfStudyRelatedInstances",
         "-k", "ModalitiesInStudy", "-k", "RetrieveAETitle", "-k", "InstanceAvailability"],
        capture_output=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    responses = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    expected = archive.expected
    assert len(responses) == len(expected.series_by_study)
    for rsp in responses:
        study = str(rsp.StudyInstanceUID)
        assert rsp.QueryRetrieveLevel == "STUDY"
        assert int(rsp.NumberOfStudyRelatedSeries) == len(expected.series_by_study[study])
        assert int(rsp.NumberOfStudyRelatedInstances) == expected.study_instances(study)
        modalities = {expected.modality_by_series[s] for s in expected.series_by_study[study]} - {""}
        value = rsp.ModalitiesInStudy
        assert set(value if isinstance(value, list | pydicom.multival.MultiValue) else [value]) == modalities
        assert rsp.RetrieveAETitle == "PACSGW" and rsp.InstanceAvailability == "ONLINE"


def test_findscu_patient_root_wildcard(archive: Archive, tmp_path: Path) -> None:
    out = tmp_path / "rsp"
    out.mkdir()
    done = subprocess.run(
        ["findscu", "-P", "-aec", "PACSGW", "-X", "-od", str(out), "127.0.0.1", str(archive.port),
         "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientName=Yamada*", "-k", "PatientID",
         "-k", "NumberOfPatientRelatedInstances"],
        capture_output=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    (rsp,) = [pydicom.dcmread(p) for p in out.glob("rsp*.dcm")]
    assert rsp.PatientID == "H31EXAMPLE"
    assert str(rsp.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert rsp.SpecificCharacterSet == "ISO_IR 192"


def test_every_level_in_both_models(archive: Archive) -> None:
    expected = archive.expected
    assoc = _associate(archive.port)
    try:
        status, patients = _find(assoc, PATIENT_ROOT, QueryRetrieveLevel="PATIENT", PatientID="",
                                 NumberOfPatientRelatedStudies="", NumberOfPatientRelatedInstances="")
        assert status == 0x0000
        by_patient = {str(p.PatientID): p for p in patients}
        for patient_id, studies in expected.studies_by_patient.items():
            assert int(by_patient[patient_id].NumberOfPatientRelatedStudies) == len(studies)
            assert int(by_patient[patient_id].NumberOfPatientRelatedInstances) == sum(
                expected.study_instances(s) for s in studies)

        patient_id, studies = max(((p, s) for p, s in expected.studies_by_patient.items() if p),
                                  key=lambda kv: len(kv[1]))
        status, found = _find(assoc, PATIENT_ROOT, QueryRetrieveLevel="STUDY", PatientID=patient_id,
                              StudyInstanceUID="")
        assert status == 0x0000 and {str(s.StudyInstanceUID) for s in found} == studies

        study_patient, study = max(((p, s) for p, studies in expected.studies_by_patient.items() if p
                                  for s in studies), key=lambda ps: len(expected.series_by_study[ps[1]]))
        for model, extra in ((STUDY_ROOT, {}), (PATIENT_ROOT, {"PatientID": study_patient})):
            status, series = _find(assoc, model, QueryRetrieveLevel="SERIES", StudyInstanceUID=study,
                                   SeriesInstanceUID="", Modality="", NumberOfSeriesRelatedInstances="",
                                   **extra)
            assert status == 0x0000
            assert {str(s.SeriesInstanceUID): int(s.NumberOfSeriesRelatedInstances) for s in series} == {
                s: len(expected.instances_by_series[s]) for s in expected.series_by_study[study]}

            one_series = sorted(expected.series_by_study[study])[0]
            status, images = _find(assoc, model, QueryRetrieveLevel="IMAGE", StudyInstanceUID=study,
                                   SeriesInstanceUID=one_series, SOPInstanceUID="", InstanceNumber="",
                                   Manufacturer="", ImageType="", **extra)
            assert status == 0x0000
            assert {str(i.SOPInstanceUID) for i in images} == expected.instances_by_series[one_series]
            for image in images:
                header = expected.header_by_sop[str(image.SOPInstanceUID)]
                assert image.get("Manufacturer", "") == header.get("Manufacturer", "")
                assert list(image.get("ImageType") or []) == list(header.get("ImageType") or [])
    finally:
        assoc.release()


def test_names_in_other_character_sets(archive: Archive) -> None:
    status, found = find(archive.port, STUDY_ROOT, SpecificCharacterSet=["", "ISO 2022 IR 87"],
                         QueryRetrieveLevel="STUDY", PatientName="山田^太郎", StudyInstanceUID="")
    assert status == 0x0000 and len(found) == 1
    assert str(found[0].PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"

    status, found = find(archive.port, STUDY_ROOT, SpecificCharacterSet="ISO_IR 144",
                         QueryRetrieveLevel="STUDY", PatientName="Люк*", PatientID="")
    assert status == 0x0000 and [str(f.PatientID) for f in found] == ["SCSRUSS"]
    assert str(found[0].PatientName) == "Люкceмбypг"

    status, found = find(archive.port, STUDY_ROOT, SpecificCharacterSet="GB18030",
                         QueryRetrieveLevel="STUDY", PatientName="王^小东", PatientID="")
    assert status == 0x0000 and [str(f.PatientID) for f in found] == ["X2EXAMPLE"]


def test_sequence_keys_from_the_header(archive: Archive) -> None:
    sop, header = next((s, h) for s, h in archive.expected.header_by_sop.items()
                       if "ReferencedSOPSequence" not in h and "SourceImageSequence" in h
                       and len(h.SourceImageSequence) == 1)
    item = Dataset()
    item.ReferencedSOPInstanceUID = header.SourceImageSequence[0].ReferencedSOPInstanceUID
    status, found = find(archive.port, STUDY_ROOT, QueryRetrieveLevel="IMAGE",
                         StudyInstanceUID=header.StudyInstanceUID,
                         SeriesInstanceUID=header.SeriesInstanceUID, SOPInstanceUID="",
                         SourceImageSequence=[item])
    assert status == 0x0000
    assert sop in {str(f.SOPInstanceUID) for f in found}


@pytest.mark.parametrize(
    ("model", "keys", "status"),
    [
        (STUDY_ROOT, {"StudyInstanceUID": ""}, 0xA900),  # no level
        (STUDY_ROOT, {"QueryRetrieveLevel": "FRAME"}, 0xA900),
        (STUDY_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, 0xA900),
        (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""}, 0xA900),
        (PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}, 0xA900),
        (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"}, 0xA900),
        (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyDate": "20201301-"}, 0xA900),
    ],
)
def test_bad_identifiers(archive: Archive, model: str, keys: dict[str, str], status: int) -> None:
    assoc = _associate(archive.port)
    try:
        identifier = Dataset()
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        responses = list(assoc.send_c_find(identifier, model))
    finally:
        assoc.release()
    assert len(responses) == 1
    rsp, _ = responses[0]
    assert rsp.Status == status
    assert rsp.ErrorComment


def test_relational_queries_when_negotiated(archive: Archive) -> None:
    assoc = _associate(archive.port, relational=True)
    try:
        status, series = _find(assoc, STUDY_ROOT, QueryRetrieveLevel="SERIES", Modality="MR",
                               SeriesInstanceUID="")
    finally:
        assoc.release()
    assert status == 0x0000
    assert {str(s.SeriesInstanceUID) for s in series} == {
        s for s, m in archive.expected.modality_by_series.items() if m == "MR"}


def test_cancel_stops_the_stream(archive: Archive) -> None:
    assoc = _associate(archive.port, relational=True)
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.SOPInstanceUID = ""
        identifier.ImageComments = ""  # a header key: every match reads its stored header
        responses = assoc.send_c_find(identifier, STUDY_ROOT, msg_id=7)
        statuses: Counter[int] = Counter()
        for status, _ in responses:
            statuses[int(status.Status)] += 1
            if statuses[0xFF00] == 1:
                context_id = assoc._get_valid_context(STUDY_ROOT, "", "scu").context_id
                assoc.send_c_cancel(7, context_id)
    finally:
        assoc.release()
    assert statuses[0xFE00] == 1
    total = sum(len(v) for v in archive.expected.instances_by_series.values())
    assert statuses[0xFF00] < total


def test_study_level_latency(archive: Archive) -> None:
    """A STUDY-level query with counts stays fast within one association (figure printed)."""
    study = next(iter(archive.expected.series_by_study))
    assoc = _associate(archive.port)
    try:
        rounds = 50
        started = time.perf_counter()
        for _ in range(rounds):
            status, found = _find(assoc, STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyInstanceUID=study,
                                  PatientName="", NumberOfStudyRelatedInstances="", ModalitiesInStudy="")
            assert status == 0 and len(found) == 1
        mean_ms = (time.perf_counter() - started) / rounds * 1000
    finally:
        assoc.release()
    print(f"STUDY-level C-FIND: {mean_ms:.2f} ms mean over {rounds}")
    assert mean_ms < 50


def test_database_unavailable(make_gateway: GatewayFactory, throwaway_postgres: ThrowawayPostgres,  # noqa: F811
                              corpus: list[CorpusFile]) -> None:
    gateway = make_gateway(throwaway_postgres.url)
    assert send_files(gateway.dicom_port, [corpus[0].path]) == {corpus[0].path: 0}
    assert find(gateway.dicom_port, STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyInstanceUID="")[0] == 0
    throwaway_postgres.stop()
    assoc = _associate(gateway.dicom_port)
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        ((rsp, _),) = list(assoc.send_c_find(identifier, STUDY_ROOT))
    finally:
        assoc.release()
    assert rsp.Status == 0xA700 and "database" in rsp.ErrorComment
    assert gateway.registry.get_sample_value(
        "pacsgw_dimse_failures_total", {"service": "c_find", "reason": "out_of_resources"}) == 1
