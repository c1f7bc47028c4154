"""DICOM RLE Lossless (PS3.5 Annex G) through pylibjpeg-rle."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
from rle.utils import decode_pixel_data, encode_pixel_data

from ..base import Capabilities, CodecError, CorruptBitstream, PixelSpec
from .common import DICOM_MAX_DIMENSION, checked_frame, require_coding_spec

__all__ = ["RLE_LOSSLESS_UID", "RleCodec"]

RLE_LOSSLESS_UID = "1.2.840.10008.1.2.5"

_HEADER = struct.Struct("<16I")  # segment count, then 15 segment offsets (PS3.5 G.5)


class RleCodec:
    """One frame as PS3.5 Annex G codes it: the 64-byte header, then one PackBits segment per
    byte of each sample, most significant byte first, each row coded on its own.

    The segments follow Bits Allocated, not Bits Stored (G.2), so the payload is always an RLE
    Lossless (1.2.840.10008.1.2.5) fragment for a frame of the coding spec. pylibjpeg-rle passes
    Rows and Columns as 16-bit integers and takes 1 or 3 samples (at most 15 segments).
    """

    codec_id: str = "rle"
    bitstream_version: int = 1
    transfer_syntax_uid: str | None = RLE_LOSSLESS_UID
    capabilities: Capabilities = Capabilities(
        lossless=True,
        samples_per_pixel=frozenset({1, 3}),
        bits_allocated=frozenset({8, 16, 32}),
        max_dimension=DICOM_MAX_DIMENSION,
    )

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> bytes:
        require_coding_spec(frame, spec, self.capabilities)
        try:
            # Takes sample-interleaved words in the given byte order.
            return encode_pixel_data(np.ascontiguousarray(frame).tobytes(), rows=spec.rows, columns=spec.columns,
                                     samples_per_pixel=spec.samples_per_pixel,
                                     bits_allocated=spec.bits_allocated, byteorder="<")
        except Exception as exc:  # the Rust extension raises ValueError, OverflowError and others
            raise CodecError(f"RLE encoding failed: {exc}") from exc

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        _check_header(payload, spec)
        try:
            decoded = decode_pixel_data(payload, version=2, rows=spec.rows, columns=spec.columns,
                                        bits_allocated=spec.bits_allocated, byteorder="<")
        except BaseException as exc:
            # A segment that runs past its end makes the Rust decoder panic, and pyo3 raises its
            # PanicException, which derives from BaseException, not Exception.
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            raise CorruptBitstream(f"RLE decoding failed: {exc}") from exc
        if len(decoded) != spec.frame_nbytes:
            raise CorruptBitstream(f"RLE decoded {len(decoded)} bytes, expected {spec.frame_nbytes}")
        words = np.frombuffer(decoded, dtype=spec.unsigned_dtype)
        # Decoded colour comes back plane by plane (Planar Configuration 1).
        planes = words.reshape(spec.samples_per_pixel, spec.rows, spec.columns)
        frame = planes[0] if spec.samples_per_pixel == 1 else planes.transpose(1, 2, 0)
        return checked_frame(frame, spec, spec.unsigned_dtype, "RLE")


def _check_header(payload: bytes, spec: PixelSpec) -> None:
    if len(payload) < _HEADER.size:
        raise CorruptBitstream(f"RLE payload of {len(payload)} bytes is shorter than its header")
    count, *offsets = _HEADER.unpack_from(payload)
    expected = spec.samples_per_pixel * spec.bits_allocated // 8
    if count != expected:
        raise CorruptBitstream(f"RLE header names {count} segments, expected {expected}")
    used = offsets[:count]
    ordered = used[0] == _HEADER.size and all(a < b for a, b in zip(used, used[1:])) and used[-1] < len(payload)
    if not ordered or any(offsets[count:]):
        raise CorruptBitstream(f"RLE segment offsets {used} do not fit a payload of {len(payload)} bytes")
