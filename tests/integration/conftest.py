"""An in-process gateway on ephemeral ports, and SCU helpers that send files as they are."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ImplicitVRLittleEndian
from pynetdicom import AE, _config as pynetdicom_config
from pynetdicom.presentation import build_context

from gateway.app import Gateway
from gateway.config import Settings

GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start gateways with test settings; every one is stopped at teardown."""
    started: list[Gateway] = []

    def factory(database_url: str = "", **sections: Any) -> Gateway:
        values: dict[str, Any] = {
            "data_dir": tmp_path / f"gw{len(started)}",
            "dicom": {"port": 0, "bind_address": "127.0.0.1", "shutdown_grace_seconds": 5},
            "http": {"port": 0, "bind_address": "127.0.0.1"},
            "ingest": {"workers": 1},
            "database": {"url": database_url},
            "logging": {"format": "text"},
        }
        for section, overrides in sections.items():
            if isinstance(overrides, dict):
                values[section] = {**values.get(section, {}), **overrides}
            else:
                values[section] = overrides
        gateway = Gateway(Settings(**values))
        gateway.start()
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


@pytest.fixture(autouse=True)
def send_files_as_they_are() -> Iterator[None]:
    # The SCU streams each file's dataset bytes unchanged, so what the gateway rebuilds can be
    # compared with the file byte for byte.
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    yield
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous


def dataset_bytes(path: Path) -> bytes:
    """The dataset part of a DICOM file (what a C-STORE carries)."""
    ds = dcmread(path, stop_before_pixels=True)
    raw = path.read_bytes()
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return raw[meta_end:]


def needs_new_meta(path: Path) -> bool:
    raw = path.open("rb").read(132)
    if raw[128:132] != b"DICM":
        return True
    # The command's UIDs must be the dataset's (DCMTK's storescu takes them from the dataset);
    # a few files carry File Meta that is incomplete or names another instance.
    ds = dcmread(path, stop_before_pixels=True)
    meta = ds.file_meta
    return (meta.get("MediaStorageSOPClassUID") != ds.get("SOPClassUID")
            or meta.get("MediaStorageSOPInstanceUID") != ds.get("SOPInstanceUID"))


def with_file_meta(path: Path, out_dir: Path) -> Path:
    """A copy with complete File Meta and the dataset bytes unchanged, so an SCU can stream it.

    ACR-NEMA style files (no preamble, no File Meta) hold an implicit VR little endian dataset.
    """
    raw = path.read_bytes()
    if raw[128:132] == b"DICM":
        meta = dcmread(path, stop_before_pixels=True).file_meta
        syntax = str(meta.TransferSyntaxUID)
        body = dataset_bytes(path)
    else:
        syntax, body = str(ImplicitVRLittleEndian), raw
    ds = dcmread(path, stop_before_pixels=True, force=True)
    new_meta = FileMetaDataset()
    new_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    new_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    new_meta.TransferSyntaxUID = syntax
    new_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, new_meta, enforce_standard=True)
    out = out_dir / path.name
    out.write_bytes(buffer.getvalue() + body)
    return out


def send_files(port: int, paths: list[Path], *, calling_aet: str = "TESTSCU") -> dict[Path, int]:
    """C-STORE each file over one association, proposing exactly its own transfer syntax."""
    contexts: dict[tuple[str, str], None] = {}
    keys_of: list[tuple[str, str]] = []
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        key = (str(ds.file_meta.get("MediaStorageSOPClassUID") or ds.SOPClassUID),
               str(ds.file_meta.TransferSyntaxUID))
        keys_of.append(key)
        contexts[key] = None
    statuses: dict[Path, int] = {}
    keys = list(contexts)
    for start in range(0, len(keys), 100):  # at most 128 proposed contexts per association
        batch = set(keys[start : start + 100])
        ae = AE(ae_title=calling_aet)
        requested = [build_context(sop, [ts]) for sop, ts in batch]
        assoc = ae.associate("127.0.0.1", port, contexts=requested, ae_title="PACSGW")
        assert assoc.is_established, "association refused"
        try:
            for path, key in zip(paths, keys_of):
                if key in batch:
                    status = assoc.send_c_store(path)
                    statuses[path] = int(status.Status) if "Status" in status else -1
        finally:
            assoc.release()
    return statuses
