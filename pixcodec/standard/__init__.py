"""Adapters for standard lossless codecs: JPEG-LS, JPEG 2000, HTJ2K, JPEG XL, RLE, and zstd.

All follow the FrameCodec protocol: stateless objects whose encode/decode are pure functions of
their arguments, so one instance is shared by threads and rebuilt cheaply in worker processes.
Each refuses what its capabilities exclude with UnsupportedPixelSpec, turns native library
failures into CodecError (encode) or CorruptBitstream (decode), and checks what it decoded
against the coding spec before returning it.
"""

from .jpeg2000 import HTJ2K_LOSSLESS_UID, JPEG_2000_LOSSLESS_UID, Htj2kCodec, Jpeg2000Codec
from .jpeg_ls import JPEG_LS_LOSSLESS_UID, JpegLsCodec
from .jpeg_xl import JPEG_XL_LOSSLESS_UID, JpegXlCodec
from .rle_lossless import RLE_LOSSLESS_UID, RleCodec
from .zstd import ZstdCodec

__all__ = [
    "HTJ2K_LOSSLESS_UID",
    "JPEG_2000_LOSSLESS_UID",
    "JPEG_LS_LOSSLESS_UID",
    "JPEG_XL_LOSSLESS_UID",
    "RLE_LOSSLESS_UID",
    "Htj2kCodec",
    "Jpeg2000Codec",
    "JpegLsCodec",
    "JpegXlCodec",
    "RleCodec",
    "ZstdCodec",
]
