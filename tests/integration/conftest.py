"""An in-process gateway on ephemeral ports, and SCU helpers that send files as they are."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian
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


def with_file_meta(path: Path, out_dir: Path) -> Path:
    """A copy of a file without File Meta (ACR-NEMA style) that pynetdicom can send as is."""
    ds = dcmread(path, force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = out_dir / path.name
    ds.save_as(out, enforce_file_format=True)
    return out


def send_files(port: int, paths: list[Path], *, calling_aet: str = "TESTSCU") -> dict[Path, int]:
    """C-STORE each file over one association, proposing exactly its own transfer syntax."""
    contexts: dict[tuple[str, str], None] = {}
    metas = []
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        metas.append(meta)
        contexts[(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))] = None
    statuses: dict[Path, int] = {}
    keys = list(contexts)
    for start in range(0, len(keys), 100):  # at most 128 proposed contexts per association
        batch = set(keys[start : start + 100])
        ae = AE(ae_title=calling_aet)
        requested = [build_context(sop, [ts]) for sop, ts in batch]
        assoc = ae.associate("127.0.0.1", port, contexts=requested, ae_title="PACSGW")
        assert assoc.is_established, "association refused"
        try:
            for path, meta in zip(paths, metas):
                if (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)) in batch:
                    status = assoc.send_c_store(path)
                    statuses[path] = int(status.Status) if "Status" in status else -1
        finally:
            assoc.release()
    return statuses


def copy_corpus_file(path: Path, out_dir: Path) -> Path:
    out = out_dir / path.name
    shutil.copyfile(path, out)
    return out
