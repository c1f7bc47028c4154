"""ROI-hybrid coding of one frame: bit-exact inside a mask, |error| <= a bound everywhere else.

All coding is integer: JPEG-LS (ISO/IEC 14495-1, CharLS through pyjpegls) lossless and
near-lossless, our `pred` model with a per-pixel tolerance, zstd for the mask, the in-mask
correction and any bits above Bits Stored. Each frame is coded in whichever of the layouts is
smallest for it (see `Layout`), and the blob
is decoded again before `encode` returns it, so both guarantees hold for every blob handed out.
The byte layout is documented in docs/roi-hybrid.md; any blob this module ever wrote decodes
with any later release.

Errors are counted on the stored pixel value: the low Bits Stored bits, sign-extended when
Pixel Representation is 1. Bits above Bits Stored (overlay planes, junk) are kept exact.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import jpeg_ls
import numpy as np
import numpy.typing as npt
import zstandard

from ..base import CodecError, CorruptBitstream, PixelSpec, UnsupportedPixelSpec, VerificationFailed
from ..pred.near import decode_within, encode_within
from ..standard.jpeg_ls import charls_encode
from .masks import Mask

__all__ = [
    "FORMAT_VERSION",
    "LOSSY_METHOD",
    "MAGIC",
    "MAX_ERROR_LIMIT",
    "METHOD_DESCRIPTIONS",
    "PRED_LOSSY_METHOD",
    "Encoded",
    "Layout",
    "RoiHeader",
    "decode",
    "encode",
    "encode_measured",
    "lossy_method",
    "read_header",
    "stored_values",
]

MAGIC = b"\x89PXR\r\n\x1a\n"  # PNG-style, as the container's: catches text-mode mangling
# Version 2 added the PRED layout; everything else is as in version 1, which stays readable.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_FIRST_VERSION_WITH = {0: 1, 1: 1, 2: 1, 3: 2}  # layout value -> format version that introduced it

# (0028,2114) Lossy Image Compression Method for what the lossy part is: JPEG-LS near-lossless,
# or, for layout PRED, our own near-lossless coder. The attribute's values are Defined Terms
# (PS3.3 C.7.6.1.1.5.1), which may be extended; ours is named so no one mistakes it for a standard.
LOSSY_METHOD = "ISO_14495_1"
PRED_LOSSY_METHOD = "PACSGW_PRED_NEAR"
METHOD_DESCRIPTIONS = {
    LOSSY_METHOD: "JPEG-LS near-lossless, ISO 14495-1",
    PRED_LOSSY_METHOD: "pacs-gateway pred near-lossless coding",
}

# The header field is 16 bits; JPEG-LS itself allows NEAR up to 255 and half the sample range.
MAX_ERROR_LIMIT = 65535

_PREFIX = struct.Struct("<8sHH")  # magic, format version, header length
# rows, columns, samples, bits allocated, bits stored, pixel representation, planar
# configuration, layout, max error, NEAR used, section lengths (mask, base, extra, high),
# CRC-32 of the sections, CRC-32 of the decoded frame's words
_FIELDS = struct.Struct("<IIBBBBBBHHIIIIII")
_CRC = struct.Struct("<I")
_MAX_HEADER = 256
_EOI = b"\xff\xd9"
_ZSTD_LEVEL = 9  # the mask and the high bits: small or highly redundant; level 19 saves bytes only, at 50 times the time
# The first byte of a correction section: how its residuals are coded. Part of the format.
_CORRECTION_ZSTD = 0
_CORRECTION_PACKED = 1
_PACK_CHUNK = 1 << 20


class Layout(IntEnum):
    """How a frame is coded; stored as one byte, so the values are part of the format."""

    # One JPEG-LS lossless stream: the whole frame exact (no gain possible, or the ROI is everything).
    LOSSLESS = 0
    # JPEG-LS NEAR over the whole frame, then the residual inside the mask, in [-NEAR, NEAR],
    # coded with zstd (the "extra" section) so that the decoder restores the ROI exactly.
    CORRECTION = 1
    # JPEG-LS NEAR of the frame with the ROI replaced by a constant (the "base" section), and
    # JPEG-LS lossless of the frame with the outside replaced by a constant (the "extra"
    # section); the decoder takes each pixel from the layer that owns it. No residual to code,
    # at the price of the two edges along the ROI outline.
    TWO_LAYERS = 2
    # One `pred` stream (pixcodec.pred.near) with a per-pixel tolerance: 0 in the mask, NEAR
    # outside, quantised in the loop. No second pass over the ROI and no edges; the
    # context-adaptive binary coder also spends well under a bit per pixel where JPEG-LS's
    # Golomb codes cannot (noise-flat air at a coarse step). One-sample frames only.
    PRED = 3


@dataclass(frozen=True, slots=True)
class RoiHeader:
    """What a blob says about itself: enough to label the stored instance without decoding it."""

    format_version: int
    spec: PixelSpec
    layout: Layout
    max_error: int  # the bound the encoder was asked for and verified
    near: int  # the JPEG-LS NEAR actually used (at most max_error)
    mask_length: int
    base_length: int
    extra_length: int
    high_length: int
    sections_crc: int
    frame_crc: int
    header_length: int

    @property
    def lossless(self) -> bool:
        """True when nothing in the frame was altered (the lossy attributes stay unset)."""
        return self.layout is Layout.LOSSLESS


def stored_values(frame: npt.NDArray[np.integer], spec: PixelSpec) -> npt.NDArray[np.int64]:
    """The pixel values errors are counted on: the low Bits Stored bits, sign-extended if signed."""
    words = np.asarray(frame).view(spec.unsigned_dtype).astype(np.int64)
    low = words & ((1 << spec.bits_stored) - 1)
    if spec.signed:
        sign = 1 << (spec.bits_stored - 1)
        low = (low ^ sign) - sign
    result: npt.NDArray[np.int64] = low
    return result


@dataclass(frozen=True, slots=True)
class Encoded:
    blob: bytes
    lossless_bytes: int  # the whole frame's JPEG-LS lossless stream, the baseline the blob competes with
    # What the blob decodes to (decoded and checked; with verify=False, what its frame checksum pins).
    decoded: npt.NDArray[np.integer]
    layout: Layout  # the layout the blob holds (its header says so too)


def encode(frame: npt.NDArray[np.integer], spec: PixelSpec, mask: Mask, max_error: int, *,
           layouts: Iterable[Layout] | None = None) -> bytes:
    """`encode_measured`, for callers that only want the blob."""
    return encode_measured(frame, spec, mask, max_error, layouts=layouts).blob


def encode_measured(frame: npt.NDArray[np.integer], spec: PixelSpec, mask: Mask, max_error: int, *,
                    layouts: Iterable[Layout] | None = None, verify: bool = True) -> Encoded:
    """Code `frame`: pixels where `mask` is True exactly, the rest within `max_error`.

    `mask` has shape (rows, columns) and applies to every sample of a pixel. The smallest of
    `layouts` (by default those that can win on such a frame) is kept; LOSSLESS is always among the candidates, so a bound of 0
    or a mask covering everything gives a plain lossless blob. Raises UnsupportedPixelSpec for
    frames JPEG-LS cannot code (more than 16 bits stored, 4 samples), and VerificationFailed if
    the decoded blob breaks either guarantee (a bug, never expected).

    With `verify` False the blob is not decoded here: `decoded` is the frame the encoder built
    it to decode to, which its frame checksum holds, so any later decode fails unless it gives
    exactly that frame. For callers that decode what they store anyway and check `decoded`
    against the frame themselves (`measure`), as ingest does.
    """
    _check_input(frame, spec, mask, max_error)
    frame = np.ascontiguousarray(frame)
    mask = np.ascontiguousarray(mask, dtype=bool)
    values, high = _split(frame, spec)
    precision = max(2, spec.bits_stored)
    near = min(max_error, 255, ((1 << precision) - 1) // 2)
    wanted = set(_default_layouts(spec) if layouts is None else layouts) | {Layout.LOSSLESS}
    sample_mask = _sample_mask(mask, spec)
    outside = not bool(sample_mask.all())
    # (layout, base, extra, the values the decoder will give where the encoder knows them)
    candidates: list[tuple[Layout, bytes, bytes, npt.NDArray[np.unsignedinteger] | None]] = [
        (Layout.LOSSLESS, _jls_encode(values, 0, precision, spec), b"", values)]
    if near > 0 and outside:
        if Layout.PRED in wanted and spec.samples_per_pixel == 1:
            tolerance = np.where(mask, 0, near).astype(np.uint8)
            payload, rebuilt = encode_within(values, (1 << precision) - 1, tolerance)
            candidates.append((Layout.PRED, payload, b"", rebuilt.astype(values.dtype)))
        if Layout.CORRECTION in wanted:
            base = _jls_encode(values, near, precision, spec)
            approximate = _jls_decode(base, spec, precision, near)
            candidates.append((Layout.CORRECTION, base, _correction(values, approximate, sample_mask, near),
                               np.where(sample_mask, values, approximate)))
        if Layout.TWO_LAYERS in wanted and sample_mask.any():
            fill_inside = _median(values[~sample_mask])
            fill_outside = _median(values[sample_mask])
            base = _jls_encode(np.where(sample_mask, fill_inside, values).astype(values.dtype), near, precision, spec)
            extra = _jls_encode(np.where(sample_mask, values, fill_outside).astype(values.dtype), 0, precision, spec)
            candidates.append((Layout.TWO_LAYERS, base, extra, None))
    mask_section = _compress(np.packbits(mask, bitorder="little").tobytes())
    high_section = _compress(high.tobytes()) if high is not None else b""
    # Everything but the coded pixels is the same for every layout, so their sizes decide.
    layout, base, extra, expected = min(candidates, key=lambda candidate: len(candidate[1]) + len(candidate[2]))
    expected_frame = _join(expected, high, spec) if expected is not None else None
    blob, built = _assemble(spec, layout, max_error, near if layout is not Layout.LOSSLESS else 0,
                            mask_section, base, extra, high_section, expected_frame)
    decoded = _verify(blob, frame, spec, mask, max_error) if verify else built
    return Encoded(blob, len(candidates[0][1]), decoded, layout)


def lossy_method(layouts: Iterable[Layout]) -> str:
    """(0028,2114) for an instance whose altered frames were coded in `layouts`."""
    return PRED_LOSSY_METHOD if Layout.PRED in set(layouts) else LOSSY_METHOD


def _default_layouts(spec: PixelSpec) -> tuple[Layout, ...]:
    # On one-sample frames PRED is smaller than TWO_LAYERS wherever either saves anything
    # (every CT, MR, CR/DX/MG and XA frame of the benchmark), so that encode is not worth its time.
    if spec.samples_per_pixel == 1:
        return Layout.LOSSLESS, Layout.CORRECTION, Layout.PRED
    return Layout.LOSSLESS, Layout.CORRECTION, Layout.TWO_LAYERS


def decode(blob: bytes) -> tuple[npt.NDArray[np.integer], Mask]:
    """The decoded frame (the header's spec, its dtype and shape) and the stored mask.

    Raises CorruptBitstream for anything that is not a whole, unaltered blob: checksums are
    checked before a native decoder sees a byte, and the decoded words against their own
    checksum afterwards.
    """
    header = read_header(blob)
    frame, mask = _reconstruct(blob, header)
    if _crc(frame) != header.frame_crc:
        raise CorruptBitstream("decoded pixels do not match their stored checksum")
    return frame, mask


def read_header(blob: bytes) -> RoiHeader:
    """The checked header of a blob, and its sections' checksum verified (no pixel decoding)."""
    data = memoryview(blob)
    if len(data) < _PREFIX.size + _FIELDS.size + _CRC.size:
        raise CorruptBitstream(f"{len(data)} bytes is too short for an ROI-hybrid blob")
    magic, version, length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CorruptBitstream("not an ROI-hybrid blob (bad magic)")
    if version not in READABLE_VERSIONS:
        raise CorruptBitstream(f"ROI-hybrid format version {version} is not known to this release")
    if not _PREFIX.size + _FIELDS.size + 1 + _CRC.size <= length <= min(_MAX_HEADER, len(data)):
        raise CorruptBitstream(f"header length {length} is impossible")
    if _crc(data[:length - _CRC.size]) != _CRC.unpack_from(data, length - _CRC.size)[0]:
        raise CorruptBitstream("header checksum mismatch")
    (rows, columns, samples, allocated, stored, representation, planar, layout, max_error, near,
     mask_length, base_length, extra_length, high_length, sections_crc, frame_crc) = _FIELDS.unpack_from(
        data, _PREFIX.size)
    position = _PREFIX.size + _FIELDS.size
    name_length = data[position]
    if position + 1 + name_length + _CRC.size != length:
        raise CorruptBitstream("header fields do not fill the header exactly")
    try:
        photometric = bytes(data[position + 1:position + 1 + name_length]).decode("ascii")
        spec = PixelSpec(rows=rows, columns=columns, samples_per_pixel=samples, bits_allocated=allocated,
                         bits_stored=stored, signed=bool(representation), photometric=photometric,
                         planar_configuration=planar)
        kind = Layout(layout)
    except (UnicodeDecodeError, UnsupportedPixelSpec, ValueError) as exc:
        raise CorruptBitstream(f"malformed header: {exc}") from exc
    if representation not in (0, 1) or near > max_error or (kind is Layout.LOSSLESS) != (near == 0):
        raise CorruptBitstream("header fields contradict each other")
    if version < _FIRST_VERSION_WITH[kind] or (kind is Layout.PRED and (samples != 1 or extra_length)):
        raise CorruptBitstream(f"layout {kind.name} cannot occur in a version {version} blob of {samples} samples")
    if length + mask_length + base_length + extra_length + high_length != len(data):
        raise CorruptBitstream(f"sections of {mask_length}+{base_length}+{extra_length}+{high_length} bytes "
                               f"do not fill the {len(data) - length} bytes after the header")
    if _crc(data[length:]) != sections_crc:
        raise CorruptBitstream("section checksum mismatch")
    return RoiHeader(version, spec, kind, max_error, near, mask_length, base_length, extra_length, high_length,
                     sections_crc, frame_crc, length)


def _check_input(frame: npt.NDArray[np.integer], spec: PixelSpec, mask: Mask, max_error: int) -> None:
    if spec.samples_per_pixel not in (1, 3):
        raise UnsupportedPixelSpec(f"(0028,0002) Samples per Pixel {spec.samples_per_pixel} is not 1 or 3")
    if spec.bits_allocated not in (8, 16):
        raise UnsupportedPixelSpec(f"(0028,0100) Bits Allocated {spec.bits_allocated} is not 8 or 16")
    if spec.rows > 65535 or spec.columns > 65535:
        raise UnsupportedPixelSpec("(0028,0010) Rows and (0028,0011) Columns must fit JPEG-LS's 16-bit fields")
    spec.check_frame(frame)
    if np.asarray(mask).shape != (spec.rows, spec.columns):
        raise ValueError(f"mask shape {np.asarray(mask).shape} is not the frame's ({spec.rows}, {spec.columns})")
    if isinstance(max_error, bool) or not isinstance(max_error, int | np.integer) \
            or not 0 <= max_error <= MAX_ERROR_LIMIT:
        raise ValueError(f"max_error {max_error!r} must be an integer in 0..{MAX_ERROR_LIMIT}")


def _split(frame: npt.NDArray[np.integer], spec: PixelSpec) -> tuple[npt.NDArray[np.unsignedinteger],
                                                                       npt.NDArray[np.unsignedinteger] | None]:
    """The coded values (offset binary when signed, so JPEG-LS sees one unsigned range) and the
    bits above Bits Stored, or None when those are what the values imply (clear, or the sign)."""
    words = frame.view(spec.unsigned_dtype)
    low_mask = spec.unsigned_dtype.type((1 << spec.bits_stored) - 1)
    low = words & low_mask
    coded = low ^ spec.unsigned_dtype.type(1 << (spec.bits_stored - 1)) if spec.signed else low
    values = coded.astype(np.uint8 if spec.bits_stored <= 8 else np.uint16)
    if spec.bits_stored == spec.bits_allocated:
        return values, None
    high = words >> spec.unsigned_dtype.type(spec.bits_stored)
    if np.array_equal(high, _implied_high(low, spec)):
        return values, None
    return values, high


def _implied_high(low: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
    if not spec.signed:
        return np.zeros_like(low)
    ones = spec.unsigned_dtype.type((1 << (spec.bits_allocated - spec.bits_stored)) - 1)
    negative = (low >> spec.unsigned_dtype.type(spec.bits_stored - 1)) != 0
    implied: npt.NDArray[np.unsignedinteger] = np.where(negative, ones, spec.unsigned_dtype.type(0)).astype(
        spec.unsigned_dtype)
    return implied


def _join(values: npt.NDArray[np.unsignedinteger], high: npt.NDArray[np.unsignedinteger] | None,
          spec: PixelSpec) -> npt.NDArray[np.integer]:
    low = values.astype(spec.unsigned_dtype)
    if spec.signed:
        low = low ^ spec.unsigned_dtype.type(1 << (spec.bits_stored - 1))
    if spec.bits_stored < spec.bits_allocated:
        upper = high if high is not None else _implied_high(low, spec)
        low = low | (upper << spec.unsigned_dtype.type(spec.bits_stored)).astype(spec.unsigned_dtype)
    frame: npt.NDArray[np.integer] = np.ascontiguousarray(low).view(spec.dtype)
    return frame


def _sample_mask(mask: Mask, spec: PixelSpec) -> Mask:
    if spec.samples_per_pixel == 1:
        return mask
    spread: Mask = np.repeat(mask[:, :, None], spec.samples_per_pixel, axis=2)
    return spread


def _median(values: npt.NDArray[np.unsignedinteger]) -> int:
    return int(np.median(values)) if values.size else 0


def _correction(values: npt.NDArray[np.unsignedinteger], approximate: npt.NDArray[np.unsignedinteger],
                sample_mask: Mask, near: int) -> bytes:
    """The residual inside the mask, shifted to 0..2*NEAR, in the cheaper of two codings.

    Near-lossless residuals are close to uniform over the 2*NEAR+1 values, which a byte-oriented
    compressor codes poorly and slowly; packing groups of them as base-(2*NEAR+1) numbers costs
    within 1 % of their entropy. Where the residual is not uniform (flat regions that JPEG-LS
    run mode reproduced exactly), zstd wins, so both are tried.
    """
    residual = values[sample_mask].astype(np.int32) - approximate[sample_mask].astype(np.int32) + near
    if residual.size == 0:
        return b""
    digits = residual.astype(np.uint16)
    packed = bytes([_CORRECTION_PACKED]) + _pack_digits(digits, 2 * near + 1)
    # Residuals span 0..2*NEAR <= 510: one byte each up to NEAR 127, two beyond.
    dtype = np.uint8 if near <= 127 else np.dtype("<u2")
    squeezed = bytes([_CORRECTION_ZSTD]) + zstandard.ZstdCompressor(level=3).compress(digits.astype(dtype).tobytes())
    return min(packed, squeezed, key=len)


def _grouping(base: int) -> tuple[int, int]:
    """(digits per group, bits per group) with the fewest bits per digit, groups below 2**48."""
    best = (1, max(1, (base - 1).bit_length()))
    for group in range(1, 49):
        if base ** group > 1 << 48:
            break
        bits = max(1, (base ** group - 1).bit_length())
        if bits * best[0] < best[1] * group:
            best = (group, bits)
    return best


def _pack_digits(digits: npt.NDArray[np.uint16], base: int) -> bytes:
    group, bits = _grouping(base)
    padded = np.zeros(-(-digits.size // group) * group, dtype=np.uint64)
    padded[:digits.size] = digits
    weights = np.uint64(base) ** np.arange(group, dtype=np.uint64)
    numbers = (padded.reshape(-1, group) * weights).sum(axis=1, dtype=np.uint64)
    shifts = np.arange(bits, dtype=np.uint64)
    chunks = []
    for start in range(0, numbers.size, _PACK_CHUNK):  # bounds the bit matrix's memory
        part = numbers[start:start + _PACK_CHUNK]
        chunks.append(((part[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).ravel())
    return np.packbits(np.concatenate(chunks), bitorder="little").tobytes()


def _unpack_digits(data: bytes, base: int, count: int) -> npt.NDArray[np.int32]:
    group, bits = _grouping(base)
    groups = -(-count // group)
    if len(data) != (groups * bits + 7) // 8:
        raise CorruptBitstream(f"packed correction of {len(data)} bytes does not hold {count} residuals")
    flags = np.unpackbits(np.frombuffer(data, np.uint8), count=groups * bits, bitorder="little")
    numbers = (flags.reshape(groups, bits).astype(np.uint64) << np.arange(bits, dtype=np.uint64)).sum(
        axis=1, dtype=np.uint64)
    if numbers.size and int(numbers.max()) >= base ** group:
        raise CorruptBitstream("packed correction holds a group beyond its base")
    weights = np.uint64(base) ** np.arange(group, dtype=np.uint64)
    digits = (numbers[:, None] // weights) % np.uint64(base)
    result: npt.NDArray[np.int32] = digits.ravel()[:count].astype(np.int32)
    return result


def _assemble(spec: PixelSpec, layout: Layout, max_error: int, near: int, mask_section: bytes, base: bytes,
              extra: bytes, high_section: bytes, expected: npt.NDArray[np.integer] | None
              ) -> tuple[bytes, npt.NDArray[np.integer]]:
    """The blob and the frame its checksum names. `expected`, when the encoder knows it, is the
    frame the sections decode to (any decode fails on the frame checksum if it is not);
    otherwise the sections are decoded here to find it."""
    sections = mask_section + base + extra + high_section
    photometric = spec.photometric.encode("ascii")
    length = _PREFIX.size + _FIELDS.size + 1 + len(photometric) + _CRC.size
    # Without `expected`, the decoded frame's checksum is only known after decoding; it is patched in below.
    head = (_PREFIX.pack(MAGIC, FORMAT_VERSION, length)
            + _FIELDS.pack(spec.rows, spec.columns, spec.samples_per_pixel, spec.bits_allocated, spec.bits_stored,
                           int(spec.signed), spec.planar_configuration, int(layout), max_error, near,
                           len(mask_section), len(base), len(extra), len(high_section), _crc(sections), 0)
            + bytes([len(photometric)]) + photometric)
    frame = expected
    if frame is None:
        provisional = head + _CRC.pack(_crc(head)) + sections
        frame, _ = _reconstruct(provisional, read_header(provisional))
    head = head[:_PREFIX.size + _FIELDS.size - _CRC.size] + _CRC.pack(_crc(frame)) + head[_PREFIX.size + _FIELDS.size:]
    return head + _CRC.pack(_crc(head)) + sections, frame


def _reconstruct(blob: bytes, header: RoiHeader) -> tuple[npt.NDArray[np.integer], Mask]:
    spec = header.spec
    precision = max(2, spec.bits_stored)
    position = header.header_length
    sections = []
    for length in (header.mask_length, header.base_length, header.extra_length, header.high_length):
        sections.append(blob[position:position + length])
        position += length
    mask_section, base, extra, high_section = sections
    pixels = spec.rows * spec.columns
    packed = _decompress(mask_section, (pixels + 7) // 8, "mask")
    mask: Mask = np.unpackbits(np.frombuffer(packed, np.uint8), count=pixels, bitorder="little").astype(bool)
    mask = mask.reshape(spec.rows, spec.columns)
    sample_mask = _sample_mask(mask, spec)
    if header.layout is Layout.LOSSLESS:
        values = _jls_decode(base, spec, precision, 0)
        if extra:
            raise CorruptBitstream("a lossless blob has an extra section")
    elif header.layout is Layout.CORRECTION:
        values = _jls_decode(base, spec, precision, header.near)
        count = int(sample_mask.sum())
        residual = _read_correction(extra, count, header.near)
        if residual.size and int(residual.max()) > 2 * header.near:
            raise CorruptBitstream("correction beyond the NEAR bound")
        corrected = values.astype(np.int32)
        corrected[sample_mask] += residual - header.near
        if corrected.size and (int(corrected.min()) < 0 or int(corrected.max()) >= 1 << precision):
            raise CorruptBitstream("corrected values outside the stored range")
        values = corrected.astype(values.dtype)
    elif header.layout is Layout.PRED:
        tolerance = np.where(mask, 0, header.near).astype(np.uint8)
        rebuilt = decode_within(base, spec.rows, spec.columns, (1 << precision) - 1, tolerance)
        values = rebuilt.astype(np.uint8 if precision <= 8 else np.uint16)
    else:
        outside = _jls_decode(base, spec, precision, header.near)
        inside = _jls_decode(extra, spec, precision, 0)
        values = np.where(sample_mask, inside, outside)
    high = None
    if high_section:
        if spec.bits_stored == spec.bits_allocated:
            raise CorruptBitstream("a high-bit section for a frame without bits above Bits Stored")
        raw = _decompress(high_section, spec.frame_nbytes, "high bits")
        high = np.frombuffer(raw, spec.unsigned_dtype).reshape(spec.frame_shape)
        if int(high.max()) >> (spec.bits_allocated - spec.bits_stored):
            raise CorruptBitstream("high-bit section holds more than the bits above Bits Stored")
    return _join(values, high, spec), mask


def _read_correction(section: bytes, count: int, near: int) -> npt.NDArray[np.int32]:
    if not count:
        if section:
            raise CorruptBitstream("a correction section for an empty mask")
        return np.zeros(0, dtype=np.int32)
    if not section:
        raise CorruptBitstream("the correction section is missing")
    coding, body = section[0], section[1:]
    if coding == _CORRECTION_PACKED:
        return _unpack_digits(body, 2 * near + 1, count)
    if coding == _CORRECTION_ZSTD:
        wide = near > 127
        raw = _decompress(body, count * (2 if wide else 1), "correction")
        return np.frombuffer(raw, np.dtype("<u2") if wide else np.uint8).astype(np.int32)
    raise CorruptBitstream(f"unknown correction coding {coding}")


def _verify(blob: bytes, frame: npt.NDArray[np.integer], spec: PixelSpec, mask: Mask,
            max_error: int) -> npt.NDArray[np.integer]:
    try:
        decoded, stored_mask = decode(blob)
    except CodecError as exc:
        raise VerificationFailed(f"ROI-hybrid blob does not decode: {exc}") from exc
    if not np.array_equal(stored_mask, mask):
        raise VerificationFailed("ROI-hybrid blob does not give back its mask")
    if decoded.dtype != frame.dtype or decoded.shape != frame.shape:
        raise VerificationFailed(f"ROI-hybrid decoded {decoded.dtype}{decoded.shape}, expected {frame.dtype}{frame.shape}")
    sample_mask = _sample_mask(mask, spec)
    if not np.array_equal(decoded[sample_mask], frame[sample_mask]):
        raise VerificationFailed("ROI-hybrid blob is not bit-exact inside the mask")
    if spec.bits_stored < spec.bits_allocated:
        # Bits that only extend the sign follow the value (a value may cross zero within the
        # bound); any other bits above Bits Stored must come back as they were.
        shift = spec.unsigned_dtype.type(spec.bits_stored)
        low_mask = spec.unsigned_dtype.type((1 << spec.bits_stored) - 1)
        original_words, decoded_words = frame.view(spec.unsigned_dtype), decoded.view(spec.unsigned_dtype)
        original_high = original_words >> shift
        expected = original_high
        if np.array_equal(original_high, _implied_high(original_words & low_mask, spec)):
            expected = _implied_high(decoded_words & low_mask, spec)
        if not np.array_equal(decoded_words >> shift, expected):
            raise VerificationFailed("ROI-hybrid blob altered bits above (0028,0101) Bits Stored")
    error = np.abs(stored_values(decoded, spec) - stored_values(frame, spec))
    if error.size and int(error.max()) > max_error:
        raise VerificationFailed(f"ROI-hybrid error {int(error.max())} exceeds the bound {max_error}")
    return decoded


def _jls_encode(values: npt.NDArray[np.unsignedinteger], near: int, precision: int, spec: PixelSpec) -> bytes:
    return charls_encode(values, spec, precision, near)


def _jls_decode(stream: bytes, spec: PixelSpec, precision: int, near: int) -> npt.NDArray[np.unsignedinteger]:
    # CharLS spends seconds on a truncated stream before giving up; every stream it writes ends with EOI.
    if not stream.endswith(_EOI):
        raise CorruptBitstream("JPEG-LS section does not end with EOI")
    try:
        buffer, info = jpeg_ls.decode_buffer(stream)
    except (RuntimeError, ValueError) as exc:
        raise CorruptBitstream(f"JPEG-LS decoding failed: {exc}") from exc
    expected = {"width": spec.columns, "height": spec.rows, "components": spec.samples_per_pixel,
                "bits_per_sample": precision, "allowed_lossy_error": near}
    for key, value in expected.items():
        if info.get(key) != value:
            raise CorruptBitstream(f"JPEG-LS section has {key} {info.get(key)!r}, expected {value}")
    dtype: np.dtype[np.unsignedinteger] = np.dtype(np.uint8) if precision <= 8 else np.dtype("<u2")
    if len(buffer) != spec.rows * spec.columns * spec.samples_per_pixel * dtype.itemsize:
        raise CorruptBitstream(f"JPEG-LS decoded {len(buffer)} bytes, not one frame of {spec.frame_shape}")
    values: npt.NDArray[np.unsignedinteger] = np.frombuffer(buffer, dtype).reshape(spec.frame_shape)
    if values.size and int(values.max()) >> precision:
        raise CorruptBitstream("JPEG-LS decoded values wider than the stored precision")
    return values


def _compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)


def _decompress(data: bytes, expected: int, what: str) -> bytes:
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=max(expected, 1))
    except zstandard.ZstdError as exc:
        raise CorruptBitstream(f"{what} section: {exc}") from exc
    if len(raw) != expected:
        raise CorruptBitstream(f"{what} section holds {len(raw)} bytes, expected {expected}")
    return raw


def _crc(data: bytes | memoryview | npt.NDArray[np.generic]) -> int:
    buffer = np.ascontiguousarray(data).data if isinstance(data, np.ndarray) else data
    return zlib.crc32(buffer) & 0xFFFFFFFF
