"""C-GET and C-MOVE of the whole stored corpus, to DCMTK getscu/movescu/storescp and pynetdicom peers.

What comes back is compared with the corpus file it was stored from: the dataset bytes when it was
sent in the syntax it was received in, else the decoded pixels and every other element.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from gateway.app import Gateway
from gateway.config import Settings
from tests.conftest import CorpusFile
from tests.integration.conftest import dataset_bytes, needs_new_meta, send_files, with_file_meta

STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
# Debian's DCMTK leaves Nagle on unless told otherwise; with it off, responses come back fast
# enough to exercise the gateway's pipeline (and pynetdicom's reactor pause) at full speed.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Original:
    syntax: str
    data: bytes  # the dataset bytes as received (inflated when deflated)
    path: Path


@dataclass
class Archive:
    gateway: Gateway
    originals: dict[str, Original]  # by SOP Instance UID
    studies: list[str]
    destinations: dict[str, int] = field(default_factory=dict)  # AE title -> port

    @property
    def port(self) -> int:
        return self.gateway.dicom_port


def _original(path: Path) -> tuple[str, Original]:
    raw = path.read_bytes()
    if raw[128:132] == b"DICM":
        syntax, body = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID), dataset_bytes(path)
    else:
        syntax, body = str(uid.ImplicitVRLittleEndian), raw
    data = zlib.decompress(body, -zlib.MAX_WBITS) if syntax == uid.DeflatedExplicitVRLittleEndian else body
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return str(ds.SOPInstanceUID), Original(syntax, data, path)


# JPEGLS may only be offered JPEG-LS and implicit VR little endian, so that what was not received
# in JPEG-LS goes as stored JPEG-LS frames or, failing that, decoded.
_DESTINATION_SYNTAXES = {"JPEGLS": [uid.JPEGLSLossless, uid.ImplicitVRLittleEndian]}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, corpus: list[CorpusFile]) -> Iterator[Archive]:
    """The whole corpus stored once; two C-MOVE destinations configured on free ports."""
    tmp = tmp_path_factory.mktemp("retrieve")
    destinations = {"IMPLICIT": _free_port(), "JPEGLS": _free_port(), "GONE": _free_port()}
    gateway = Gateway(Settings(
        data_dir=tmp / "gw",
        dicom={"port": 0, "bind_address": "127.0.0.1", "shutdown_grace_seconds": 5,
               "destinations": [{"ae_title": t, "host": "127.0.0.1", "port": p,
                                 "transfer_syntaxes": _DESTINATION_SYNTAXES.get(t, [])}
                                for t, p in destinations.items()]},
        http={"enabled": False},
        ingest={"workers": 2},
        logging={"format": "text"},
    ))
    gateway.start()
    try:
        (tmp / "meta").mkdir()
        paths = [with_file_meta(f.path, tmp / "meta") if needs_new_meta(f.path) else f.path for f in corpus]
        assert {p.name: s for p, s in send_files(gateway.dicom_port, paths).items() if s != 0} == {}
        originals = dict(_original(f.path) for f in corpus)
        studies = sorted({str(pydicom.dcmread(f.path, stop_before_pixels=True, force=True).StudyInstanceUID)
                          for f in corpus})
        yield Archive(gateway, originals, studies, destinations)
    finally:
        gateway.stop()


def _identifier(studies: list[str]) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = studies
    return identifier


def _expected_bytes(original: Original) -> bytes:
    """The original dataset as pydicom writes its elements unchanged: without the retired group
    length elements (PS3.5 7.2), which pydicom's writer never emits."""
    ts = uid.UID(original.syntax)
    implicit = ts.is_implicit_VR
    little = ts.is_little_endian
    written = encode(read_dataset(io.BytesIO(original.data), implicit, little), implicit, little, False)
    assert written is not None
    return written


def _parsed(data: bytes, syntax: str) -> Dataset:
    ts = uid.UID(syntax)
    return read_dataset(io.BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)


def _explicit_un(original: Original) -> bool:
    if uid.UID(original.syntax).is_implicit_VR:
        return False
    dataset = _parsed(original.data, original.syntax)
    return any(dataset.get_item(tag).VR == "UN" and not tag.is_private for tag in dataset.keys())


def _pixels(ds: Dataset) -> np.ndarray[Any, Any] | bytes | None:
    if "PixelData" not in ds:
        return None
    try:
        return np.asarray(ds.pixel_array)
    except Exception:
        return bytes(ds.PixelData)


