"""The header of a stored instance (every element before Pixel Data), read from its blob's shell.

Only the shell's prefix is decompressed, never the pixel section, so answering a C-FIND key
from a stored header costs one small read whatever the size of the image.
"""

from __future__ import annotations

import io
import zlib
from typing import IO, cast

import zstandard
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from gateway import syntaxes
from gateway.instance_blob import BlobFormatError, Section, read_footer
from storage.blobs.base import BlobStore
from storage.records import BlobRef

# Pixel Data and its float variants, (7FE0,0008) to (7FE0,0010): the header ends before them.
_FIRST_PIXEL_TAG = 0x7FE00008


def _before_pixels(tag: int, _vr: str | None, _length: int) -> bool:
    return tag >= _FIRST_PIXEL_TAG


def read_header(blobs: BlobStore, blob: BlobRef, transfer_syntax_uid: str) -> Dataset:
    """The stored header; BlobFormatError when the blob is not a readable instance blob."""
    with blobs.open(blob) as fp:
        footer, shell_start = read_footer(cast(IO[bytes], fp))
        section = cast(IO[bytes], Section(cast(IO[bytes], fp), shell_start, footer.shell_stored_length))
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(section, read_across_frames=True)
            prefix = reader.read(footer.prefix_length)
        except zstandard.ZstdError as exc:
            raise BlobFormatError(f"corrupt instance blob shell: {exc}") from exc
    syntax = UID(transfer_syntax_uid)
    if syntax == syntaxes.DEFLATED:
        # A deflated dataset is kept whole, as one raw deflate stream of explicit little endian.
        try:
            prefix = zlib.decompress(prefix, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise BlobFormatError(f"corrupt deflated dataset: {exc}") from exc
        implicit, little = False, True
    else:
        implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    try:
        return read_dataset(io.BytesIO(prefix), implicit, little, stop_when=_before_pixels)
    except (ValueError, EOFError, KeyError) as exc:
        raise BlobFormatError(f"stored header does not parse: {exc}") from exc
