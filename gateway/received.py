"""A received dataset in its spool file: File Meta, the dataset's byte range, header and pixel element."""

from __future__ import annotations

import hashlib
import mmap
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from gateway import syntaxes
from gateway.dataset_layout import PixelElement, walk_dataset
from gateway.errors import CannotUnderstand

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ReceivedDataset:
    path: Path
    dataset_offset: int  # first byte of the dataset (after preamble and File Meta)
    dataset_length: int
    transfer_syntax: UID
    header: Dataset  # every element before the pixel element
    pixel: PixelElement | None  # None for objects without pixel data, or when not splittable

    @property
    def splittable(self) -> bool:
        """Deflated datasets are one compressed stream: they are kept whole."""
        return self.transfer_syntax != syntaxes.DEFLATED


def _dataset_offset(path: Path) -> tuple[int, UID]:
    with path.open("rb") as fp:
        preamble = fp.read(132)
        if len(preamble) < 132 or preamble[128:] != b"DICM":
            raise CannotUnderstand("spool file has no DICOM File Meta")
        meta = pydicom.filereader._read_file_meta_info(fp)  # noqa: SLF001 - no public offset API
        offset = fp.tell()
    syntax = meta.get("TransferSyntaxUID")
    if not syntax:
        raise CannotUnderstand("no transfer syntax in File Meta")
    return offset, UID(syntax)


def open_received(path: Path) -> ReceivedDataset:
    """Parse the header and check the structure of the dataset in a spool file.

    Raises CannotUnderstand for anything that is not a well-formed dataset.
    """
    try:
        offset, syntax = _dataset_offset(path)
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError) as exc:
        raise CannotUnderstand(f"unreadable File Meta: {exc}") from exc
    size = path.stat().st_size
    if size <= offset:
        raise CannotUnderstand("empty dataset")
    pixel: PixelElement | None = None
    if not syntaxes.is_known(syntax):
        raise CannotUnderstand(f"unsupported transfer syntax {syntax}")
    if syntax != syntaxes.DEFLATED:
        implicit, little = syntaxes.encoding(syntax)
        with path.open("rb") as fp, mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pixel = walk_dataset(buf, offset, size, implicit_vr=implicit, little_endian=little)
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:  # pydicom raises many types for bad data
        raise CannotUnderstand(f"cannot parse dataset: {exc}") from exc
    return ReceivedDataset(path, offset, size - offset, syntax, header, pixel)


def dataset_sha256(received: ReceivedDataset) -> str:
    digest = hashlib.sha256()
    with received.path.open("rb") as fp:
        fp.seek(received.dataset_offset)
        while chunk := fp.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
