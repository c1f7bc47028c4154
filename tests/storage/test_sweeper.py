"""The orphan sweep removes only blobs that are old enough and that no index row references."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from storage.blobs.base import BlobStore
from storage.db import create_engine_for, upgrade_to_head
from storage.index import SqlIndex
from storage.records import BlobRef, DuplicatePolicy, InstanceMeta
from storage.sweeper import sweep_orphans


@pytest.fixture(params=["sqlite", "postgresql"])
def index_and_store(
    request: pytest.FixtureRequest, store: BlobStore
) -> tuple[SqlIndex, BlobStore]:
    """The store of every backend, with an index on either database (the same engine or not)."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    engine = create_engine_for(url)
    upgrade_to_head(engine)
    request.addfinalizer(engine.dispose)
    return SqlIndex(engine), store


def test_sweep_orphans(
    index_and_store: tuple[SqlIndex, BlobStore],
    tmp_path: Path,
    make_meta: Callable[..., InstanceMeta],
    make_old: Callable[[BlobStore, BlobRef, float], None],
) -> None:
    index, store = index_and_store
    spool = tmp_path / "spool.bin"

    def put(data: bytes) -> BlobRef:
        spool.write_bytes(data)
        return store.put_file(spool)

    referenced, orphan, young_orphan = put(b"referenced"), put(b"orphan"), put(b"young")
    index.record_instance(make_meta("1.2.3.4.1"), referenced, DuplicatePolicy.REJECT)
    make_old(store, referenced, 7200)
    make_old(store, orphan, 7200)

    assert sweep_orphans(index, store, grace_seconds=3600) == 1

    assert store.exists(referenced)
    assert not store.exists(orphan)
    assert store.exists(young_orphan)  # may still be about to be recorded
    assert sweep_orphans(index, store, grace_seconds=3600) == 0
