"""Every corpus image through the mode decision at both budgets, into a container and back, exactly."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from pixcodec import ContainerReader, ContainerWriter
from pixcodec.container import encode_frame
from pixcodec.decide import ARCHIVE, INGEST, Budget, decide, probe_index
from pixcodec.standard import JpegLsCodec, JpegXlCodec

from .corpus_frames import manifest, raw_frames, spec_of

IMAGES = [e for e in manifest() if e["has_pixel_data"] and e["bits_allocated"] in (8, 16, 32)]


def test_the_corpus_is_there() -> None:
    assert len(IMAGES) > 150


@pytest.mark.parametrize("budget", [INGEST, ARCHIVE], ids=lambda b: b.name)
@pytest.mark.parametrize("entry", IMAGES, ids=[e["path"] for e in IMAGES])
def test_corpus_image_round_trips_through_the_decision(entry: dict[str, Any], budget: Budget) -> None:
    spec = spec_of(entry)
    frames = list(raw_frames(entry, limit=3 if budget is INGEST else 2))
    probe = probe_index(len(frames))
    decision = decide(frames[probe], spec, budget)
    sizes = [t.size for t in decision.trials if t.size is not None]
    size = len(decision.encoded.payload) + len(decision.encoded.table)
    assert size == min(sizes)
    # Never worse than the baselines each budget promises (they always run).
    baselines = [JpegLsCodec()] + ([JpegXlCodec(effort=3)] if budget is ARCHIVE else [])
    for codec in baselines:
        if not codec.capabilities.unsupported_reasons(spec):
            assert size <= len(encode_frame(codec, frames[probe], spec).payload)
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, decision.codec, spec, pack=decision.pack)  # verifies every frame
    for index, frame in enumerate(frames):
        writer.add_frame(frame, decision.encoded if index == probe else None)
    writer.finish()
    buffer.seek(0)
    reader = ContainerReader(buffer)
    for index, frame in enumerate(frames):
        restored = reader.frame(index)
        assert restored.dtype == frame.dtype and np.array_equal(restored, frame)
