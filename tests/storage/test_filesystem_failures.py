"""The filesystem store turns every failed write into BlobStoreError, and leaves nothing behind.

Tests run as root, and root ignores permission bits, so a chmod'ed directory would not fail a
write. Each test below uses something even root cannot write through.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.blobs.base import BlobNotFound, BlobStoreError
from storage.blobs.filesystem import FilesystemBlobStore


def source(tmp_path: Path, size: int = 4096) -> Path:
    path = tmp_path / "in.bin"
    path.write_bytes(os.urandom(size))
    return path


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def make_immutable(directory: Path) -> None:
    """The immutable attribute: no entry can be added to the directory, not even by root."""
    if shutil.which("chattr") is None:
        pytest.fail("chattr is not installed")
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.fail("this filesystem does not support the immutable attribute")


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "immutable"
    directory.mkdir()
    make_immutable(directory)
    yield directory
    subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_read_only_root(immutable_dir: Path, tmp_path: Path) -> None:
    store = FilesystemBlobStore(immutable_dir / "blobs", "fs")

    with pytest.raises(BlobStoreError, match="Operation not permitted"):
        store.put_file(source(tmp_path))
    with pytest.raises(BlobStoreError):
        store.ping()


def test_read_only_tmp_directory(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = FilesystemBlobStore(root, "fs")
    store.ping()  # creates root/tmp
    make_immutable(root / "tmp")
    try:
        with pytest.raises(BlobStoreError) as raised:
            store.put_file(source(tmp_path))
        assert not isinstance(raised.value, BlobNotFound)
        assert isinstance(raised.value.__cause__, OSError)
    finally:
        subprocess.run(["chattr", "-i", str(root / "tmp")], check=True)
    assert stored_files(root) == []


def test_tmp_is_not_a_directory(tmp_path: Path) -> None:
    """Works wherever chattr does not: a regular file where the store needs its tmp directory."""
    root = tmp_path / "blobs"
    root.mkdir()
    (root / "tmp").write_bytes(b"in the way")
    store = FilesystemBlobStore(root, "fs")

    with pytest.raises(BlobStoreError, match="cannot store"):
        store.put_file(source(tmp_path))
    with pytest.raises(BlobStoreError):
        store.ping()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, so that a write really ends with ENOSPC."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full(tiny_tmpfs: Path, tmp_path: Path) -> None:
    store = FilesystemBlobStore(tiny_tmpfs / "blobs", "fs")

    with pytest.raises(BlobStoreError, match="No space left on device"):
        store.put_file(source(tmp_path, size=1024 * 1024))
    # The partial temp file is gone, so the space is free again for the next instance.
    assert stored_files(tiny_tmpfs) == []
    small = store.put_file(source(tmp_path, size=1024))
    assert store.exists(small)


def test_missing_mount(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "not-mounted", "nas", create_root=False)

    with pytest.raises(BlobStoreError, match="is the volume mounted"):
        store.put_file(source(tmp_path))
    with pytest.raises(BlobStoreError, match="is the volume mounted"):
        store.ping()
    assert not (tmp_path / "not-mounted").exists()


def test_missing_source_file_is_a_store_error(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs", "fs")

    with pytest.raises(BlobStoreError) as raised:
        store.put_file(tmp_path / "no-such-spool-file")
    assert not isinstance(raised.value, BlobNotFound)


def test_blob_layout_and_no_leftover_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = FilesystemBlobStore(root, "fs")

    ref = store.put_file(source(tmp_path))

    assert (root / ref.key[:2] / ref.key[2:4] / ref.key).is_file()
    assert list((root / "tmp").iterdir()) == []
