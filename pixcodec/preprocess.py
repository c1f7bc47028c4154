"""Reversible per-frame preprocessing: what the codec sees instead of the raw stored words.

Codecs code small unsigned values well and two's-complement patterns or stray high bits badly
(most reject signed input outright), so each frame is mapped, exactly and reversibly, to unsigned
values of the smallest depth that holds it. The choice is made per frame from its minimum and
maximum (two vectorised reductions) and recorded in the container.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from .base import CorruptBitstream, PixelSpec

__all__ = ["Mode", "Preprocessing", "coding_spec", "forward", "inverse"]


class Mode(IntEnum):
    """Stored as one byte in the container's frame index: values are part of the format."""

    # Full raw words as unsigned values of Bits Allocated depth: overlay bits or junk above
    # Bits Stored, or signed words that are not a pure sign extension.
    RAW = 0
    # Unsigned words with every bit above Bits Stored clear: coded at Bits Stored depth.
    DEPTH = 1
    # Signed words that are a pure sign extension of Bits Stored bits: 2**(BitsStored-1) added.
    OFFSET = 2


@dataclass(frozen=True, slots=True)
class Preprocessing:
    mode: Mode
    depth: int  # bits per coded value; the coding spec's Bits Stored

    def describe(self) -> str:
        return f"{self.mode.name.lower()}/{self.depth}"


def forward(frame: npt.NDArray[np.integer], spec: PixelSpec) -> tuple[npt.NDArray[np.unsignedinteger], Preprocessing]:
    """Map a frame (already checked against `spec`) to the unsigned array the codec codes."""
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
    """The spec of the array `forward` produced: unsigned, `record.depth` bits."""
    return dataclasses.replace(spec, bits_stored=record.depth, signed=False)


def parse_record(mode: int, depth: int) -> Preprocessing:
    try:
        return Preprocessing(Mode(mode), depth)
    except ValueError:
        raise CorruptBitstream(f"unknown preprocessing mode {mode}") from None
