"""Every corpus image through each standard codec that takes its pixel spec, bit-exactly.

Two frames per object (first and last) keep the run short; JPEG XL runs at effort 1 only, since
the effort changes the encoder's search, not the bitstream format the decoder reads.
"""

from __future__ import annotations

from typing import Any

import pytest

from pixcodec import FrameCodec, Htj2kCodec, Jpeg2000Codec, JpegXlCodec, RleCodec

from .corpus_frames import manifest, raw_frames, spec_of
from .helpers import round_trip

CODECS: list[FrameCodec] = [Jpeg2000Codec(), Htj2kCodec(), JpegXlCodec(effort=1), RleCodec()]
ENTRIES = [e for e in manifest() if e["bits_allocated"] != 1]  # 1-bit data only ever goes as bytes


def test_every_image_codec_takes_most_of_the_corpus() -> None:
    for codec in CODECS:
        taken = [e for e in ENTRIES if not codec.capabilities.unsupported_reasons(spec_of(e))]
        assert len(taken) >= 200, codec.codec_id


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["path"] for e in ENTRIES])
def test_corpus_round_trip(entry: dict[str, Any]) -> None:
    spec = spec_of(entry)
    codecs = [codec for codec in CODECS if not codec.capabilities.unsupported_reasons(spec)]
    if spec.bits_allocated == 32:
        assert [codec.codec_id for codec in codecs] == ["rle"]
    frames = list(raw_frames(entry, limit=2))
    for codec in codecs:
        round_trip(codec, spec, frames)