# Elements a conversion to another transfer syntax may change (PS3.5 8, PS3.3 C.7.6.3).
_MAY_CHANGE = {"PixelData", "PhotometricInterpretation", "PlanarConfiguration", "LossyImageCompression"}


def _same_elements(received: Dataset, original: Dataset, *, by_dcmtk: bool = False) -> None:
    def comparable(ds: Dataset) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for element in ds:
            if element.tag.element == 0 or element.keyword in _MAY_CHANGE:
                continue
            if element.VR in ("OB", "OW", "UN", "OL", "OF", "OD", "OV") and not original_little:
                continue  # binary values of a big endian original are compared after swapping nowhere
            value = element.value if element.VR != "SQ" else len(element.value)
            if by_dcmtk and element.VR == "UI" and isinstance(value, str):
                # DCMTK's input data correction deletes spaces inside UIDs as it reads them.
                value = value.replace(" ", "")
            out[int(element.tag)] = (element.VR, value)
        return out

    original_little = original.original_encoding[1] is not False
    got, expected = comparable(received), comparable(original)
    assert got.keys() == expected.keys()
    # Sent in implicit VR, an element's VR comes from pydicom's dictionaries: UN for most private
    # ones, the dictionary's over a wrong explicit one, a private dictionary's over the sender's.
    # The value is compared where the VR is the same, the presence everywhere.
    differing = {tag: (got[tag], expected[tag]) for tag in got
                 if got[tag][0] == expected[tag][0] and got[tag][1] != expected[tag][1]}
    assert differing == {}


def check(received: Dataset, syntax: str, raw: bytes | None, original: Original, *, by_dcmtk: bool = False) -> str:
    """Assert `received` is the stored instance; return how it came (original or transcoded)."""
    if syntax == original.syntax:
        if raw is not None and not _explicit_un(original):
            assert raw == original.data or raw == _expected_bytes(original), original.path
        elif raw is not None:
            # Standard elements sent as UN come back with their dictionary VR once pydicom has
            # read one of them (it reads the SOP Class and Instance UIDs to send them).
            _same_elements(_parsed(raw, syntax), _parsed(original.data, syntax))
        return "original"
    source = pydicom.dcmread(original.path, force=True)
    if "TransferSyntaxUID" not in source.file_meta:
        source.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    _same_elements(received, source, by_dcmtk=by_dcmtk)
    expected, got = _pixels(source), _pixels(received)
    if isinstance(expected, np.ndarray) and isinstance(got, np.ndarray):
        assert np.array_equal(expected, got)
    else:
        assert expected == got
    if uid.UID(original.syntax) in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEG2000,
                                    uid.JPEGLSNearLossless):
        assert received.LossyImageCompression == "01"
    return "passthrough" if uid.UID(syntax).is_compressed else "decoded"


@dataclass
class StoreScp:
    """A pynetdicom Storage SCP (the C-GET SCU's side) keeping each dataset's raw bytes."""

    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def on_store(self, event: Event) -> int:
        # The gateway's process sets STORE_RECV_CHUNKED_DATASET, so this SCP spools to a file too.
        path = Path(event.dataset_path)
        raw = dataset_bytes(path)
        syntax = str(event.context.transfer_syntax)
        self.received[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = (syntax, raw)
        return 0x0000


def _get_scu(archive: Archive, syntaxes_by_class: dict[str, list[str]]) -> tuple[AE, list[Any], list[PresentationContext]]:
    contexts = [build_context(STUDY_ROOT_GET)]
    for sop_class, found in syntaxes_by_class.items():
        contexts.extend(build_context(sop_class, [syntax]) for syntax in found)
    assert len(contexts) <= 128
    roles = [build_role(sop_class, scp_role=True) for sop_class in syntaxes_by_class]
    return AE(ae_title="GETSCU"), roles, contexts


def _c_get(archive: Archive, syntaxes_by_class: dict[str, list[str]], *, cancel_after: int | None = None
           ) -> tuple[StoreScp, list[Dataset]]:
    ae, roles, contexts = _get_scu(archive, syntaxes_by_class)
    scp = StoreScp()
    assoc = ae.associate("127.0.0.1", archive.port, contexts=contexts, ae_title="PACSGW", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, scp.on_store)])
    assert assoc.is_established
    statuses: list[Dataset] = []
    try:
        responses = assoc.send_c_get(_identifier(archive.studies), STUDY_ROOT_GET, msg_id=7)
        for status, identifier in responses:
            statuses.append(status)
            if status.get("Status") in (0xFF00, 0xFF01) and cancel_after is not None \
                    and len(scp.received) >= cancel_after and len(statuses) == cancel_after:
                context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_ROOT_GET)
                assoc.send_c_cancel(7, context.context_id)
            if identifier is not None:
                status.FailedSOPInstanceUIDList = identifier.get("FailedSOPInstanceUIDList")
    finally:
        assoc.release()
    return scp, statuses


