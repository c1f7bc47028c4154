"""The transfer syntaxes the gateway accepts, and what each one means for storage."""

from __future__ import annotations

from pydicom import uid

# PS3.5 Table A-1 / PS3.6; pydicom 3.0 does not name the JPEG-XL syntaxes yet.
JPEG_XL_LOSSLESS = uid.UID("1.2.840.10008.1.2.4.110")
JPEG_XL_JPEG_RECOMPRESSION = uid.UID("1.2.840.10008.1.2.4.111")
JPEG_XL = uid.UID("1.2.840.10008.1.2.4.112")

NATIVE = (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian)
DEFLATED = uid.DeflatedExplicitVRLittleEndian

LOSSLESS_ENCAPSULATED = (
    uid.JPEGLossless,  # process 14
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000MCLossless,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.RLELossless,
    JPEG_XL_LOSSLESS,
)

# Lossy bitstreams are kept exactly as received: decoding and re-encoding would add loss.
# HTJ2K (.4.203) and JPEG-XL (.4.112) may be either; they are treated as lossy, which is safe.
# JPEG-XL JPEG recompression (.4.111) reconstructs a lossy JPEG.
LOSSY_ENCAPSULATED = (
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLSNearLossless,
    uid.JPEG2000,
    uid.JPEG2000MC,
    uid.HTJ2K,
    JPEG_XL_JPEG_RECOMPRESSION,
    JPEG_XL,
)

ACCEPTED: tuple[uid.UID, ...] = (
    *NATIVE,
    DEFLATED,
    *LOSSLESS_ENCAPSULATED,
    *LOSSY_ENCAPSULATED,
)

_ENCAPSULATED = frozenset((*LOSSLESS_ENCAPSULATED, *LOSSY_ENCAPSULATED))


def is_known(syntax: str) -> bool:
    return syntax in ACCEPTED


def is_lossy(syntax: str) -> bool:
    return syntax in LOSSY_ENCAPSULATED


def is_encapsulated(syntax: str) -> bool:
    return syntax in _ENCAPSULATED


def encoding(syntax: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the dataset encoding of an accepted syntax."""
    if syntax == uid.ImplicitVRLittleEndian:
        return True, True
    if syntax == uid.ExplicitVRBigEndian:
        return False, False
    return False, True
