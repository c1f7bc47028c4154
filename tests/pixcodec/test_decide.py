"""The mode decision: smallest exact result among what fits the budget, never a wrong one."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pixcodec import CodecError, ContainerReader, ContainerWriter, PixelSpec, UnsupportedPixelSpec
from pixcodec.container import encode_frame
from pixcodec.decide import ARCHIVE, INGEST, Budget, Candidate, decide, probe_index
from pixcodec.standard import JpegLsCodec, ZstdCodec

from .corpus_frames import manifest, raw_frames, spec_of
from .helpers import make_spec, smooth_frame


def _noisy_ct(spec: PixelSpec, seed: int = 3) -> npt.NDArray[np.integer]:
    rng = np.random.default_rng(seed)
    body = smooth_frame(spec).astype(np.int64) // 8
    noisy = np.clip(body + rng.normal(0, 12, size=spec.frame_shape).round().astype(np.int64), 0,
                    (1 << spec.bits_stored) - 1)
    return noisy.astype(spec.dtype)


class _Failing(JpegLsCodec):
    def encode(self, frame: Any, spec: PixelSpec) -> bytes:
        raise CodecError("the native library gave up")


class _Lying(JpegLsCodec):
    """Returns a tiny payload that does not decode to the frame: it must never win."""

    def encode(self, frame: Any, spec: PixelSpec) -> bytes:
        wrong = np.zeros_like(frame)
        return super().encode(wrong, spec)


def test_the_winner_is_the_smallest_of_the_candidates_tried() -> None:
    spec = make_spec(rows=96, columns=80, stored=12)
    frame = _noisy_ct(spec)
    decision = decide(frame, spec, ARCHIVE)
    tried = {t.name: t.size for t in decision.trials if t.size is not None}
    assert len(tried) >= 4
    # Each size is what the candidate really produces, checked independently of the decision.
    for candidate in ARCHIVE.candidates:
        if candidate.name in tried:
            encoded = encode_frame(candidate.codec, frame, spec, pack=candidate.pack)
            assert tried[candidate.name] == len(encoded.payload) + len(encoded.table)
    assert len(decision.encoded.payload) + len(decision.encoded.table) == min(tried.values())


def test_a_small_budget_runs_the_first_candidate_only() -> None:
    spec = make_spec(rows=64, columns=64)
    tight = Budget("tight", ARCHIVE.candidates, seconds_per_megasample=1e-9, min_seconds=0.0)
    decision = decide(smooth_frame(spec), spec, tight)
    ran = [t.name for t in decision.trials if t.size is not None]
    assert ran == [ARCHIVE.candidates[0].name]
    assert {t.note for t in decision.trials if t.size is None} == {"over budget"}


def test_failing_and_lying_candidates_lose() -> None:
    spec = make_spec(rows=40, columns=50)
    frame = _noisy_ct(spec)
    budget = Budget("mixed", (Candidate("failing", _Failing()), Candidate("lying", _Lying()),
                              Candidate("jpeg-ls", JpegLsCodec())), seconds_per_megasample=10.0)
    decision = decide(frame, spec, budget)
    assert decision.candidate.name == "jpeg-ls"
    notes = {t.name: t.note for t in decision.trials}
    assert notes["failing"].startswith("failed:")
    # The liar produced the smallest payload, and verification threw it out.
    sizes = {t.name: t.size for t in decision.trials}
    assert sizes["lying"] is not None and sizes["jpeg-ls"] is not None and sizes["lying"] < sizes["jpeg-ls"]


def test_every_candidate_failing_is_an_error() -> None:
    spec = make_spec(rows=8, columns=8)
    with pytest.raises(CodecError, match="every .* candidate failed"):
        decide(smooth_frame(spec), spec, Budget("broken", (Candidate("failing", _Failing()),), 1.0))


def test_no_image_codec_for_32_bit_data_leaves_the_fallback() -> None:
    spec = make_spec(rows=16, columns=16, allocated=32, stored=32)
    frame = np.arange(256, dtype=np.uint32).reshape(16, 16) * 1000
    decision = decide(frame, spec, INGEST)
    assert decision.candidate.name == "zstd"


def test_a_spec_no_candidate_takes_names_the_attribute() -> None:
    spec = make_spec(rows=16, columns=16, allocated=32, stored=32)
    with pytest.raises(UnsupportedPixelSpec, match=r"\(0028,0100\)"):
        decide(np.zeros((16, 16), np.uint32), spec, Budget("jls", (Candidate("jpeg-ls", JpegLsCodec()),), 1.0))


def test_packing_is_tried_on_a_sparse_histogram_and_wins_there() -> None:
    # Values on a grid of 7 (a lookup-table-scaled CR): packing codes 1/7 of the range.
    spec = make_spec(rows=128, columns=128, stored=16)
    frame = (_noisy_ct(make_spec(rows=128, columns=128, stored=12)).astype(np.uint32) * 7).astype(np.uint16)
    decision = decide(frame, spec, INGEST)
    packed = {t.name: t.size for t in decision.trials}
    assert packed["jpeg-ls-packed"] is not None and packed["jpeg-ls"] is not None
    assert packed["jpeg-ls-packed"] < 0.9 * packed["jpeg-ls"]
    assert decision.pack


def test_packing_is_not_tried_on_a_dense_histogram() -> None:
    spec = make_spec(rows=64, columns=64, stored=8, allocated=8)
    frame = (np.add.outer(np.arange(64), np.arange(64)) * 2 % 256).astype(np.uint8)
    frame[0, :] = np.arange(64) * 4 + 1  # every value used: nothing to pack
    frame[1, :] = np.arange(64) * 4 + 3
    frame[2, :] = np.arange(64) * 4
    frame[3, :] = np.arange(64) * 4 + 2
    decision = decide(frame, spec, INGEST)
    assert all(t.name != "jpeg-ls-packed" for t in decision.trials)


def test_the_decision_feeds_the_container_without_encoding_twice() -> None:
    spec = make_spec(rows=64, columns=48, stored=16)
    frames = [(_noisy_ct(make_spec(rows=64, columns=48), seed=s).astype(np.uint32) * 5).astype(np.uint16)
              for s in range(3)]
    decision = decide(frames[probe_index(3)], spec, INGEST)
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, decision.codec, spec, pack=decision.pack)
    for index, frame in enumerate(frames):
        writer.add_frame(frame, decision.encoded if index == probe_index(3) else None)
    writer.finish()
    buffer.seek(0)
    reader = ContainerReader(buffer)
    assert reader.codec_id == decision.codec.codec_id
    for index, frame in enumerate(frames):
        assert np.array_equal(reader.frame(index), frame)
        assert reader.preprocessing(index).packing is not None


def test_a_wrong_pre_encoded_frame_is_caught_by_the_writer() -> None:
    spec = make_spec(rows=32, columns=32)
    frame = smooth_frame(spec)
    other = encode_frame(JpegLsCodec(), np.zeros_like(frame), spec)
    writer = ContainerWriter(io.BytesIO(), JpegLsCodec(), spec)
    with pytest.raises(CodecError):
        writer.add_frame(frame, other)


def test_the_fallback_is_only_used_when_nothing_else_worked() -> None:
    spec = make_spec(rows=32, columns=32)
    budget = Budget("fb", (Candidate("jpeg-ls", JpegLsCodec()),), 1.0, fallback=Candidate("zstd", ZstdCodec()))
    assert decide(smooth_frame(spec), spec, budget).candidate.name == "jpeg-ls"
    broken = Budget("fb", (Candidate("failing", _Failing()),), 1.0, fallback=Candidate("zstd", ZstdCodec()))
    assert decide(smooth_frame(spec), spec, broken).candidate.name == "zstd"


def test_a_frame_after_another_is_judged_as_the_container_codes_it() -> None:
    """With the previous frame of a cine, pred is judged on the frame coded against it: smaller,
    and marked so that the gateway does not reuse the payload out of its place."""
    from pixcodec.pred import PredCodec

    entry = next(e for e in manifest() if e["path"] == "mr/barre_mr_heart_multiframe_8bit.dcm")
    spec = spec_of(entry)
    frames = list(raw_frames(entry, limit=entry["frames"]))
    probe = probe_index(len(frames))
    budget = Budget("test", (Candidate("jpeg-ls", JpegLsCodec()), Candidate("pred", PredCodec.default())),
                    seconds_per_megasample=1000.0)
    alone = decide(frames[probe], spec, budget)
    after = decide(frames[probe], spec, budget, previous=frames[probe - 1])
    assert alone.candidate.name == after.candidate.name == "pred"
    assert not alone.references_previous and after.references_previous
    assert len(after.encoded.payload) < len(alone.encoded.payload)
    # A previous frame that does not help is not used.
    assert not decide(frames[probe], spec, budget, previous=np.zeros_like(frames[probe])).references_previous
