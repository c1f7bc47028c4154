"""Zstandard over byte planes: the catch-all codec, for every layout no image codec takes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import zstandard

from ..base import Capabilities, CodecError, CorruptBitstream, PixelSpec
from .common import require_coding_spec

__all__ = ["ZstdCodec"]


class ZstdCodec:
    """Zstandard over byte planes: every frame, any layout, at a few ms per CT slice.

    Bitstream version 1: the little-endian words are split into byte planes (all low bytes, then
    the next byte of every word, ...), and the planes are one zstd frame with its content size.
    Splitting the planes puts the near-constant high bytes together, about 15 % smaller on CT.
    """

    codec_id: str = "zstd"
    bitstream_version: int = 1
    transfer_syntax_uid: str | None = None
    capabilities: Capabilities = Capabilities(
        lossless=True,
        samples_per_pixel=frozenset({1, 3, 4}),
        bits_allocated=frozenset({8, 16, 32}),
    )

    # Level 3 measured on 512x512 CT: 2.3 ms/slice at ratio 2.87; level 5 takes 6 ms for 2.85.
    level: int = 3

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> bytes:
        require_coding_spec(frame, spec, self.capabilities)
        itemsize = frame.dtype.itemsize
        planes = np.ascontiguousarray(frame).view(np.uint8).reshape(-1, itemsize).T.tobytes()
        try:
            return zstandard.ZstdCompressor(level=self.level).compress(planes)
        except zstandard.ZstdError as exc:
            raise CodecError(f"zstd encoding failed: {exc}") from exc

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        expected = spec.frame_nbytes
        try:
            params = zstandard.get_frame_parameters(payload)
            if params.content_size != expected:
                raise CorruptBitstream(f"zstd frame holds {params.content_size} bytes, expected {expected}")
            planes = zstandard.ZstdDecompressor().decompress(payload, max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise CorruptBitstream(f"zstd decoding failed: {exc}") from exc
        if len(planes) != expected:
            raise CorruptBitstream(f"zstd decoded {len(planes)} bytes, expected {expected}")
        itemsize = spec.bits_allocated // 8
        words = np.frombuffer(planes, dtype=np.uint8).reshape(itemsize, -1).T.copy()
        return words.view(spec.unsigned_dtype).reshape(spec.frame_shape)
