"""One contract for every blob store backend (filesystem; database on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from storage.blobs.base import BlobNotFound, BlobStore
from storage.blobs.database import CHUNK_SIZE
from storage.records import BlobRef


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_put_then_read_back(store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    ref = store.put_file(write(tmp_path / "in.bin", data))

    assert ref.store == store.name
    assert ref.size == len(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert store.exists(ref)
    with store.open(ref) as stream:
        assert stream.read() == data
    assert store.read_range(ref, 100, 50) == data[100:150]


def test_keys_are_fresh_and_opaque(store: BlobStore, tmp_path: Path) -> None:
    source = write(tmp_path / "in.bin", b"same bytes")
    first, second = store.put_file(source), store.put_file(source)

    assert first.key != second.key
    assert first.sha256 == second.sha256
    assert "/" not in first.key and str(tmp_path) not in first.key


def test_empty_blob(store: BlobStore, tmp_path: Path) -> None:
    ref = store.put_file(write(tmp_path / "empty.bin", b""))

    assert ref.size == 0
    assert ref.sha256 == hashlib.sha256(b"").hexdigest()
    with store.open(ref) as stream:
        assert stream.read() == b""


def test_read_range_past_the_end_is_short(store: BlobStore, tmp_path: Path) -> None:
    ref = store.put_file(write(tmp_path / "in.bin", b"0123456789"))

    assert store.read_range(ref, 7, 100) == b"789"
    assert store.read_range(ref, 20, 5) == b""
    with pytest.raises(ValueError):
        store.read_range(ref, -1, 5)


def test_large_blob_spans_several_chunks(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(10 * 1024 * 1024 + 12345)  # two full database chunks and a partial one
    ref = store.put_file(write(tmp_path / "large.bin", data))

    assert ref.size == len(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with store.open(ref) as stream:
        while block := stream.read(1024 * 1024):
            digest.update(block)
    assert digest.hexdigest() == ref.sha256
    # A range straddling a chunk boundary, and seeking backwards and from the end.
    boundary = CHUNK_SIZE
    assert store.read_range(ref, boundary - 10, 20) == data[boundary - 10 : boundary + 10]
    with store.open(ref) as stream:
        stream.seek(-5, io.SEEK_END)
        assert stream.read() == data[-5:]
        stream.seek(3)
        assert stream.read(4) == data[3:7]
        assert stream.tell() == 7


def test_delete(store: BlobStore, tmp_path: Path) -> None:
    keep = store.put_file(write(tmp_path / "a.bin", b"keep"))
    gone = store.put_file(write(tmp_path / "b.bin", b"gone"))

    store.delete(gone)

    assert not store.exists(gone)
    assert store.exists(keep)
    with pytest.raises(BlobNotFound):
        store.open(gone)
    with pytest.raises(BlobNotFound):
        store.delete(gone)


def test_unknown_keys_are_not_found(store: BlobStore) -> None:
    for key in ["0" * 32, "../../etc/passwd", ""]:
        ref = BlobRef(store=store.name, key=key, size=1, sha256="0" * 64)
        assert not store.exists(ref)
        with pytest.raises(BlobNotFound):
            store.open(ref)


def test_keys_older_than(
    store: BlobStore, tmp_path: Path, make_old: Callable[[BlobStore, BlobRef, float], None]
) -> None:
    old = store.put_file(write(tmp_path / "old.bin", b"old"))
    young = store.put_file(write(tmp_path / "young.bin", b"young"))
    make_old(store, old, 3600)

    assert set(store.iter_keys_older_than(600)) == {old.key}
    assert set(store.iter_keys_older_than(0)) == {old.key, young.key}

    store.delete_key(old.key)
    assert set(store.iter_keys_older_than(0)) == {young.key}


def test_ping(store: BlobStore) -> None:
    store.ping()
