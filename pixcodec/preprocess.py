"""Reversible per-frame preprocessing: what the codec sees instead of the raw stored words.

Codecs code small unsigned values well and two's-complement patterns or stray high bits badly
(most reject signed input outright), so each frame is mapped, exactly and reversibly, to unsigned
values of the smallest depth that holds it. The choice is made per frame from its minimum and
maximum (two vectorised reductions) and recorded in the container.

On top of that, histogram packing (optional, asked for by the caller) renumbers the values a
frame really uses as 0..K-1. Images whose values sit on a sparse grid (CR/DX scaled by a lookup
table, PET scaled to 16 bits, images with gaps between tissue classes) then cost what their K
values cost; on smooth CT it breaks the linearity predictors rely on, so it is a per-image choice
made by the mode decision, not a default.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt
import zstandard

from .base import CorruptBitstream, PixelSpec

__all__ = ["Mode", "Packing", "Preprocessing", "coding_spec", "forward", "inverse"]


class Mode(IntEnum):
    """Stored as one byte in the container's frame index: values are part of the format."""

    # Full raw words as unsigned values of Bits Allocated depth: overlay bits or junk above
    # Bits Stored, or signed words that are not a pure sign extension.
    RAW = 0
    # Unsigned words with every bit above Bits Stored clear: coded at Bits Stored depth.
    DEPTH = 1
    # Signed words that are a pure sign extension of Bits Stored bits: 2**(BitsStored-1) added.
    OFFSET = 2


# The packing table's own version byte: a later table layout gets a new number, never a change.
PACKING_VERSION = 1
_PACKING_HEAD = struct.Struct("<BIII")  # version, lowest value, span (highest - lowest + 1), count
# Values are counted with a bincount over the whole coded range: bounded to 16-bit coded words.
MAX_PACKING_DEPTH = 16


