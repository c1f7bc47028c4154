"""JPEG 2000 (ISO/IEC 15444-1, OpenJPEG) and HTJ2K (ISO/IEC 15444-15, OpenJPH), reversible 5/3.

Both write a raw codestream (SOC, SIZ, ... EOC: no JP2 boxes) with no multi-component
transform, so the components are the frame's samples as the Photometric Interpretation names
them (PS3.5 8.2.4: RGB coded with the reversible colour transform would have to be YBR_RCT).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Bound at import: imagecodecs loads each native module on first attribute access, which would
# otherwise charge the first frame with loading OpenJPEG/OpenJPH (and fail mid-ingest if absent).
from imagecodecs import htj2k_decode, htj2k_encode, jpeg2k_decode, jpeg2k_encode

from ..base import Capabilities, CodecError, CorruptBitstream, PixelSpec
from .common import DICOM_MAX_DIMENSION, checked_frame, narrowed, require_coding_spec, sample_dtype

__all__ = ["HTJ2K_LOSSLESS_UID", "JPEG_2000_LOSSLESS_UID", "Htj2kCodec", "Jpeg2000Codec"]

JPEG_2000_LOSSLESS_UID = "1.2.840.10008.1.2.4.90"
HTJ2K_LOSSLESS_UID = "1.2.840.10008.1.2.4.201"

_SOC_SIZ = b"\xff\x4f\xff\x51"
_EOC = b"\xff\xd9"
# Rsiz: 0 for a plain Part 1 codestream; Part 15 sets bit 14 (HT block coder, CAP marker present).
_RSIZ_PART_1 = 0
_RSIZ_HTJ2K = 0x4000
# SIZ after its marker: Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz;
# then Ssiz, XRsiz, YRsiz for each component (ISO/IEC 15444-1 A.5.1).
_SIZ = struct.Struct(">HHIIIIIIIIH")
_COMPONENT = struct.Struct(">BBB")

# No 32-bit words: OpenJPEG through imagecodecs returns wrong values, without an error, for
# uint32 samples of 26 bits or more; OpenJPH does code them, but OpenJPEG (pydicom's HTJ2K
# decoder) cannot read such a codestream's header, so it would be no use as a DICOM fragment.
_CAPABILITIES = Capabilities(
    lossless=True,
    samples_per_pixel=frozenset({1, 3}),
    bits_allocated=frozenset({8, 16}),
    max_dimension=DICOM_MAX_DIMENSION,
)


@dataclass(frozen=True, slots=True)
class _Siz:
    rsiz: int
    image: tuple[int, int, int, int]  # Xsiz, Ysiz, XOsiz, YOsiz
    tiles: tuple[int, int, int, int]  # XTsiz, YTsiz, XTOsiz, YTOsiz
    components: tuple[tuple[int, bool, int, int], ...]  # precision, signed, XRsiz, YRsiz


def _read_siz(payload: bytes, codec_name: str) -> _Siz:
    if not payload.startswith(_SOC_SIZ):
        raise CorruptBitstream(f"{codec_name} payload does not start with SOC and SIZ")
    if not payload.endswith(_EOC):
        raise CorruptBitstream(f"{codec_name} payload does not end with EOC (truncated?)")
    try:
        length, rsiz, xsiz, ysiz, x0, y0, xt, yt, xt0, yt0, count = _SIZ.unpack_from(payload, len(_SOC_SIZ))
        components = tuple(
            ((ssiz & 0x7F) + 1, bool(ssiz & 0x80), dx, dy)
            for ssiz, dx, dy in (_COMPONENT.unpack_from(payload, len(_SOC_SIZ) + _SIZ.size + 3 * i)
                                 for i in range(count))
        )
    except struct.error as exc:
        raise CorruptBitstream(f"{codec_name} SIZ marker is truncated: {exc}") from None
    if length != _SIZ.size + 3 * count:
        raise CorruptBitstream(f"{codec_name} SIZ length {length} does not fit {count} components")
    return _Siz(rsiz, (xsiz, ysiz, x0, y0), (xt, yt, xt0, yt0), components)


def _check_siz(payload: bytes, spec: PixelSpec, precision: int, rsiz: int, codec_name: str) -> None:
    """Refuse a codestream whose SIZ is not exactly what the encoder writes for this frame.

    Both encoders write one tile covering the image at the origin. Checking every field keeps
    a damaged SIZ from reaching the decoders: OpenJPH hangs on some impossible tile offsets.
    """
    siz = _read_siz(payload, codec_name)
    expected = _Siz(rsiz=rsiz, image=(spec.columns, spec.rows, 0, 0), tiles=(spec.columns, spec.rows, 0, 0),
                    components=((precision, False, 1, 1),) * spec.samples_per_pixel)
    if siz != expected:
        raise CorruptBitstream(f"{codec_name} SIZ describes {siz}, expected {expected}")


class Jpeg2000Codec:
    """JPEG 2000 lossless: reversible 5/3 wavelet, one tile, one quality layer, through OpenJPEG.

    The SIZ precision is the coding spec's Bits Stored (words of at most 8 bits are handed over
    as bytes), so a DICOM decoder returns the stored values: for unsigned frames whose bits above
    Bits Stored are clear the payload is a JPEG 2000 Lossless (1.2.840.10008.1.2.4.90) fragment.
    The decomposition depth is OpenJPEG's default, reduced by imagecodecs for small frames.
    """

    codec_id: str = "jpeg-2000"
    bitstream_version: int = 1
    transfer_syntax_uid: str | None = JPEG_2000_LOSSLESS_UID
    capabilities: Capabilities = _CAPABILITIES

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> bytes:
        require_coding_spec(frame, spec, self.capabilities)
        samples = narrowed(frame, spec.bits_stored)
        try:
            stream = jpeg2k_encode(samples, codecformat="J2K", reversible=True, mct=False,
                                   bitspersample=spec.bits_stored, planar=False, numthreads=1)
        except Exception as exc:  # imagecodecs raises its own errors, ValueError and others
            raise CodecError(f"JPEG 2000 encoding failed: {exc}") from exc
        return bytes(stream)

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        _check_siz(payload, spec, spec.bits_stored, _RSIZ_PART_1, "JPEG 2000")
        try:
            decoded = jpeg2k_decode(payload, planar=False, numthreads=1)
        except Exception as exc:
            raise CorruptBitstream(f"JPEG 2000 decoding failed: {exc}") from exc
        return checked_frame(decoded, spec, sample_dtype(spec.bits_stored), "JPEG 2000")


class Htj2kCodec:
    """HTJ2K lossless: reversible 5/3 with the high-throughput block coder, through OpenJPH.

    imagecodecs' htj2k_encode takes the precision from the word size, so the SIZ precision is 8
    for Bits Stored up to 8 (handed over as bytes) and 16 above: the values are the stored ones,
    so a DICOM decoder returns them, but a 12-bit frame is declared as 16-bit in SIZ. OpenJPH
    writes RPCL progression, 5 decomposition levels and a CAP marker; the payload is an HTJ2K
    Lossless (1.2.840.10008.1.2.4.201) fragment.
    """

    codec_id: str = "htj2k"
    bitstream_version: int = 1
    transfer_syntax_uid: str | None = HTJ2K_LOSSLESS_UID
    capabilities: Capabilities = _CAPABILITIES

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> bytes:
        require_coding_spec(frame, spec, self.capabilities)
        samples = narrowed(frame, spec.bits_stored)
        try:
            # rgb=False: no colour transform; planar=False: the last axis holds the samples.
            stream = htj2k_encode(samples, reversible=True, rgb=False, planar=False)
        except Exception as exc:
            raise CodecError(f"HTJ2K encoding failed: {exc}") from exc
        return bytes(stream)

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        expected = sample_dtype(spec.bits_stored)
        _check_siz(payload, spec, 8 * expected.itemsize, _RSIZ_HTJ2K, "HTJ2K")
        try:
            # Without planar=False, imagecodecs returns components without a colour transform
            # as planes (samples, rows, columns).
            decoded = htj2k_decode(payload, planar=False)
        except Exception as exc:
            raise CorruptBitstream(f"HTJ2K decoding failed: {exc}") from exc
        return checked_frame(decoded, spec, expected, "HTJ2K")
