"""Rebuild stored instances exactly as received, and verify them against the index."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from gateway.instance_blob import BlobFormatError, rebuild
from storage.blobs.base import BlobStore, BlobStoreError
from storage.index import SqlIndex
from storage.records import StoredInstance

log = logging.getLogger(__name__)


class RebuildError(Exception):
    """The stored instance cannot be rebuilt as received."""


def rebuild_instance(blobs: BlobStore, stored: StoredInstance, sink: Callable[[bytes], Any]) -> None:
    """Stream the dataset bytes as received (no File Meta) into `sink`; RebuildError on any mismatch."""
    try:
        with blobs.open(stored.blob) as fp:
            rebuild_checked(fp, stored, sink)
    except (BlobStoreError, OSError) as exc:
        raise RebuildError(str(exc)) from exc


def rebuild_checked(fp: IO[bytes], stored: StoredInstance, sink: Callable[[bytes], Any]) -> None:
    """`rebuild_instance` on an open blob: the bytes go to `sink`, then the SHA-256 is checked."""
    digest = hashlib.sha256()

    def both(chunk: bytes) -> None:
        digest.update(chunk)
        sink(chunk)

    try:
        footer = rebuild(fp, both)
    except (BlobFormatError, OSError) as exc:
        raise RebuildError(str(exc)) from exc
    if footer.dataset_sha256 != stored.dataset_sha256 or digest.hexdigest() != stored.dataset_sha256:
        raise RebuildError("rebuilt dataset differs from the SHA-256 recorded at ingest")


@dataclass
class VerifySummary:
    checked: int = 0
    failures: list[tuple[StoredInstance, str]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.checked - len(self.failures)


def verify(
    index: SqlIndex, blobs: BlobStore, *, study_instance_uid: str | None = None
) -> Iterator[tuple[StoredInstance, str | None]]:
    """Rebuild every stored revision (or those of one study); yield each with its failure, if any."""
    for stored in index.iter_instances(study_instance_uid=study_instance_uid):
        try:
            rebuild_instance(blobs, stored, lambda _chunk: None)
        except RebuildError as exc:
            log.error("stored instance does not verify", extra={"fields": {"error": str(exc)}})
            yield stored, str(exc)
        else:
            yield stored, None
