"""A blob store wrapper that reports each operation's latency and failures to a callback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, ClassVar

from storage.blobs.base import BlobStore, BlobStoreError
from storage.records import BlobRef

# store name, operation, seconds, whether it failed
BlobObserver = Callable[[str, str, float, bool], None]


class ObservedBlobStore:
    """Every operation of `inner`, timed; `get` covers opening a blob and reading a range of it.

    Only BlobStoreError counts as a failure: anything else is a bug of the caller, not the store's.
    """

    scheme: ClassVar[str] = "observed"

    def __init__(self, inner: BlobStore, observe: BlobObserver) -> None:
        self.inner = inner
        self.name = inner.name
        self._observe = observe

    @contextmanager
    def _timed(self, op: str) -> Iterator[None]:
        started = time.perf_counter()
        failed = False
        try:
            yield
        except BlobStoreError:
            failed = True
            raise
        finally:
            self._observe(self.name, op, time.perf_counter() - started, failed)

    def put_file(self, path: Path) -> BlobRef:
        with self._timed("put"):
            return self.inner.put_file(path)

    def open(self, ref: BlobRef) -> BinaryIO:
        with self._timed("get"):
            return self.inner.open(ref)

    def read_range(self, ref: BlobRef, start: int, length: int) -> bytes:
        with self._timed("get"):
            return self.inner.read_range(ref, start, length)

    def delete(self, ref: BlobRef) -> None:
        with self._timed("delete"):
            self.inner.delete(ref)

    def exists(self, ref: BlobRef) -> bool:
        with self._timed("exists"):
            return self.inner.exists(ref)

    def ping(self) -> None:
        with self._timed("ping"):
            self.inner.ping()

    def iter_keys_older_than(self, seconds: float) -> Iterator[str]:
        # A lazy listing: time only the part that fails fast (opening the listing), not the
        # caller's work between keys.
        with self._timed("list"):
            keys = iter(self.inner.iter_keys_older_than(seconds))
            first = next(keys, None)
        if first is None:
            return
        yield first
        yield from keys

    def delete_key(self, key: str) -> None:
        with self._timed("delete"):
            self.inner.delete_key(key)
