"""Reclaims orphan blobs: written by a put whose index transaction never committed (crash, error)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

from storage.blobs.base import BlobNotFound, BlobStore
from storage.index import SqlIndex

log = logging.getLogger(__name__)

_KEYS_PER_BATCH = 500


def sweep_orphans(index: SqlIndex, store: BlobStore, *, grace_seconds: float) -> int:
    """Delete the store's blobs older than `grace_seconds` that no index row references.

    The grace period must exceed the longest time between a blob put and its index commit (a
    C-STORE in progress); a younger blob may still be about to be referenced. Returns how many
    blobs were removed.
    """
    if grace_seconds < 0:
        raise ValueError("grace_seconds must not be negative")
    removed = 0
    for batch in _batches(store.iter_keys_older_than(grace_seconds)):
        referenced = index.referenced_keys(store.name, batch)
        for key in batch:
            if key in referenced:
                continue
            try:
                store.delete_key(key)
            except BlobNotFound:
                continue  # another replica's sweep got there first
            removed += 1
    if removed:
        log.info("removed orphan blobs", extra={"store": store.name, "count": removed})
    return removed


def _batches(keys: Iterator[str]) -> Iterator[list[str]]:
    # Bounded memory on stores with millions of blobs, and a few hundred keys per index query.
    while batch := list(itertools.islice(keys, _KEYS_PER_BATCH)):
        yield batch
