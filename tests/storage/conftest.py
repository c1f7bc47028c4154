"""Engines migrated to head on both databases, an index on them, and instance metadata builders."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.blobs.base import BlobStore
from storage.blobs.database import DatabaseBlobStore
from storage.blobs.filesystem import FilesystemBlobStore
from storage.db import create_engine_for, upgrade_to_head
from storage.index import SqlIndex
from storage.models import Blob
from storage.records import (
    BlobRef,
    InstanceAttrs,
    InstanceMeta,
    PatientAttrs,
    SeriesAttrs,
    StorageMode,
    StudyAttrs,
)


def migrated_engine(url: str, pool_size: int = 10) -> Engine:
    engine = create_engine_for(url, pool_size=pool_size)
    upgrade_to_head(engine)
    return engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = migrated_engine(db_url, pool_size=16)
    yield engine
    engine.dispose()


@pytest.fixture
def index(engine: Engine) -> SqlIndex:
    # A small batch makes the tests cross several pages with a handful of rows.
    return SqlIndex(engine, batch_size=3)


@pytest.fixture(params=["file", "db-sqlite", "db-postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """Every blob store backend, the database one on both databases."""
    if request.param == "file":
        yield FilesystemBlobStore(tmp_path / "blobs", "primary-fs")
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "db-sqlite" else "pg_url")
    engine = migrated_engine(url)
    yield DatabaseBlobStore(engine, "primary-db")
    engine.dispose()


def backdate(store: BlobStore, ref: BlobRef, seconds: float) -> None:
    """Make a blob look written `seconds` ago, the way each backend records its age."""
    if isinstance(store, FilesystemBlobStore):
        path = store.root / ref.key[:2] / ref.key[2:4] / ref.key
        then = path.stat().st_mtime - seconds
        os.utime(path, (then, then))
    elif isinstance(store, DatabaseBlobStore):
        with store._engine.begin() as connection:
            connection.execute(
                sa.update(Blob)
                .where(Blob.key == ref.key)
                .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds))
            )
    else:
        raise TypeError(type(store))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()




def build_meta(
    sop_uid: str = "1.2.3.4.1",
    *,
    content: str = "v1",
    study_uid: str = "1.2.3",
    series_uid: str = "1.2.3.4",
    patient_id: str = "PAT1",
    modality: str = "CT",
    original_size: int = 1000,
    stored_size: int = 400,
) -> InstanceMeta:
    """Metadata of one instance; `content` stands for the received bytes (its sha256 differs)."""
    return InstanceMeta(
        patient=PatientAttrs(
            patient_id=patient_id,
            issuer_of_patient_id="",
            patient_name="Doe^Jane",
            birth_date="19700101",
            sex="F",
        ),
        study=StudyAttrs(
            study_instance_uid=study_uid,
            study_date="20240105",
            study_time="101500",
            accession_number="ACC1",
            study_id="1",
            study_description="CT HEAD",
            referring_physician_name=None,
        ),
        series=SeriesAttrs(
            series_instance_uid=series_uid,
            modality=modality,
            series_number=2,
            series_description="AXIAL",
            body_part_examined="HEAD",
        ),
        instance=InstanceAttrs(
            sop_instance_uid=sop_uid,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            instance_number=1,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            specific_character_set="ISO_IR 100",
            rows=512,
            columns=512,
            number_of_frames=1,
            bits_allocated=16,
            bits_stored=12,
            photometric_interpretation="MONOCHROME2",
            storage_mode=StorageMode.COMPRESSED,
            codec_id="jpegls",
            codec_version=1,
            original_size=original_size,
            stored_size=stored_size,
            dataset_sha256=sha(f"{sop_uid}/{content}"),
            pixel_sha256=sha(f"{sop_uid}/{content}/pixels"),
            received_at=dt.datetime(2024, 1, 5, 10, 16, tzinfo=dt.UTC),
            calling_ae_title="CT1",
        ),
    )


def build_blob(key: str, size: int = 400, store: str = "primary-fs") -> BlobRef:
    return BlobRef(store=store, key=key, size=size, sha256=sha(key))


# Fixtures rather than imports, so that test modules do not depend on how pytest imports them.
@pytest.fixture
def make_meta() -> Callable[..., InstanceMeta]:
    return build_meta


@pytest.fixture
def make_blob() -> Callable[..., BlobRef]:
    return build_blob


@pytest.fixture
def make_old() -> Callable[[BlobStore, BlobRef, float], None]:
    return backdate
