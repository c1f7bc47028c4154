"""JPEG XL lossless (ISO/IEC 18181) through libjxl (imagecodecs)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from imagecodecs import jpegxl_decode, jpegxl_encode  # bound at import: see jpeg2000.py

from ..base import Capabilities, CodecError, CorruptBitstream, PixelSpec
from .common import DICOM_MAX_DIMENSION, checked_frame, narrowed, require_coding_spec, sample_dtype

__all__ = ["JPEG_XL_LOSSLESS_UID", "JpegXlCodec"]

JPEG_XL_LOSSLESS_UID = "1.2.840.10008.1.2.4.110"

_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")  # bare codestream, ISO/IEC 18181-2 container


class JpegXlCodec:
    """JPEG XL lossless (modular mode, distance 0) at a chosen encoder effort.

    The effort (1 fastest .. 9 smallest) only steers the encoder: every effort writes the same
    bitstream format, so one registered instance decodes them all. bits_per_sample in the image
    header is the coding spec's Bits Stored (libjxl takes it as is, not rescaled, and returns the
    stored values; words of at most 8 bits are handed over as bytes since libjxl refuses 16-bit
    words declared with fewer than 9 bits). Up to 12 bits the payload is a bare codestream; above,
    libjxl needs codestream level 10 and wraps the codestream in the ISO/IEC 18181-2 container,
    whose `jxll` box is the only place to signal that level.
    """

    codec_id: str = "jpeg-xl"
    bitstream_version: int = 1
    transfer_syntax_uid: str | None = JPEG_XL_LOSSLESS_UID
    capabilities: Capabilities = Capabilities(
        lossless=True,
        samples_per_pixel=frozenset({1, 3}),
        bits_allocated=frozenset({8, 16}),
        max_dimension=DICOM_MAX_DIMENSION,
    )

    def __init__(self, effort: int = 7) -> None:
        if isinstance(effort, bool) or not isinstance(effort, int) or not 1 <= effort <= 9:
            raise ValueError(f"JPEG XL effort must be an integer from 1 to 9, not {effort!r}")
        self.effort = effort

    def __repr__(self) -> str:
        return f"JpegXlCodec(effort={self.effort})"

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> bytes:
        require_coding_spec(frame, spec, self.capabilities)
        samples = narrowed(frame, spec.bits_stored)
        try:
            stream = jpegxl_encode(samples, lossless=True, effort=self.effort, bitspersample=spec.bits_stored,
                                   numthreads=1)
        except Exception as exc:  # imagecodecs raises JpegxlError, ValueError and others
            raise CodecError(f"JPEG XL encoding failed: {exc}") from exc
        return bytes(stream)

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        if not payload.startswith(_SIGNATURES):
            raise CorruptBitstream("JPEG XL payload starts with neither a codestream nor a container signature")
        try:
            decoded = jpegxl_decode(payload, numthreads=1)
        except Exception as exc:
            raise CorruptBitstream(f"JPEG XL decoding failed: {exc}") from exc
        return checked_frame(decoded, spec, sample_dtype(spec.bits_stored), "JPEG XL")
