"""Engine settings, and database outages surfacing as IndexUnavailable / BlobStoreError."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.blobs.base import BlobStoreError
from storage.blobs.database import DatabaseBlobStore
from storage.db import IndexUnavailable, create_engine_for, current_revision, head_revision
from storage.index import SqlIndex

# Nothing listens on port 1: connections are refused at once.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/pacsgw?connect_timeout=2"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def test_sqlite_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dirs' / 'index.sqlite'}"
    engine = create_engine_for(url)
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()
    assert (tmp_path / "nested" / "dirs" / "index.sqlite").is_file()


def test_postgresql_settings(pg_url: str) -> None:
    engine = create_engine_for(pg_url.replace("+psycopg", ""), pool_size=3)
    assert engine.dialect.driver == "psycopg"
    assert engine.pool.size() == 3  # type: ignore[attr-defined]
    engine.dispose()


def test_unreachable_index_raises_index_unavailable() -> None:
    index = SqlIndex(create_engine_for(UNREACHABLE))

    with pytest.raises(IndexUnavailable, match="OperationalError"):
        index.ping()
    with pytest.raises(IndexUnavailable):
        index.locate("1.2.3")
    with pytest.raises(IndexUnavailable):
        index.counts()
    with pytest.raises(IndexUnavailable):
        current_revision(create_engine_for(UNREACHABLE))


def test_unreachable_database_blob_store_raises_blob_store_error(tmp_path: Path) -> None:
    store = DatabaseBlobStore(create_engine_for(UNREACHABLE), "db")
    source = tmp_path / "in.bin"
    source.write_bytes(b"data")

    with pytest.raises(BlobStoreError, match="OperationalError"):
        store.put_file(source)
    with pytest.raises(BlobStoreError):
        store.ping()


def _terminate_other_sessions(database: str) -> int:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        killed = connection.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": database},
        ).scalar_one()
    admin.dispose()
    return int(killed)


def test_pool_recovers_after_server_side_disconnect(pg_url: str) -> None:
    """What a server restart does to a pool: every pooled connection dies under it."""
    engine: Engine = create_engine_for(pg_url, pool_size=2)
    index = SqlIndex(engine)
    index.ping()
    assert _terminate_other_sessions(pg_url.rsplit("/", 1)[1]) >= 1

    index.ping()  # pre-ping notices the dead connection and opens a new one
    engine.dispose()


def test_head_revision_matches_migrated_database(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