@dataclass(frozen=True, slots=True, eq=False)
class Packing:
    """The sorted distinct values a frame uses after the base mode; value `values[i]` is coded as i."""

    values: npt.NDArray[np.uint32]

    @property
    def depth(self) -> int:
        return max(1, (len(self.values) - 1).bit_length())

    def to_bytes(self) -> bytes:
        low, high = int(self.values[0]), int(self.values[-1])
        bitmap = np.zeros(high - low + 1, dtype=bool)
        bitmap[self.values - low] = True
        packed = np.packbits(bitmap, bitorder="little").tobytes()
        head = _PACKING_HEAD.pack(PACKING_VERSION, low, high - low + 1, len(self.values))
        return head + zstandard.ZstdCompressor(level=9).compress(packed)

    @classmethod
    def from_bytes(cls, data: bytes, base_depth: int) -> Packing:
        if len(data) < _PACKING_HEAD.size:
            raise CorruptBitstream(f"packing table of {len(data)} bytes is too short")
        version, low, span, count = _PACKING_HEAD.unpack_from(data)
        if version != PACKING_VERSION:
            raise CorruptBitstream(f"packing table version {version} is not known to this release")
        if not 1 <= count <= span or low + span > (1 << base_depth) or base_depth > MAX_PACKING_DEPTH:
            raise CorruptBitstream(f"packing table ({low}, {span}, {count}) does not fit depth {base_depth}")
        expected = (span + 7) // 8
        try:
            packed = zstandard.ZstdDecompressor().decompress(data[_PACKING_HEAD.size:], max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise CorruptBitstream(f"packing table: {exc}") from exc
        if len(packed) != expected:
            raise CorruptBitstream("packing table bitmap has the wrong length")
        bitmap = np.unpackbits(np.frombuffer(packed, np.uint8), count=span, bitorder="little")
        values = (np.flatnonzero(bitmap) + low).astype(np.uint32)
        if len(values) != count or values[0] != low or values[-1] != low + span - 1:
            raise CorruptBitstream("packing table bitmap does not match its header")
        return cls(values)


@dataclass(frozen=True, slots=True)
class Preprocessing:
    mode: Mode
    depth: int  # bits per value after the base mode (Bits Stored, or Bits Allocated for raw)
    packing: Packing | None = field(default=None, compare=False)

    @property
    def coded_depth(self) -> int:
        """Bits per value the codec codes: the coding spec's Bits Stored."""
        return self.packing.depth if self.packing is not None else self.depth

    def describe(self) -> str:
        packed = f"+packed/{len(self.packing.values)}" if self.packing is not None else ""
        return f"{self.mode.name.lower()}/{self.depth}{packed}"


def forward(
    frame: npt.NDArray[np.integer], spec: PixelSpec, *, pack: bool = False
) -> tuple[npt.NDArray[np.unsignedinteger], Preprocessing]:
    """Map a frame (already checked against `spec`) to the unsigned array the codec codes.

    With `pack`, the used values are renumbered when that makes the coded depth smaller or the
    histogram denser; a frame whose values already are 0..K-1 is left as it is.
    """
    coded, record = _base_forward(frame, spec)
    if pack and record.depth <= MAX_PACKING_DEPTH:
        counts = np.bincount(coded.ravel(), minlength=1)
        values = np.flatnonzero(counts).astype(np.uint32)
        if int(values[-1]) + 1 != len(values):
            lookup = np.zeros(len(counts), dtype=spec.unsigned_dtype)
            lookup[values] = np.arange(len(values), dtype=spec.unsigned_dtype)
            return lookup[coded], dataclasses.replace(record, packing=Packing(values))
    return coded, record


def _base_forward(frame: npt.NDArray[np.integer], spec: PixelSpec) -> tuple[npt.NDArray[np.unsignedinteger], Preprocessing]:
    unsigned = frame.view(spec.unsigned_dtype)
    if spec.signed:
        low = -(1 << (spec.bits_stored - 1))
        if int(frame.min()) >= low and int(frame.max()) < -low:
            # Values of a pure sign extension fit [low, -low); adding -low in the unsigned view
            # wraps the negative ones into [0, -low) and lifts the rest to [-low, 2*(-low)).
            shifted = np.add(unsigned, spec.unsigned_dtype.type(-low), dtype=spec.unsigned_dtype)
            return shifted, Preprocessing(Mode.OFFSET, spec.bits_stored)
        return unsigned, Preprocessing(Mode.RAW, spec.bits_allocated)
    if spec.bits_stored == spec.bits_allocated or int(frame.max()) < (1 << spec.bits_stored):
        return unsigned, Preprocessing(Mode.DEPTH, spec.bits_stored)
    return unsigned, Preprocessing(Mode.RAW, spec.bits_allocated)


def inverse(coded: npt.NDArray[np.unsignedinteger], record: Preprocessing, spec: PixelSpec) -> npt.NDArray[np.integer]:
    """Undo `forward`: the exact raw words, with `spec`'s dtype."""
    if record.packing is not None:
        values = record.packing.values
        if coded.size and int(coded.max()) >= len(values):
            raise CorruptBitstream(f"packed value {int(coded.max())} beyond the {len(values)} table entries")
        coded = values.astype(spec.unsigned_dtype)[coded]
    if record.mode is Mode.OFFSET:
        offset = spec.unsigned_dtype.type(1 << (record.depth - 1))
        coded = np.subtract(coded, offset, dtype=spec.unsigned_dtype)
    result: npt.NDArray[np.integer] = coded.view(spec.dtype)
    return result


def check_record(record: Preprocessing, spec: PixelSpec) -> None:
    """Raise CorruptBitstream if a stored record cannot belong to `spec`."""
    if record.mode is Mode.RAW:
        valid = record.depth == spec.bits_allocated
    elif record.mode is Mode.OFFSET:
        valid = spec.signed and record.depth == spec.bits_stored
    else:
        valid = not spec.signed and record.depth == spec.bits_stored
    if not valid:
        raise CorruptBitstream(f"preprocessing {record.describe()} does not fit the stored pixel spec")


def coding_spec(spec: PixelSpec, record: Preprocessing) -> PixelSpec:
    """The spec of the array `forward` produced: unsigned, `record.coded_depth` bits."""
    return dataclasses.replace(spec, bits_stored=record.coded_depth, signed=False)


def parse_record(mode: int, depth: int, packing: bytes = b"") -> Preprocessing:
    try:
        base = Mode(mode)
    except ValueError:
        raise CorruptBitstream(f"unknown preprocessing mode {mode}") from None
    return Preprocessing(base, depth, Packing.from_bytes(packing, depth) if packing else None)
