"""pixcodec: lossless coding of DICOM pixel frames, as pure functions on numpy arrays.

Knows nothing of the network, the database or the configuration: the gateway describes frames
with a PixelSpec, picks a codec from a CodecRegistry and stores the resulting container blob.
"""

from .base import (
    Capabilities,
    CodecError,
    CodecUnavailable,
    CorruptBitstream,
    FrameCodec,
    PixelSpec,
    UnsupportedPixelSpec,
    VerificationFailed,
)
from .container import ContainerReader, ContainerWriter
from .pred import PredCodec
from .preprocess import Mode, Preprocessing
from .registry import CodecRegistry, default_registry
from .standard import (
    HTJ2K_LOSSLESS_UID,
    JPEG_2000_LOSSLESS_UID,
    JPEG_LS_LOSSLESS_UID,
    JPEG_XL_LOSSLESS_UID,
    RLE_LOSSLESS_UID,
    Htj2kCodec,
    Jpeg2000Codec,
    JpegLsCodec,
    JpegXlCodec,
    RleCodec,
    ZstdCodec,
)

__all__ = [
    "HTJ2K_LOSSLESS_UID",
    "JPEG_2000_LOSSLESS_UID",
    "JPEG_LS_LOSSLESS_UID",
    "JPEG_XL_LOSSLESS_UID",
    "RLE_LOSSLESS_UID",
    "Capabilities",
    "CodecError",
    "CodecRegistry",
    "CodecUnavailable",
    "ContainerReader",
    "ContainerWriter",
    "CorruptBitstream",
    "FrameCodec",
    "Htj2kCodec",
    "Jpeg2000Codec",
    "JpegLsCodec",
    "JpegXlCodec",
    "Mode",
    "PixelSpec",
    "PredCodec",
    "Preprocessing",
    "RleCodec",
    "UnsupportedPixelSpec",
    "VerificationFailed",
    "ZstdCodec",
    "default_registry",
]
