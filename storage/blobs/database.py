"""Blobs in the database itself: bounded chunks in `blob_chunks`, one transaction per blob."""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Engine

from storage.blobs.base import BlobNotFound, BlobStoreError
from storage.db import describe, for_writing
from storage.models import Blob, BlobChunk
from storage.records import BlobRef

CHUNK_SIZE = 4 * 1024 * 1024

# Rows are written before the digest is known and corrected before commit; nobody sees this value.
_PENDING_SHA256 = "0" * 64

_KEYS_PER_QUERY = 1000


class DatabaseBlobStore:
    scheme: ClassVar[str] = "db"

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self._engine = engine
        self._writer = for_writing(engine)

    def put_file(self, path: Path) -> BlobRef:
        key = uuid.uuid4().hex
        digest = hashlib.sha256()
        size = 0
        with self._errors(f"store {path}"), path.open("rb") as source:
            with self._writer.begin() as connection:
                connection.execute(
                    sa.insert(Blob).values(
                        key=key, size=0, sha256=_PENDING_SHA256, created_at=dt.datetime.now(dt.UTC)
                    )
                )
                seq = 0
                # One chunk in memory at a time, however large the object.
                while data := source.read(CHUNK_SIZE):
                    digest.update(data)
                    size += len(data)
                    connection.execute(sa.insert(BlobChunk).values(blob_key=key, seq=seq, data=data))
                    seq += 1
                connection.execute(
                    sa.update(Blob)
                    .where(Blob.key == key)
                    .values(size=size, sha256=digest.hexdigest())
                )
        return BlobRef(store=self.name, key=key, size=size, sha256=digest.hexdigest())

    def open(self, ref: BlobRef) -> BinaryIO:
        """A buffered stream that fetches one chunk at a time, each in its own short query."""
        with self._errors(f"open blob {ref.key}"), self._engine.connect() as connection:
            if connection.execute(sa.select(Blob.key).where(Blob.key == ref.key)).first() is None:
                raise BlobNotFound(f"blob store {self.name!r}: no blob {ref.key}")
            # Chunk lengths are read from the rows, not assumed, so a blob written with another
            # chunk size still reads back.
            lengths = connection.execute(
                sa.select(BlobChunk.seq, sa.func.length(BlobChunk.data))
                .where(BlobChunk.blob_key == ref.key)
                .order_by(BlobChunk.seq)
            ).all()
        reader = _ChunkReader(
            lambda seq: self._fetch_chunk(ref.key, seq), [int(length) for _, length in lengths]
        )
        return io.BufferedReader(reader, buffer_size=64 * 1024)

    def read_range(self, ref: BlobRef, start: int, length: int) -> bytes:
        """Up to `length` bytes from `start` (fewer at the end of the blob)."""
        if start < 0 or length < 0:
            raise ValueError("start and length must not be negative")
        with self.open(ref) as stream:
            stream.seek(start)
            return stream.read(length)

    def delete(self, ref: BlobRef) -> None:
        self.delete_key(ref.key)

    def delete_key(self, key: str) -> None:
        with self._errors(f"delete blob {key}"), self._writer.begin() as connection:
            connection.execute(sa.delete(BlobChunk).where(BlobChunk.blob_key == key))
            if connection.execute(sa.delete(Blob).where(Blob.key == key)).rowcount == 0:
                raise BlobNotFound(f"blob store {self.name!r}: no blob {key}")

    def exists(self, ref: BlobRef) -> bool:
        with self._errors(f"look up blob {ref.key}"), self._engine.connect() as connection:
            found = connection.execute(sa.select(Blob.key).where(Blob.key == ref.key)).first()
        return found is not None

    def ping(self) -> None:
        """Open a write transaction (SQLite's write lock, PostgreSQL's read-write state), roll back."""
        with self._errors("check the store is writable"), self._writer.connect() as connection:
            with connection.begin() as transaction:
                connection.execute(sa.select(Blob.key).limit(0))
                if connection.dialect.name == "postgresql":
                    read_only = connection.execute(sa.text("SHOW transaction_read_only")).scalar()
                    if read_only == "on":
                        raise BlobStoreError(f"blob store {self.name!r}: the database is read-only")
                transaction.rollback()

    def iter_keys_older_than(self, seconds: float) -> Iterator[str]:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
        after = ""
        while True:
            with self._errors("list blobs"), self._engine.connect() as connection:
                keys = list(
                    connection.scalars(
                        sa.select(Blob.key)
                        .where(Blob.created_at <= cutoff, Blob.key > after)
                        .order_by(Blob.key)
                        .limit(_KEYS_PER_QUERY)
                    )
                )
            yield from keys
            if len(keys) < _KEYS_PER_QUERY:
                return
            after = keys[-1]

    def _fetch_chunk(self, key: str, seq: int) -> bytes:
        with self._errors(f"read blob {key}"), self._engine.connect() as connection:
            data = connection.execute(
                sa.select(BlobChunk.data).where(BlobChunk.blob_key == key, BlobChunk.seq == seq)
            ).scalar()
        if data is None:
            raise BlobNotFound(f"blob store {self.name!r}: blob {key} lost chunk {seq} (deleted?)")
        return bytes(data)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except exc.SQLAlchemyError as error:
            message = f"blob store {self.name!r}: cannot {what}: {describe(error)}"
            raise BlobStoreError(message) from error
        except OSError as error:
            raise BlobStoreError(f"blob store {self.name!r}: cannot {what}: {error}") from error


class _ChunkReader(io.RawIOBase):
    """Seekable raw stream over a blob's chunks, fetching a chunk only when a read reaches it."""

    def __init__(self, fetch: Callable[[int], bytes], lengths: list[int]) -> None:
        super().__init__()
        self._fetch = fetch
        self._lengths = lengths
        self._starts = [0]
        for length in lengths:
            self._starts.append(self._starts[-1] + length)
        self._size = self._starts[-1]
        self._position = 0
        self._cached_seq = -1
        self._cached = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError("negative seek position")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        if self._position >= self._size or len(target) == 0:
            return 0
        seq = bisect.bisect_right(self._starts, self._position) - 1
        if seq != self._cached_seq:
            self._cached = self._fetch(seq)
            self._cached_seq = seq
        offset = self._position - self._starts[seq]
        count = min(len(target), len(self._cached) - offset)
        target[:count] = self._cached[offset : offset + count]
        self._position += count
        return count
