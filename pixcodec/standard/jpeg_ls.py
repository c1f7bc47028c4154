"""JPEG-LS lossless (ISO/IEC 14495-1) through CharLS (pyjpegls)."""

from __future__ import annotations

from typing import Any

import _CharLS  # pyjpegls' extension module: encode_buffer refuses the padded input below
import jpeg_ls
import numpy as np
import numpy.typing as npt

from ..base import Capabilities, CodecError, CorruptBitstream, PixelSpec
from .common import checked_frame, require_coding_spec

__all__ = ["JPEG_LS_LOSSLESS_UID", "JpegLsCodec"]

JPEG_LS_LOSSLESS_UID = "1.2.840.10008.1.2.4.80"

# pyjpegls sizes CharLS's output buffer at twice the input; the headers alone (~30 bytes) overflow
# that for tiny frames, so short inputs are padded (CharLS ignores input past the image).
_MIN_SOURCE_BYTES = 1024
_EOI = b"\xff\xd9"


class JpegLsCodec:
    """JPEG-LS lossless as CharLS writes it: a plain codestream, no SPIFF header.

    The codestream carries the real sample precision P (the coding spec's Bits Stored, at least 2
    as JPEG-LS requires), so for unsigned frames whose bits above Bits Stored are clear the payload
    is exactly what DICOM JPEG-LS Lossless (1.2.840.10008.1.2.4.80) expects in a fragment.
    """

    codec_id: str = "jpeg-ls"
    bitstream_version: int = 1
    transfer_syntax_uid: str | None = JPEG_LS_LOSSLESS_UID
    # SOF55 holds the dimensions in 16-bit fields; CharLS codes 1 or 3 components per frame here.
    capabilities: Capabilities = Capabilities(
        lossless=True,
        samples_per_pixel=frozenset({1, 3}),
        bits_allocated=frozenset({8, 16}),
        max_dimension=65535,
    )

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> bytes:
        require_coding_spec(frame, spec, self.capabilities)
        precision = max(2, spec.bits_stored)
        # pyjpegls reads one byte per sample when P <= 8, whatever Bits Allocated says.
        samples = frame.astype(np.uint8) if precision <= 8 and frame.dtype != np.uint8 else frame
        return charls_encode(samples, spec, precision)

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        # CharLS spends seconds on a truncated stream before it gives up; CharLS ends every one with EOI.
        if not payload.endswith(_EOI):
            raise CorruptBitstream("JPEG-LS payload does not end with EOI (truncated?)")
        try:
            buffer, info = jpeg_ls.decode_buffer(payload)
        except (RuntimeError, ValueError) as exc:
            raise CorruptBitstream(f"JPEG-LS decoding failed: {exc}") from exc
        _check_jpeg_ls_header(info, spec)
        itemsize = 1 if info["bits_per_sample"] <= 8 else 2
        if len(buffer) != spec.rows * spec.columns * spec.samples_per_pixel * itemsize:
            raise CorruptBitstream(f"JPEG-LS decoded {len(buffer)} bytes, not one frame of {spec.frame_shape}")
        samples = np.frombuffer(buffer, dtype=np.dtype(f"<u{itemsize}")).reshape(spec.frame_shape)
        return checked_frame(samples, spec, samples.dtype, "JPEG-LS")


def _check_jpeg_ls_header(info: dict[str, Any], spec: PixelSpec) -> None:
    expected = {
        "width": spec.columns,
        "height": spec.rows,
        "components": spec.samples_per_pixel,
        "bits_per_sample": max(2, spec.bits_stored),
        "allowed_lossy_error": 0,
    }
    for key, value in expected.items():
        if info.get(key) != value:
            raise CorruptBitstream(f"JPEG-LS header has {key} {info.get(key)!r}, expected {value}")


def charls_encode(samples: npt.NDArray[np.unsignedinteger], spec: PixelSpec, precision: int, near: int = 0) -> bytes:
    """CharLS on `samples` (one byte per sample when `precision` <= 8), sample-interleaved as the
    frames arrive; `near` is the near-lossless bound (0: lossless)."""
    source = np.ascontiguousarray(samples).tobytes()
    padding = max(0, _MIN_SOURCE_BYTES - len(source))
    interleave = 2 if spec.samples_per_pixel > 1 else 0
    for attempt in range(2):
        try:
            stream = _CharLS._encode(source + bytes(padding) if padding else source, near, interleave,
                                     spec.rows, spec.columns, spec.samples_per_pixel, precision)
            return bytes(stream)
        except (RuntimeError, ValueError) as exc:
            if attempt == 0 and "too small" in str(exc):
                # Incompressible noise can exceed the 2x output buffer: give it 8x.
                padding = 3 * len(source) + _MIN_SOURCE_BYTES
                continue
            raise CodecError(f"JPEG-LS encoding (NEAR {near}) failed: {exc}") from exc
    raise CodecError("JPEG-LS encoding failed")  # pragma: no cover - the loop returns or raises
