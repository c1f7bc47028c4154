"""Every corpus image with 8/16 bits allocated and 1/3 samples, through the ingest codec and back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pixcodec import Mode, PixelSpec, ZstdCodec, default_registry

from .corpus_frames import manifest, raw_frames, read_dataset, spec_of
from .helpers import jpeg_ls_dataset, round_trip

ENTRIES = manifest()
IMAGES = [e for e in ENTRIES if e["bits_allocated"] in (8, 16) and e["samples_per_pixel"] in (1, 3)]
REGISTRY = default_registry()


def test_the_corpus_is_there() -> None:
    assert len(IMAGES) > 150


@pytest.mark.parametrize("entry", IMAGES, ids=[e["path"] for e in IMAGES])
def test_corpus_round_trip(entry: dict[str, Any]) -> None:
    spec = spec_of(entry)
    codec = REGISTRY.choose_lossless(spec)
    assert codec.codec_id == "jpeg-ls"
    frames = list(raw_frames(entry))
    reader = round_trip(codec, spec, frames)
    if not spec.signed:
        clean = all(int(f.max()) < (1 << spec.bits_stored) for f in frames)
        assert all(reader.preprocessing(i).mode is (Mode.DEPTH if clean else Mode.RAW) for i in range(len(frames)))


def test_corpus_ct_codestream_decodes_with_pydicom() -> None:
    entry = next(e for e in IMAGES if e["modality"] == "CT" and not e["signed"] and not e["encapsulated"])
    spec = spec_of(entry)
    frame = next(raw_frames(entry))
    reader = round_trip(REGISTRY.choose_lossless(spec), spec, [frame])
    stream = reader.standard_codestream(0)
    assert stream is not None
    assert np.array_equal(jpeg_ls_dataset([stream], spec).pixel_array, frame)


@pytest.mark.parametrize("allocated", [1, 32])
def test_pixel_data_no_image_codec_takes_goes_through_as_bytes(allocated: int) -> None:
    entry = next(e for e in ENTRIES if e["bits_allocated"] == allocated)  # the 1-bit SEG, the 32-bit RTDOSE
    raw = np.frombuffer(read_dataset(entry).PixelData, dtype=np.uint8).reshape(1, -1)
    spec = PixelSpec.for_bytes(raw.shape[1])
    reader = round_trip(ZstdCodec(), spec, [raw])
    assert reader.codec_id == "zstd"
