"""Every corpus file, sent by a pynetdicom SCU, is acknowledged, compressed where it can be, and
rebuilt byte for byte: on the embedded SQLite default and on the real PostgreSQL server."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom

from gateway.services.rebuild import rebuild_instance, verify
from storage.records import StorageMode
from tests.conftest import CorpusFile
from tests.integration.conftest import GatewayFactory, dataset_bytes, needs_new_meta, send_files, with_file_meta


def _sendable(corpus: list[CorpusFile], tmp_path: Path) -> list[Path]:
    out = tmp_path / "meta"
    out.mkdir()
    return [with_file_meta(f.path, out) if needs_new_meta(f.path) else f.path for f in corpus]


def _check_whole_corpus(gateway_url: str, blobs: str, make_gateway: GatewayFactory,
                        corpus: list[CorpusFile], tmp_path: Path) -> None:
    gateway = make_gateway(gateway_url, blobs={"backend": blobs})
    paths = _sendable(corpus, tmp_path)
    statuses = send_files(gateway.dicom_port, paths)

    assert len(statuses) == len(corpus)
    assert {p.name: s for p, s in statuses.items() if s != 0} == {}

    # Some corpus images exist in several transfer syntaxes under one SOP Instance UID (WG04 CT1,
    # NM1): they are kept as revisions, so every file is one stored revision.
    results = list(verify(gateway.index, gateway.blobs))
    assert len(results) == len(corpus)
    assert [(s.sop_instance_uid, f) for s, f in results if f is not None] == []

    by_digest = {s.dataset_sha256: s for s, _ in results}
    compressed = 0
    for path in paths:
        sent = dataset_bytes(path)
        stored = by_digest[hashlib.sha256(sent).hexdigest()]
        out = io.BytesIO()
        rebuild_instance(gateway.blobs, stored, out.write)
        assert out.getvalue() == sent, path.name
        compressed += stored.storage_mode is StorageMode.COMPRESSED
    # Every native image of the corpus is re-encoded losslessly; the rest is kept as received.
    assert compressed >= 150
    distinct_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
    counts = gateway.index.counts()
    assert counts.instances == len(distinct_uids)
    assert sum(s.stored_size for s, _ in results) < 0.6 * sum(s.original_size for s, _ in results)


def test_whole_corpus_on_sqlite_and_filesystem(make_gateway: GatewayFactory, corpus: list[CorpusFile],
                                               tmp_path: Path) -> None:
    _check_whole_corpus("", "filesystem", make_gateway, corpus, tmp_path)


def test_whole_corpus_on_postgresql_with_blobs_in_the_database(
    make_gateway: GatewayFactory, corpus: list[CorpusFile], tmp_path: Path, pg_url: str
) -> None:
    _check_whole_corpus(pg_url, "database", make_gateway, corpus, tmp_path)


def test_compressed_pixels_decode_to_the_original_values(
    make_gateway: GatewayFactory, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    """Beyond the byte comparison: a rebuilt native CT decodes to the manifest's pixel checksum."""
    gateway = make_gateway()
    entry = next(f for f in corpus if f.entry["modality"] == "CT" and not f.entry["encapsulated"]
                 and f.entry["bits_stored"] == 12)
    send_files(gateway.dicom_port, [entry.path])
    stored = next(iter(gateway.index.iter_instances()))
    assert stored.storage_mode is StorageMode.COMPRESSED
    assert stored.stored_size < 0.6 * stored.original_size
    out = io.BytesIO()
    rebuild_instance(gateway.blobs, stored, out.write)
    ds = pydicom.dcmread(io.BytesIO(out.getvalue()), force=True)
    ds.file_meta = pydicom.dcmread(entry.path, stop_before_pixels=True).file_meta
    pixels = np.ascontiguousarray(ds.pixel_array)
    assert hashlib.md5(pixels.tobytes()).hexdigest() == entry.entry["pixel_md5"]