def _every_syntax(archive: Archive) -> dict[str, list[str]]:
    wanted: dict[str, dict[str, None]] = {}
    for original in archive.originals.values():
        ds = pydicom.dcmread(original.path, stop_before_pixels=True, force=True)
        found = wanted.setdefault(str(ds.SOPClassUID), {})
        found[original.syntax] = None
    for found in wanted.values():
        for syntax in (uid.JPEGLSLossless, uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian):
            found[syntax] = None
    return {sop_class: list(found) for sop_class, found in wanted.items()}


def test_c_get_every_syntax_with_pynetdicom(archive: Archive) -> None:
    scp, statuses = _c_get(archive, _every_syntax(archive))
    final = statuses[-1]
    assert final.Status == 0x0000, final
    assert final.NumberOfCompletedSuboperations == len(archive.originals)
    pending = [s for s in statuses if s.Status == 0xFF00]
    assert [s.NumberOfRemainingSuboperations for s in pending] == list(range(len(archive.originals) - 1, -1, -1))
    assert set(scp.received) == set(archive.originals)
    modes: dict[str, int] = {}
    for sop_uid, (syntax, raw) in scp.received.items():
        implicit, little = uid.UID(syntax).is_implicit_VR, uid.UID(syntax).is_little_endian
        data = zlib.decompress(raw, -zlib.MAX_WBITS) if uid.UID(syntax).is_deflated else raw
        received = read_dataset(io.BytesIO(data), implicit, little)
        received.file_meta = pydicom.dataset.FileMetaDataset()
        received.file_meta.TransferSyntaxUID = syntax
        mode = check(received, syntax, data, archive.originals[sop_uid])
        modes[mode] = modes.get(mode, 0) + 1
    # Every syntax was offered: the received one wins whenever the SCU took it.
    assert modes.get("original", 0) == len(archive.originals), modes


def test_c_get_explicit_little_endian_only_with_pynetdicom(archive: Archive) -> None:
    classes = _every_syntax(archive)
    scp, statuses = _c_get(archive, {sop_class: [uid.ExplicitVRLittleEndian] for sop_class in classes})
    assert statuses[-1].Status == 0x0000, statuses[-1]
    assert set(scp.received) == set(archive.originals)
    modes: dict[str, int] = {}
    for sop_uid, (syntax, raw) in scp.received.items():
        assert syntax == uid.ExplicitVRLittleEndian
        received = read_dataset(io.BytesIO(raw), False, True)
        received.file_meta = pydicom.dataset.FileMetaDataset()
        received.file_meta.TransferSyntaxUID = syntax
        mode = check(received, syntax, raw, archive.originals[sop_uid])
        modes[mode] = modes.get(mode, 0) + 1
    received_otherwise = sum(1 for o in archive.originals.values() if o.syntax != uid.ExplicitVRLittleEndian)
    assert modes.get("decoded", 0) == received_otherwise, modes


