"""PixelSpec validation and capability declarations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pixcodec import Capabilities, PixelSpec, UnsupportedPixelSpec

from .helpers import make_spec


def test_valid_spec_describes_frames() -> None:
    spec = make_spec(rows=4, columns=5, samples=3, allocated=8, stored=8)
    assert spec.frame_shape == (4, 5, 3)
    assert spec.dtype == np.dtype("<u1")
    assert make_spec(signed=True).dtype == np.dtype("<i2")
    assert make_spec(allocated=32, stored=32).unsigned_dtype == np.dtype("<u4")


def test_spec_is_frozen_and_hashable() -> None:
    spec = make_spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.rows = 3  # type: ignore[misc]
    assert {spec: 1}[make_spec()] == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bits_stored": 17}, "(0028,0101) Bits Stored 17 > (0028,0100) Bits Allocated 16"),
        ({"bits_stored": 0}, "(0028,0101) Bits Stored 0"),
        ({"bits_allocated": 12}, "(0028,0100) Bits Allocated 12"),
        ({"bits_allocated": 1, "bits_stored": 1}, "PixelSpec.for_bytes"),
        ({"rows": 0}, "(0028,0010) Rows 0"),
        ({"columns": -3}, "(0028,0011) Columns -3"),
        ({"samples_per_pixel": 3}, "(0028,0002) Samples per Pixel 3 does not match (0028,0004)"),
        ({"photometric": "GREEN"}, "(0028,0004) Photometric Interpretation 'GREEN'"),
        ({"planar_configuration": 2}, "(0028,0006) Planar Configuration 2"),
        ({"signed": 1}, "(0028,0103) Pixel Representation 1"),
    ],
)
def test_invalid_spec_names_the_attribute(changes: dict[str, object], message: str) -> None:
    fields = dataclasses.asdict(make_spec())
    fields.update(changes)
    with pytest.raises(UnsupportedPixelSpec) as caught:
        PixelSpec(**fields)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_for_bytes_describes_an_opaque_byte_string() -> None:
    spec = PixelSpec.for_bytes(100_000)
    assert spec.frame_shape == (1, 100_000)
    assert spec.dtype == np.uint8


def test_check_frame_rejects_wrong_dtype_and_shape() -> None:
    spec = make_spec(rows=2, columns=3)
    spec.check_frame(np.zeros((2, 3), np.uint16))
    with pytest.raises(UnsupportedPixelSpec, match="Pixel Representation 0"):
        spec.check_frame(np.zeros((2, 3), np.int16))
    with pytest.raises(UnsupportedPixelSpec, match="expected <u2"):
        spec.check_frame(np.zeros((2, 3), ">u2"))
    with pytest.raises(UnsupportedPixelSpec, match=r"expected \(2, 3\)"):
        spec.check_frame(np.zeros((3, 2), np.uint16))


def test_capabilities_give_every_reason() -> None:
    caps = Capabilities(lossless=True, samples_per_pixel=frozenset({1}), bits_allocated=frozenset({8}),
                        signed=False, max_dimension=4, photometric=frozenset({"MONOCHROME2"}))
    reasons = caps.unsupported_reasons(make_spec(rows=5, columns=6, samples=3, signed=True))
    assert reasons == [
        "(0028,0002) Samples per Pixel 3 is not one of 1",
        "(0028,0100) Bits Allocated 16 is not one of 8",
        "(0028,0103) Pixel Representation 1 (signed) is not supported",
        "(0028,0010) Rows 5 > 4",
        "(0028,0011) Columns 6 > 4",
        "(0028,0004) Photometric Interpretation RGB is not one of MONOCHROME2",
    ]
    assert caps.unsupported_reasons(make_spec(rows=4, columns=4, allocated=8, stored=8)) == []
