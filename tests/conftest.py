"""Shared fixtures: the real corpus, and throwaway databases on the real PostgreSQL server."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = Path(os.environ.get("PACSGW_CORPUS", REPO_ROOT.parent / "shared" / "corpus"))
PG_ADMIN_URL = os.environ.get(
    "PACSGW_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    entry: dict[str, Any]

    @property
    def relpath(self) -> str:
        return str(self.entry["path"])

    @property
    def needs_force(self) -> bool:
        return bool(self.entry.get("read_kwargs"))


def load_corpus() -> list[CorpusFile]:
    manifest = json.loads((CORPUS_DIR / "manifest.json").read_text())
    return [CorpusFile(CORPUS_DIR / e["path"], e) for e in manifest]


@pytest.fixture(scope="session")
def corpus() -> list[CorpusFile]:
    if not (CORPUS_DIR / "manifest.json").is_file():
        pytest.fail(f"the DICOM corpus is missing at {CORPUS_DIR}")
    return load_corpus()


def _create_database(name: str) -> str:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_database(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a new, empty database on the real PostgreSQL server; dropped afterwards."""
    name = f"pacsgw_test_{uuid.uuid4().hex[:12]}"
    url = _create_database(name)
    try:
        yield url
    finally:
        _drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using it runs on both embedded SQLite and the real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite'}"
    else:
        name = f"pacsgw_test_{uuid.uuid4().hex[:12]}"
        url = _create_database(name)
        try:
            yield url
        finally:
            _drop_database(name)
