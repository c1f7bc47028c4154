"""Pixel description, codec capabilities, the codec protocol and the errors of pixcodec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "Capabilities",
    "CodecError",
    "CodecUnavailable",
    "CorruptBitstream",
    "FrameCodec",
    "ReferencingCodec",
    "PHOTOMETRIC_SAMPLES",
    "PixelSpec",
    "UnsupportedPixelSpec",
    "VerificationFailed",
]


class CodecError(Exception):
    """Base of every error pixcodec raises on purpose."""


class UnsupportedPixelSpec(CodecError):
    """The pixel description (or a frame) is invalid, or a codec cannot code it."""


class CodecUnavailable(CodecError):
    """No codec is registered (or usable) under the requested id and bitstream version."""


class VerificationFailed(CodecError):
    """Decoding the freshly encoded frame did not give back the exact input."""


class CorruptBitstream(CodecError):
    """A stored container or payload is truncated, mutated or inconsistent."""


# PS3.3 C.7.6.3.1.2: the number of samples each Photometric Interpretation implies.
PHOTOMETRIC_SAMPLES: dict[str, int] = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "HSV": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_PARTIAL_422": 3,
    "YBR_PARTIAL_420": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
    "ARGB": 4,
    "CMYK": 4,
}

# One frame must fit the container's 32-bit payload length even uncompressed.
MAX_FRAME_BYTES = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PixelSpec:
    """What one frame is, as the Image Pixel module says: never inferred from the array."""

    rows: int  # (0028,0010)
    columns: int  # (0028,0011)
    samples_per_pixel: int  # (0028,0002)
    bits_allocated: int  # (0028,0100)
    bits_stored: int  # (0028,0101)
    signed: bool  # (0028,0103) Pixel Representation == 1
    photometric: str  # (0028,0004)
    planar_configuration: int = 0  # (0028,0006); frames always arrive interleaved

    def __post_init__(self) -> None:
        problems = _spec_problems(self)
        if problems:
            raise UnsupportedPixelSpec("; ".join(problems))

    @classmethod
    def for_bytes(cls, length: int) -> PixelSpec:
        """The spec of an opaque byte string handed over as a uint8 array of shape (1, length).

        Used for pixel data no image codec takes (1-bit, 32-bit, odd layouts): the spec then
        describes the bytes, not the image.
        """
        return cls(rows=1, columns=length, samples_per_pixel=1, bits_allocated=8, bits_stored=8,
                   signed=False, photometric="MONOCHROME2")

    @property
    def dtype(self) -> np.dtype[np.integer]:
        """The numpy dtype of a frame of this spec (native little endian)."""
        kind = "i" if self.signed else "u"
        return np.dtype(f"<{kind}{self.bits_allocated // 8}")

    @property
    def unsigned_dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype(f"<u{self.bits_allocated // 8}")

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)

    @property
    def frame_nbytes(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * (self.bits_allocated // 8)

    def check_frame(self, frame: npt.NDArray[np.generic]) -> None:
        """Raise UnsupportedPixelSpec unless `frame` has exactly this spec's dtype and shape."""
        if frame.dtype != self.dtype:
            raise UnsupportedPixelSpec(
                f"frame dtype {frame.dtype.str} does not match (0028,0100) Bits Allocated "
                f"{self.bits_allocated} and (0028,0103) Pixel Representation {int(self.signed)}: "
                f"expected {self.dtype.str}"
            )
        if frame.shape != self.frame_shape:
            raise UnsupportedPixelSpec(
                f"frame shape {frame.shape} does not match (0028,0010) Rows {self.rows}, "
                f"(0028,0011) Columns {self.columns} and (0028,0002) Samples per Pixel "
                f"{self.samples_per_pixel}: expected {self.frame_shape}"
            )


