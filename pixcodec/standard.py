"""Adapters for standard codecs: JPEG-LS (CharLS through pyjpegls) and zstd.

Both follow the FrameCodec protocol: stateless objects whose encode/decode are pure functions of
their arguments, so one instance is shared by threads and rebuilt cheaply in worker processes.
"""

from __future__ import annotations

from typing import Any

import _CharLS  # pyjpegls' extension module: encode_buffer refuses the padded input below
import jpeg_ls
import numpy as np
import numpy.typing as npt
import zstandard

from .base import Capabilities, CodecError, CorruptBitstream, PixelSpec, UnsupportedPixelSpec

__all__ = ["JPEG_LS_LOSSLESS_UID", "JpegLsCodec", "ZstdCodec"]

JPEG_LS_LOSSLESS_UID = "1.2.840.10008.1.2.4.80"

# pyjpegls sizes CharLS's output buffer at twice the input; the headers alone (~30 bytes) overflow
# that for tiny frames, so short inputs are padded (CharLS ignores input past the image).
_MIN_SOURCE_BYTES = 1024


def _require_coding_spec(frame: npt.NDArray[np.generic], spec: PixelSpec) -> None:
    if spec.signed:
        raise UnsupportedPixelSpec("(0028,0103) Pixel Representation 1: codecs take preprocessed unsigned frames")
    spec.check_frame(frame)


class JpegLsCodec:
    """JPEG-LS lossless (ISO/IEC 14495-1) as CharLS writes it: a plain codestream, no SPIFF header.

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
        _require_coding_spec(frame, spec)
        precision = max(2, spec.bits_stored)
        # pyjpegls reads one byte per sample when P <= 8, whatever Bits Allocated says.
        samples = frame.astype(np.uint8) if precision <= 8 and frame.dtype != np.uint8 else frame
        source = np.ascontiguousarray(samples).tobytes()
        padding = max(0, _MIN_SOURCE_BYTES - len(source))
        interleave = 2 if spec.samples_per_pixel > 1 else 0  # sample-interleaved, as the frames arrive
        for attempt in range(2):
            try:
                stream = _CharLS._encode(source + bytes(padding) if padding else source, 0, interleave,
                                         spec.rows, spec.columns, spec.samples_per_pixel, precision)
                return bytes(stream)
            except (RuntimeError, ValueError) as exc:
                if attempt == 0 and "too small" in str(exc):
                    # Incompressible noise can exceed the 2x output buffer: give it 8x.
                    padding = 3 * len(source) + _MIN_SOURCE_BYTES
                    continue
                raise CodecError(f"JPEG-LS encoding failed: {exc}") from exc
        raise CodecError("JPEG-LS encoding failed")  # pragma: no cover - the loop returns or raises

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        try:
            buffer, info = jpeg_ls.decode_buffer(payload)
        except (RuntimeError, ValueError) as exc:
            raise CorruptBitstream(f"JPEG-LS decoding failed: {exc}") from exc
        _check_jpeg_ls_header(info, spec)
        itemsize = 1 if info["bits_per_sample"] <= 8 else 2
        if len(buffer) != spec.rows * spec.columns * spec.samples_per_pixel * itemsize:
            raise CorruptBitstream(f"JPEG-LS decoded {len(buffer)} bytes, not one frame of {spec.frame_shape}")
        samples = np.frombuffer(buffer, dtype=np.dtype(f"<u{itemsize}")).reshape(spec.frame_shape)
        return samples.astype(spec.unsigned_dtype, copy=samples.dtype != spec.unsigned_dtype)


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
        _require_coding_spec(frame, spec)
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
