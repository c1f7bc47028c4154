"""Blobs as files under one root directory, written durably (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, ClassVar

from storage.blobs.base import BlobNotFound, BlobStoreError
from storage.records import BlobRef

COPY_CHUNK = 1024 * 1024
_KEY = re.compile(r"[0-9a-f]{32}")


class FilesystemBlobStore:
    scheme: ClassVar[str] = "file"

    def __init__(self, root: Path, name: str, *, create_root: bool = True) -> None:
        """`create_root=False` for a mounted volume: an absent root then means the volume is not
        mounted, and blobs must not silently land on the disk underneath the mount point."""
        self.root = root
        self.name = name
        self._create_root = create_root
        self._tmp = root / "tmp"

    def put_file(self, path: Path) -> BlobRef:
        key = uuid.uuid4().hex
        final = self._path(key)
        with self._errors(f"store {path}", missing_is_not_found=False):
            self._prepare()
            temp = self._tmp / f"{key}.part"
            digest = hashlib.sha256()
            size = 0
            try:
                with path.open("rb") as source, temp.open("xb") as target:
                    while chunk := source.read(COPY_CHUNK):
                        digest.update(chunk)
                        target.write(chunk)
                        size += len(chunk)
                    target.flush()
                    os.fsync(target.fileno())
                self._make_dirs(final.parent)
                os.replace(temp, final)
            except BaseException:
                # Free the space of a partial copy; the original error is the one worth reporting.
                with suppress(OSError):
                    temp.unlink(missing_ok=True)
                raise
            # The rename is only durable once the directory entry itself is on disk.
            _fsync_dir(final.parent)
        return BlobRef(store=self.name, key=key, size=size, sha256=digest.hexdigest())

    def open(self, ref: BlobRef) -> BinaryIO:
        with self._errors(f"open blob {ref.key}"):
            return self._path(ref.key).open("rb")

    def read_range(self, ref: BlobRef, start: int, length: int) -> bytes:
        """Up to `length` bytes from `start` (fewer at the end of the blob)."""
        if start < 0 or length < 0:
            raise ValueError("start and length must not be negative")
        with self.open(ref) as stream, self._errors(f"read blob {ref.key}"):
            stream.seek(start)
            return stream.read(length)

    def delete(self, ref: BlobRef) -> None:
        self.delete_key(ref.key)

    def delete_key(self, key: str) -> None:
        with self._errors(f"delete blob {key}"):
            self._path(key).unlink()

    def exists(self, ref: BlobRef) -> bool:
        if not _KEY.fullmatch(ref.key):
            return False
        with self._errors(f"look up blob {ref.key}"):
            return self._path(ref.key).is_file()

    def ping(self) -> None:
        with self._errors("check the store is writable", missing_is_not_found=False):
            self._prepare()
            probe = self._tmp / f"ping-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()

    def iter_keys_older_than(self, seconds: float) -> Iterator[str]:
        cutoff = time.time() - seconds
        with self._errors("list blobs", missing_is_not_found=False):
            if not self.root.is_dir():
                return
            for level1 in _subdirs(self.root):
                for level2 in _subdirs(level1):
                    yield from _keys_older_than(level2, cutoff)

    def _path(self, key: str) -> Path:
        # Keys come back from the index; never let one name a path outside the root.
        if not _KEY.fullmatch(key):
            raise BlobNotFound(f"blob store {self.name!r}: {key!r} is not a key of this store")
        return self.root / key[:2] / key[2:4] / key

    def _prepare(self) -> None:
        if not self._create_root and not self.root.is_dir():
            raise BlobStoreError(
                f"blob store {self.name!r}: root {self.root} does not exist (is the volume mounted?)"
            )
        self._make_dirs(self._tmp)

    def _make_dirs(self, directory: Path) -> None:
        """Create missing directories, syncing each new entry's parent so it survives a crash."""
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                if not new.is_dir():
                    raise
                continue  # another thread created it first
            _fsync_dir(new.parent)

    @contextmanager
    def _errors(self, what: str, *, missing_is_not_found: bool = True) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as error:
            if not missing_is_not_found:
                raise BlobStoreError(
                    f"blob store {self.name!r} at {self.root}: cannot {what}: {error}"
                ) from error
            raise BlobNotFound(f"blob store {self.name!r}: cannot {what}: {error}") from error
        except OSError as error:
            message = f"blob store {self.name!r} at {self.root}: cannot {what}: {error}"
            raise BlobStoreError(message) from error


def _subdirs(directory: Path) -> Iterator[Path]:
    with os.scandir(directory) as entries:
        names = sorted(e.name for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False))
    for name in names:
        yield directory / name


def _keys_older_than(directory: Path, cutoff: float) -> Iterator[str]:
    with os.scandir(directory) as entries:
        for entry in entries:
            if not _KEY.fullmatch(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                    yield entry.name
            except FileNotFoundError:
                continue  # deleted while we listed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
