"""Registry: lookup by (codec_id, bitstream_version), choice, unavailability."""

from __future__ import annotations

import pytest

from pixcodec import (
    CodecRegistry,
    CodecUnavailable,
    JpegLsCodec,
    JpegXlCodec,
    PixelSpec,
    UnsupportedPixelSpec,
    ZstdCodec,
    default_registry,
)

from .helpers import make_spec


def test_default_registry_order_and_choice() -> None:
    registry = default_registry()
    assert registry.keys() == [("jpeg-ls", 1), ("htj2k", 1), ("jpeg-2000", 1), ("jpeg-xl", 1), ("zstd", 1), ("rle", 1),
                               ("pred", 2), ("pred", 1)]
    assert isinstance(registry.get("jpeg-ls", 1), JpegLsCodec)
    assert isinstance(registry.get("jpeg-xl", 1), JpegXlCodec)
    assert registry.choose_lossless(make_spec(signed=True)).codec_id == "jpeg-ls"
    assert registry.choose_lossless(make_spec(samples=3, allocated=8, stored=8)).codec_id == "jpeg-ls"
    assert [c.codec_id for c in registry.candidates(make_spec())] == [
        "jpeg-ls", "htj2k", "jpeg-2000", "jpeg-xl", "zstd", "rle", "pred", "pred"]
    # 32-bit words: zstd is smaller and faster than RLE, the one standard codec that takes them.
    thirty_two = make_spec(allocated=32, stored=24)
    assert [c.codec_id for c in registry.candidates(thirty_two)] == ["zstd", "rle"]
    assert registry.choose_lossless(thirty_two).codec_id == "zstd"
    cmyk = PixelSpec(rows=2, columns=2, samples_per_pixel=4, bits_allocated=8, bits_stored=8, signed=False,
                     photometric="CMYK")
    assert registry.choose_lossless(cmyk).codec_id == "zstd"
    # Rows and Columns are US: an opaque byte string longer than 65535 only goes to zstd.
    assert registry.choose_lossless(PixelSpec.for_bytes(200_000)).codec_id == "zstd"


def test_get_unknown_raises_codec_unavailable() -> None:
    registry = default_registry()
    with pytest.raises(CodecUnavailable, match="'jpeg-ls' version 2"):
        registry.get("jpeg-ls", 2)
    with pytest.raises(CodecUnavailable):
        registry.get("j2k", 1)


def test_duplicate_registration_is_refused() -> None:
    registry = CodecRegistry()
    registry.register(ZstdCodec())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ZstdCodec())


def test_mark_unavailable_removes_from_choice_and_lookup() -> None:
    registry = default_registry()
    registry.mark_unavailable("jpeg-ls", 1, "CharLS crashed in a worker")
    with pytest.raises(CodecUnavailable, match="CharLS crashed"):
        registry.get("jpeg-ls", 1)
    assert registry.choose_lossless(make_spec()).codec_id == "htj2k"
    assert default_registry().choose_lossless(make_spec()).codec_id == "jpeg-ls"  # registries are independent


def test_no_lossless_codec_names_the_reasons() -> None:
    registry = CodecRegistry()
    registry.register(JpegLsCodec())
    with pytest.raises(UnsupportedPixelSpec, match=r"jpeg-ls/1: \(0028,0100\) Bits Allocated 32"):
        registry.choose_lossless(make_spec(allocated=32, stored=32))
