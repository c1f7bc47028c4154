"""Conformance matrix: every registered codec (and JPEG XL at efforts 1, 3, 7) over pixel specs.

Each case goes through the container, which applies the preprocessing and verifies every frame.
A codec either gives back every frame bit-exactly, with the caller's dtype, or declines the spec
up front with UnsupportedPixelSpec naming the (0028,xxxx) attribute, for exactly the reasons its
declared capabilities give: nothing may fail later or come back different.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from pixcodec import (
    ContainerReader,
    ContainerWriter,
    FrameCodec,
    JpegXlCodec,
    PixelSpec,
    UnsupportedPixelSpec,
    default_registry,
)
from pixcodec.preprocess import coding_spec, forward

from .helpers import clean_frame, junk_frame, smooth_frame

REGISTRY = default_registry()
CODECS: list[FrameCodec] = [REGISTRY.get(*key) for key in REGISTRY.keys()] + [JpegXlCodec(1), JpegXlCodec(3)]
ATTRIBUTE = re.compile(r"\(0028,[0-9A-F]{4}\)")

Frame = npt.NDArray[np.integer]
FrameMaker = Callable[[PixelSpec, np.random.Generator], Frame]


def _low(spec: PixelSpec) -> int:
    return -(1 << (spec.bits_stored - 1)) if spec.signed else 0


def _high(spec: PixelSpec) -> int:
    return (1 << (spec.bits_stored - 1)) - 1 if spec.signed else (1 << spec.bits_stored) - 1


def _constant_low(spec: PixelSpec, rng: np.random.Generator) -> Frame:
    return np.full(spec.frame_shape, _low(spec), dtype=spec.dtype)


def _constant_high(spec: PixelSpec, rng: np.random.Generator) -> Frame:
    return np.full(spec.frame_shape, _high(spec), dtype=spec.dtype)


def _extremes(spec: PixelSpec, rng: np.random.Generator) -> Frame:
    """A checkerboard of the lowest and highest stored values: the worst case for a transform."""
    board = np.indices(spec.frame_shape).sum(axis=0) % 2
    return np.where(board == 1, _high(spec), _low(spec)).astype(spec.dtype)


def _smooth(spec: PixelSpec, rng: np.random.Generator) -> Frame:
    return smooth_frame(spec)


CONTENTS: dict[str, FrameMaker] = {
    "noise": clean_frame,
    "smooth": _smooth,
    "constant-low": _constant_low,
    "constant-high": _constant_high,
    "extremes": _extremes,
    "bits-above-stored": junk_frame,  # overlay bits or a broken sign extension: coded as raw words
}
EVERY_CONTENT = tuple(CONTENTS)
NO_JUNK = tuple(name for name in CONTENTS if name != "bits-above-stored")


@dataclass(frozen=True)
class Case:
    name: str
    spec: PixelSpec
    contents: tuple[str, ...] = EVERY_CONTENT  # one frame each, all in one multi-frame container

    def frames(self) -> list[Frame]:
        rng = np.random.default_rng(sum(map(ord, self.name)))
        return [CONTENTS[content](self.spec, rng) for content in self.contents]


def _spec(rows: int, columns: int, allocated: int, stored: int, signed: bool = False,
          photometric: str = "MONOCHROME2") -> PixelSpec:
    samples = {"RGB": 3, "YBR_FULL": 3, "CMYK": 4, "ARGB": 4}.get(photometric, 1)
    return PixelSpec(rows=rows, columns=columns, samples_per_pixel=samples, bits_allocated=allocated,
                     bits_stored=stored, signed=signed, photometric=photometric)


def _cases() -> list[Case]:
    # 33x35 is odd both ways and large enough for two wavelet decomposition levels.
    cases = [
        Case(f"{'s' if signed else 'u'}{allocated}-{stored}", _spec(33, 35, allocated, stored, signed))
        for allocated, depths in ((8, range(1, 9)), (16, range(1, 17)))
        for stored in depths
        for signed in (False, True)
    ]
    for rows, columns in ((1, 1), (1, 17), (17, 1), (7, 9), (3, 513), (513, 3), (64, 80)):
        cases.append(Case(f"u16-12-{rows}x{columns}", _spec(rows, columns, 16, 12)))
        cases.append(Case(f"s16-16-{rows}x{columns}", _spec(rows, columns, 16, 16, signed=True), NO_JUNK))
        cases.append(Case(f"u8-8-{rows}x{columns}", _spec(rows, columns, 8, 8), NO_JUNK))
        cases.append(Case(f"rgb8-{rows}x{columns}", _spec(rows, columns, 8, 8, photometric="RGB"), NO_JUNK))
    cases += [
        Case("mono1-16-12", _spec(23, 17, 16, 12, photometric="MONOCHROME1")),
        Case("mono1-8-8", _spec(23, 17, 8, 8, photometric="MONOCHROME1"), NO_JUNK),
        Case("palette-8-8", _spec(23, 17, 8, 8, photometric="PALETTE COLOR"), NO_JUNK),
        Case("palette-16-16", _spec(23, 17, 16, 16, photometric="PALETTE COLOR"), NO_JUNK),
        Case("palette-16-12", _spec(23, 17, 16, 12, photometric="PALETTE COLOR")),
        Case("rgb-16-16", _spec(23, 17, 16, 16, photometric="RGB"), NO_JUNK),
        Case("rgb-16-12", _spec(40, 48, 16, 12, photometric="RGB")),
        Case("rgb-8-6", _spec(23, 17, 8, 6, photometric="RGB")),
        Case("rgb-signed-16-12", _spec(23, 17, 16, 12, signed=True, photometric="RGB")),
        Case("ybr-full-8-8", _spec(23, 17, 8, 8, photometric="YBR_FULL"), NO_JUNK),
        Case("ybr-full-16-12", _spec(24, 18, 16, 12, photometric="YBR_FULL")),
        # What the image codecs do not take: 32-bit words and four samples.
        Case("u32-32", _spec(9, 7, 32, 32), NO_JUNK),
        Case("s32-24", _spec(9, 7, 32, 24, signed=True)),
        Case("rgb-32-32", _spec(5, 4, 32, 32, photometric="RGB"), NO_JUNK),
        Case("cmyk-8-8", _spec(9, 7, 8, 8, photometric="CMYK"), NO_JUNK),
        Case("argb-16-12", _spec(9, 7, 16, 12, photometric="ARGB")),
    ]
    return cases


CASES = _cases()


def _codec_id(codec: FrameCodec) -> str:
    return f"jpeg-xl-e{codec.effort}" if isinstance(codec, JpegXlCodec) else codec.codec_id


def test_the_matrix_covers_every_registered_codec_and_the_efforts() -> None:
    assert {c.codec_id for c in CODECS} == {key[0] for key in REGISTRY.keys()}
    assert sorted(c.effort for c in CODECS if isinstance(c, JpegXlCodec)) == [1, 3, 7]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("codec", CODECS, ids=_codec_id)
def test_round_trip_or_declared_decline(codec: FrameCodec, case: Case) -> None:
    reasons = codec.capabilities.unsupported_reasons(case.spec)
    frames = case.frames()
    buffer = io.BytesIO()
    try:
        writer = ContainerWriter(buffer, codec, case.spec)
    except UnsupportedPixelSpec as exc:
        assert reasons, f"declined without a declared reason: {exc}"
        assert all(reason in str(exc) for reason in reasons)
        assert ATTRIBUTE.search(str(exc))
        _check_direct_encode_declines(codec, case.spec, frames[0], reasons)
        return
    assert not reasons
    for frame in frames:
        writer.add_frame(frame)
    writer.finish()
    buffer.seek(0)
    # The default registry decodes: its one JPEG XL instance (effort 7) reads every effort.
    reader = ContainerReader(buffer)
    assert reader.frame_count == len(frames)
    for index, frame in enumerate(frames):
        decoded = reader.frame(index)
        assert decoded.dtype == frame.dtype, case.contents[index]
        assert np.array_equal(decoded, frame), case.contents[index]


def _check_direct_encode_declines(codec: FrameCodec, spec: PixelSpec, frame: Frame, reasons: list[str]) -> None:
    """Called without the container, encode refuses the same spec for the same reasons."""
    coded, record = forward(frame, spec)
    coding = coding_spec(spec, record)
    with pytest.raises(UnsupportedPixelSpec) as caught:
        codec.encode(coded, coding)
    assert ATTRIBUTE.search(str(caught.value))
    assert codec.capabilities.unsupported_reasons(coding) == reasons


@pytest.mark.parametrize("codec", CODECS, ids=_codec_id)
def test_encode_refuses_values_above_bits_stored(codec: FrameCodec) -> None:
    """The coding-spec contract is checked, so no narrowing cast can drop bits silently."""
    spec = dataclasses.replace(_spec(4, 4, 16, 8), signed=False)
    frame = np.full(spec.frame_shape, 256, dtype=np.uint16)
    with pytest.raises(UnsupportedPixelSpec, match=r"\(0028,0101\) Bits Stored 8"):
        codec.encode(frame, spec)


@pytest.mark.parametrize("effort", [0, 10, 2.5, True])
def test_jpeg_xl_effort_is_checked(effort: object) -> None:
    with pytest.raises(ValueError, match="effort"):
        JpegXlCodec(effort)  # type: ignore[arg-type]
