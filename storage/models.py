"""The index schema: patients, studies, series, instance revisions, and the database blob store.

Alembic migrations are the only way this schema reaches a database; `alembic check` compares them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.records import StorageMode

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-assigns keys to a column declared exactly INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SHA256_LENGTH = 64


class UtcDateTime(sa.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps no offset, returns naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a timezone-aware UTC time is required")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"unexpected {type(value).__name__} for a datetime column")
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def sha256_check(column: str) -> sa.CheckConstraint:
    """64 lowercase hex digits; ltrim with a character set exists on both SQLite and PostgreSQL."""
    return sa.CheckConstraint(
        f"length({column}) = {SHA256_LENGTH} AND ltrim({column}, '0123456789abcdef') = ''",
        name=f"{column}_hex",
    )


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Patient(Base):
    __tablename__ = "patients"
    # The unique constraint's index also answers lookups on patient_id alone (its leading column).
    __table_args__ = (sa.UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[str]
    # "" when the dataset has none, so that the unique constraint treats them as one issuer.
    issuer_of_patient_id: Mapped[str]
    patient_name: Mapped[str | None] = mapped_column(index=True)
    # Case-folded copy that C-FIND matches on (storage.matching.fold_person_name).
    patient_name_folded: Mapped[str | None] = mapped_column(index=True)
    birth_date: Mapped[str | None]
    sex: Mapped[str | None]


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(unique=True)
    patient_pk: Mapped[int] = mapped_column(BigId, sa.ForeignKey("patients.id"), index=True)
    study_date: Mapped[str | None] = mapped_column(index=True)
    study_time: Mapped[str | None]
    accession_number: Mapped[str | None] = mapped_column(index=True)
    study_id: Mapped[str | None]
    study_description: Mapped[str | None]
    referring_physician_name: Mapped[str | None]
    referring_physician_name_folded: Mapped[str | None]


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(unique=True)
    study_pk: Mapped[int] = mapped_column(BigId, sa.ForeignKey("studies.id"), index=True)
    modality: Mapped[str | None] = mapped_column(index=True)
    series_number: Mapped[int | None]
    series_description: Mapped[str | None]
    body_part_examined: Mapped[str | None]


class Instance(Base):
    """One revision of a SOP instance; exactly one revision per UID is current."""

    __tablename__ = "instances"
    __table_args__ = (
        # The arbiter between concurrent writers of the same UID (its index also serves lookups).
        sa.UniqueConstraint("sop_instance_uid", "revision"),
        sa.CheckConstraint("revision >= 1", name="revision_positive"),
        sa.CheckConstraint("original_size >= 0 AND stored_size >= 0 AND blob_size >= 0", name="sizes"),
        sha256_check("dataset_sha256"),
        sha256_check("pixel_sha256"),
        sha256_check("blob_sha256"),
        # The sweeper asks which blob keys are still referenced.
        sa.Index(None, "blob_store", "blob_key"),
        # C-FIND counts the current instances of a batch of series from the index alone.
        sa.Index(None, "series_pk", "is_current"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    series_pk: Mapped[int] = mapped_column(BigId, sa.ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str]
    revision: Mapped[int]
    is_current: Mapped[bool] = mapped_column(index=True)

    sop_class_uid: Mapped[str]
    instance_number: Mapped[int | None]
    transfer_syntax_uid: Mapped[str]
    specific_character_set: Mapped[str | None]
    rows: Mapped[int | None]
    columns: Mapped[int | None]
    number_of_frames: Mapped[int | None]
    bits_allocated: Mapped[int | None]
    bits_stored: Mapped[int | None]
    photometric_interpretation: Mapped[str | None]
    storage_mode: Mapped[StorageMode] = mapped_column(
        sa.Enum(
            StorageMode,
            name="storage_mode",
            native_enum=False,
            create_constraint=True,
            length=32,  # room for modes added later without widening the column
            values_callable=lambda modes: [mode.value for mode in modes],
        )
    )
    codec_id: Mapped[str | None]
    codec_version: Mapped[int | None]
    original_size: Mapped[int] = mapped_column(sa.BigInteger)
    stored_size: Mapped[int] = mapped_column(sa.BigInteger)
    dataset_sha256: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH))
    pixel_sha256: Mapped[str | None] = mapped_column(sa.String(SHA256_LENGTH))
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    calling_ae_title: Mapped[str]
    # codec_error | verification_failed | worker_lost: compression was planned, pixels kept as received.
    compression_fallback: Mapped[str | None] = mapped_column(sa.String(32))
    # The compression policy rule that matched and what it did (lossless | roi-hybrid | keep);
    # NULL for rows stored before the policy existed.
    policy_rule: Mapped[str | None] = mapped_column(sa.String(48))
    policy_mode: Mapped[str | None] = mapped_column(sa.String(16))
    # ROI-hybrid instances are derived ones: the UID the modality sent (C-FIND and retrieval by that
    # UID find them), and the figures of what the coding altered; NULL for every other instance.
    source_sop_instance_uid: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    roi_fraction: Mapped[float | None] = mapped_column(sa.Float)
    roi_max_error: Mapped[int | None]
    roi_psnr_db: Mapped[float | None] = mapped_column(sa.Float)
    roi_psnr_outside_db: Mapped[float | None] = mapped_column(sa.Float)
    roi_ratio: Mapped[float | None] = mapped_column(sa.Float)

    blob_store: Mapped[str]
    blob_key: Mapped[str]
    blob_size: Mapped[int] = mapped_column(sa.BigInteger)
    blob_sha256: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH))


class IndexTotals(Base):
    """Running totals kept in the recording transaction, so a metrics scrape reads a few rows.

    Writers add to one of several stripe rows picked at random, so that concurrent associations
    on PostgreSQL do not all queue on a single row lock; readers sum the stripes.
    """

    __tablename__ = "index_totals"

    stripe: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    instances: Mapped[int] = mapped_column(sa.BigInteger)
    revisions: Mapped[int] = mapped_column(sa.BigInteger)
    studies: Mapped[int] = mapped_column(sa.BigInteger)
    series: Mapped[int] = mapped_column(sa.BigInteger)
    stored_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    original_bytes: Mapped[int] = mapped_column(sa.BigInteger)


class Blob(Base):
    """A blob of the database blob store; its bytes are in blob_chunks."""

    __tablename__ = "blobs"
    __table_args__ = (
        sha256_check("sha256"),
        sa.CheckConstraint("size >= 0", name="size_nonnegative"),
    )

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)


class BlobChunk(Base):
    """Bounded slices of a blob, so neither side ever holds a large object in memory at once."""

    __tablename__ = "blob_chunks"

    blob_key: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("blobs.key", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)


class ArchiveWork(Base):
    """Archive recompression of one instance revision: queued once its series has gone quiet.

    The row is the whole memory of the work, so a restart resumes it: `running` rows whose lease
    has expired belong to a worker that died and are claimed again.
    """

    __tablename__ = "archive_work"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'done', 'kept', 'skipped', 'failed')", name="state"
        ),
        sa.CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )

    instance_pk: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    # pending | running | done (swapped) | kept (not smaller) | skipped (superseded) | failed
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    attempts: Mapped[int]
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    codec_id: Mapped[str | None] = mapped_column(sa.String(32))
    codec_version: Mapped[int | None]
    size_before: Mapped[int | None] = mapped_column(sa.BigInteger)
    size_after: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_error: Mapped[str | None] = mapped_column(sa.String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ArchiveControl(Base):
    """The archive worker's one row of shared state: the pause flag and how far it has looked."""

    __tablename__ = "archive_control"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    paused: Mapped[bool]
    # Every instance with a smaller id has been queued or found ineligible, so a poll reads only
    # the rows received since, never the whole table.
    scanned_through: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class RetiredBlob(Base):
    """A blob an archive swap replaced: kept until `delete_after`, so that a retrieval which
    located it just before the swap can still read it; the sweeper leaves it alone until then."""

    __tablename__ = "retired_blobs"
    __table_args__ = (sa.UniqueConstraint("blob_store", "blob_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    blob_store: Mapped[str]
    blob_key: Mapped[str]
    delete_after: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
