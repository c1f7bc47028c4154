"""The blob store contract: plain keyed bytes that know nothing of DICOM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, ClassVar, Protocol

from storage.records import BlobRef


class BlobStoreError(Exception):
    """The store cannot complete the operation (unreachable, read-only, full, ...)."""


class BlobNotFound(BlobStoreError):
    """No blob under this key."""


class BlobStore(Protocol):
    name: str  # the configured store name, copied into every BlobRef
    scheme: ClassVar[str]  # "file" | "db"

    def put_file(self, path: Path) -> BlobRef:
        """Store the file's bytes durably (fsync / commit) under a new key, reading in bounded chunks."""
        ...

    def open(self, ref: BlobRef) -> BinaryIO:
        """A readable, seekable stream of the blob's bytes (caller closes it)."""
        ...

    def read_range(self, ref: BlobRef, start: int, length: int) -> bytes: ...

    def delete(self, ref: BlobRef) -> None: ...

    def exists(self, ref: BlobRef) -> bool: ...

    def ping(self) -> None:
        """Raise BlobStoreError when the store is not usable for writing (for /readyz)."""
        ...

    def iter_keys_older_than(self, seconds: float) -> Iterator[str]:
        """Keys of blobs written at least `seconds` ago (for the orphan sweep)."""
        ...

    def delete_key(self, key: str) -> None: ...