def test_c_get_explicit_only_with_getscu(archive: Archive, tmp_path: Path) -> None:
    # getscu's +xi ("accept implicit VR LE only") proposes explicit VR little endian alone for
    # the storage contexts of a C-GET, so every instance not received in it is decoded.
    done = subprocess.run(
        ["getscu", "-S", "-aec", "PACSGW", "+xi", "-od", str(tmp_path), "127.0.0.1", str(archive.port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + "\\".join(archive.studies)],
        capture_output=True, timeout=300, env=DCMTK_ENV,
    )
    files = [pydicom.dcmread(p) for p in tmp_path.iterdir() if p.is_file()]
    assert files, done.stderr.decode(errors="replace")[-2000:]
    modes: dict[str, int] = {}
    for received in files:
        syntax = str(received.file_meta.TransferSyntaxUID)
        assert not uid.UID(syntax).is_compressed
        mode = check(received, syntax, None, archive.originals[str(received.SOPInstanceUID)], by_dcmtk=True)
        modes[mode] = modes.get(mode, 0) + 1
    # getscu proposes a fixed list of storage SOP classes; what it did not propose fails.
    assert len(files) >= len(archive.originals) - 5, (len(files), done.stderr.decode(errors="replace")[-2000:])
    assert modes.get("decoded", 0) > 0


@pytest.fixture
def storescp(archive: Archive, tmp_path: Path) -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(title: str, *options: str) -> Path:
        out = tmp_path / title
        out.mkdir()
        process = subprocess.Popen(
            ["storescp", "-aet", title, "-od", str(out), "-pm", "+B", *options, str(archive.destinations[title])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
        processes.append(process)
        _wait_for_port(archive.destinations[title])
        return out

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _movescu(archive: Archive, destination: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["movescu", "-S", "-aec", "PACSGW", "-aem", destination, "127.0.0.1", str(archive.port),
         "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + "\\".join(archive.studies)],
        capture_output=True, timeout=300, env=DCMTK_ENV,
    )


def _received_files(out: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in out.iterdir() if p.is_file()]


def test_c_move_to_storescp_implicit_only(archive: Archive, storescp: Any) -> None:
    out = storescp("IMPLICIT", "+xi")
    done = _movescu(archive, "IMPLICIT")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    files = _received_files(out)
    assert {str(f.SOPInstanceUID) for f in files} == set(archive.originals)
    for received in files:
        syntax = str(received.file_meta.TransferSyntaxUID)
        assert syntax == uid.ImplicitVRLittleEndian
        check(received, syntax, None, archive.originals[str(received.SOPInstanceUID)], by_dcmtk=True)


def test_c_move_to_storescp_jpeg_ls(archive: Archive, storescp: Any, tmp_path: Path) -> None:
    out = storescp("JPEGLS", "+xt")
    done = _movescu(archive, "JPEGLS")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    files = _received_files(out)
    assert {str(f.SOPInstanceUID) for f in files} == set(archive.originals)
    passed_through: list[Path] = []
    for received in files:
        syntax = str(received.file_meta.TransferSyntaxUID)
        original = archive.originals[str(received.SOPInstanceUID)]
        mode = check(received, syntax, None, original, by_dcmtk=True)
        if mode == "passthrough":
            assert syntax == uid.JPEGLSLossless
            assert received.filename is not None
            passed_through.append(Path(str(received.filename)))
        elif mode == "decoded":
            assert syntax in (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)
    assert passed_through, "no stored JPEG-LS frames were sent as they are"
    for path in passed_through[:5]:
        decoded = subprocess.run(["dcmdjpls", str(path), str(tmp_path / "plain.dcm")], capture_output=True)
        assert decoded.returncode == 0, decoded.stderr.decode(errors="replace")


def test_unknown_move_destination(archive: Archive) -> None:
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title="PACSGW")
    assert assoc.is_established
    try:
        statuses = [s.Status for s, _ in assoc.send_c_move(_identifier(archive.studies[:1]), "NOBODY",
                                                            STUDY_ROOT_MOVE)]
    finally:
        assoc.release()
    assert statuses == [0xA801]


def test_missing_unique_key_is_refused(archive: Archive, storescp: Any) -> None:
    # pynetdicom delivers a C-MOVE's final status only once the destination has associated.
    storescp("IMPLICIT", "+xi")
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title="PACSGW")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = archive.studies[0]
    try:
        (status, _), = list(assoc.send_c_move(identifier, "IMPLICIT", STUDY_ROOT_MOVE))
    finally:
        assoc.release()
    assert status.Status == 0xA900 and "SeriesInstanceUID" in status.ErrorComment


def test_c_cancel_stops_a_c_get(archive: Archive) -> None:
    scp, statuses = _c_get(archive, _every_syntax(archive), cancel_after=3)
    assert statuses[-1].Status == 0xFE00
    assert 3 <= len(scp.received) < len(archive.originals)
    assert statuses[-1].NumberOfRemainingSuboperations > 0


def test_corrupt_blob_fails_its_sub_operation(archive: Archive) -> None:
    gateway = archive.gateway
    sop_uid = next(u for u, o in archive.originals.items() if "ct/" in str(o.path))
    stored = gateway.index.locate(sop_uid)
    assert stored is not None
    path = gateway.settings.blob_path / stored.blob.key[:2] / stored.blob.key[2:4] / stored.blob.key
    intact = path.read_bytes()
    damaged = bytearray(intact)
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(damaged))
    try:
        scp, statuses = _c_get(archive, _every_syntax(archive))
    finally:
        path.write_bytes(intact)
    final = statuses[-1]
    assert final.Status == 0xB000
    assert final.NumberOfFailedSuboperations == 1
    assert final.NumberOfCompletedSuboperations == len(archive.originals) - 1
    failed = final.FailedSOPInstanceUIDList
    assert (list(failed) if isinstance(failed, list | pydicom.multival.MultiValue) else [failed]) == [sop_uid]
    assert sop_uid not in scp.received
