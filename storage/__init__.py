"""Metadata index (SQLAlchemy) and blob stores."""

from storage.blobs.base import BlobNotFound, BlobStore, BlobStoreError
from storage.blobs.database import DatabaseBlobStore
from storage.blobs.filesystem import FilesystemBlobStore
from storage.db import (
    IndexUnavailable,
    alembic_config,
    create_engine_for,
    current_revision,
    head_revision,
    upgrade_to_head,
)
from storage.index import IndexCounts, SqlIndex
from storage.records import (
    BlobRef,
    DuplicatePolicy,
    InstanceAttrs,
    InstanceMeta,
    PatientAttrs,
    RecordOutcome,
    RecordResult,
    SeriesAttrs,
    StorageMode,
    StoredInstance,
    StudyAttrs,
)
from storage.sweeper import sweep_orphans

__all__ = [
    "BlobNotFound",
    "BlobRef",
    "BlobStore",
    "BlobStoreError",
    "DatabaseBlobStore",
    "DuplicatePolicy",
    "FilesystemBlobStore",
    "IndexCounts",
    "IndexUnavailable",
    "InstanceAttrs",
    "InstanceMeta",
    "PatientAttrs",
    "RecordOutcome",
    "RecordResult",
    "SeriesAttrs",
    "SqlIndex",
    "StorageMode",
    "StoredInstance",
    "StudyAttrs",
    "alembic_config",
    "create_engine_for",
    "current_revision",
    "head_revision",
    "sweep_orphans",
    "upgrade_to_head",
]
