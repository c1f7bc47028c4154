"""What every standard codec adapter checks on the way in and on the way out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..base import Capabilities, CorruptBitstream, PixelSpec, UnsupportedPixelSpec

__all__ = ["DICOM_MAX_DIMENSION", "checked_frame", "narrowed", "require_coding_spec", "sample_dtype"]

# Rows (0028,0010) and Columns (0028,0011) are US: no frame of any transfer syntax is larger. The
# image codecs declare this limit so that opaque byte strings (PixelSpec.for_bytes) go to zstd.
DICOM_MAX_DIMENSION = 65535


def require_coding_spec(frame: npt.NDArray[np.generic], spec: PixelSpec, capabilities: Capabilities) -> None:
    """Raise UnsupportedPixelSpec unless `frame` is a preprocessed frame this codec can code.

    The value check costs one pass over the frame; it keeps a narrowing cast from silently
    dropping bits of a frame that breaks the coding-spec contract.
    """
    if spec.signed:
        raise UnsupportedPixelSpec("(0028,0103) Pixel Representation 1: codecs take preprocessed unsigned frames")
    reasons = capabilities.unsupported_reasons(spec)
    if reasons:
        raise UnsupportedPixelSpec("; ".join(reasons))
    spec.check_frame(frame)
    if spec.bits_stored < spec.bits_allocated and frame.size and int(frame.max()) >> spec.bits_stored:
        raise UnsupportedPixelSpec(
            f"frame holds values of more than (0028,0101) Bits Stored {spec.bits_stored} bits: preprocess it first"
        )


def sample_dtype(bits: int) -> np.dtype[np.unsignedinteger]:
    """The narrowest word the image codecs take for samples of `bits` bits."""
    return np.dtype(np.uint8) if bits <= 8 else np.dtype("<u2")


def narrowed(frame: npt.NDArray[np.unsignedinteger], bits: int) -> npt.NDArray[np.unsignedinteger]:
    """The frame as contiguous words of `sample_dtype(bits)`.

    The codecs take the sample precision from the word size (or refuse a precision below it), so
    16-bit words holding at most 8 bits must be handed over as bytes.
    """
    return np.ascontiguousarray(frame, dtype=sample_dtype(bits))


def checked_frame(decoded: npt.NDArray[np.generic], spec: PixelSpec, expected: np.dtype[np.unsignedinteger],
                  codec_name: str) -> npt.NDArray[np.unsignedinteger]:
    """The decoded samples as a frame of `spec`, after checking their layout and precision.

    A decoder handed a payload of another frame or another precision may still return an array;
    this is where that turns into CorruptBitstream instead of wrong pixels.
    """
    if decoded.dtype != expected or decoded.shape != spec.frame_shape:
        raise CorruptBitstream(
            f"{codec_name} decoded {decoded.dtype}{decoded.shape}, expected {expected}{spec.frame_shape}"
        )
    if decoded.size and spec.bits_stored < 8 * expected.itemsize and int(decoded.max()) >> spec.bits_stored:
        raise CorruptBitstream(f"{codec_name} decoded values wider than (0028,0101) Bits Stored {spec.bits_stored}")
    result: npt.NDArray[np.unsignedinteger] = np.ascontiguousarray(decoded, dtype=spec.unsigned_dtype)
    return result