def _spec_problems(spec: PixelSpec) -> list[str]:
    problems: list[str] = []
    for tag, name, value in (("0028,0010", "Rows", spec.rows), ("0028,0011", "Columns", spec.columns)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"({tag}) {name} {value!r} must be a positive integer")
    if spec.bits_allocated not in (8, 16, 32):
        hint = ": hand 1-bit data over as bytes (PixelSpec.for_bytes)" if spec.bits_allocated == 1 else ""
        problems.append(f"(0028,0100) Bits Allocated {spec.bits_allocated!r} is not one of 8, 16, 32{hint}")
    elif not isinstance(spec.bits_stored, int) or spec.bits_stored < 1:
        problems.append(f"(0028,0101) Bits Stored {spec.bits_stored!r} must be a positive integer")
    elif spec.bits_stored > spec.bits_allocated:
        problems.append(
            f"(0028,0101) Bits Stored {spec.bits_stored} > (0028,0100) Bits Allocated {spec.bits_allocated}"
        )
    if not isinstance(spec.signed, bool):
        problems.append(f"(0028,0103) Pixel Representation {spec.signed!r} must be given as a bool")
    expected_samples = PHOTOMETRIC_SAMPLES.get(spec.photometric) if isinstance(spec.photometric, str) else None
    if expected_samples is None:
        problems.append(f"(0028,0004) Photometric Interpretation {spec.photometric!r} is not a defined term")
    elif spec.samples_per_pixel != expected_samples:
        problems.append(
            f"(0028,0002) Samples per Pixel {spec.samples_per_pixel!r} does not match "
            f"(0028,0004) Photometric Interpretation {spec.photometric} ({expected_samples})"
        )
    if spec.planar_configuration not in (0, 1):
        problems.append(f"(0028,0006) Planar Configuration {spec.planar_configuration!r} is not 0 or 1")
    if not problems and spec.frame_nbytes > MAX_FRAME_BYTES:
        problems.append(f"one frame of {spec.frame_nbytes} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return problems


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a codec accepts, stated as data against the DICOM attributes.

    Stated for the spec as the caller describes the frames; the container's reversible
    preprocessing (see preprocess.py) turns signed or junk-carrying words into unsigned values
    of at most Bits Allocated bits before the codec sees them.
    """

    lossless: bool
    samples_per_pixel: frozenset[int]
    bits_allocated: frozenset[int]
    signed: bool = True
    max_dimension: int | None = None
    photometric: frozenset[str] | None = None  # None: any
    # Predicts a frame from the previous one when given it (a ReferencingCodec).
    reference_frames: bool = False

    def unsupported_reasons(self, spec: PixelSpec) -> list[str]:
        reasons: list[str] = []
        if spec.samples_per_pixel not in self.samples_per_pixel:
            reasons.append(
                f"(0028,0002) Samples per Pixel {spec.samples_per_pixel} is not one of {_listed(self.samples_per_pixel)}"
            )
        if spec.bits_allocated not in self.bits_allocated:
            reasons.append(
                f"(0028,0100) Bits Allocated {spec.bits_allocated} is not one of {_listed(self.bits_allocated)}"
            )
        if spec.signed and not self.signed:
            reasons.append("(0028,0103) Pixel Representation 1 (signed) is not supported")
        if self.max_dimension is not None:
            if spec.rows > self.max_dimension:
                reasons.append(f"(0028,0010) Rows {spec.rows} > {self.max_dimension}")
            if spec.columns > self.max_dimension:
                reasons.append(f"(0028,0011) Columns {spec.columns} > {self.max_dimension}")
        if self.photometric is not None and spec.photometric not in self.photometric:
            reasons.append(
                f"(0028,0004) Photometric Interpretation {spec.photometric} is not one of "
                f"{', '.join(sorted(self.photometric))}"
            )
        return reasons


def _listed(values: frozenset[int]) -> str:
    return ", ".join(str(v) for v in sorted(values))


@runtime_checkable
class FrameCodec(Protocol):
    """A codec for single frames: stateless, so one instance serves every thread and process.

    `encode` receives the frame after preprocessing, with the coding spec that describes it:
    unsigned (`spec.signed` is False), dtype `spec.dtype`, every value below 2**spec.bits_stored.
    `decode` returns exactly that array again. Both raise CodecError subclasses only.
    """

    @property
    def codec_id(self) -> str: ...

    @property
    def bitstream_version(self) -> int: ...

    @property
    def transfer_syntax_uid(self) -> str | None: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> bytes: ...

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]: ...


@runtime_checkable
class ReferencingCodec(FrameCodec, Protocol):
    """A frame codec that can also predict a frame from a reference frame of the same coding
    spec (the previous frame or slice): `encode` decides whether the reference is worth it, and
    `references` tells from a payload whether its decode needs one. An instance offers this
    when its capabilities say `reference_frames`."""

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec, *,
               reference: npt.NDArray[np.unsignedinteger] | None = None) -> bytes: ...

    def decode(self, payload: bytes, spec: PixelSpec, *,
               reference: npt.NDArray[np.unsignedinteger] | None = None) -> npt.NDArray[np.unsignedinteger]: ...

    def references(self, payload: bytes) -> bool: ...
