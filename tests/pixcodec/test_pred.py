"""The `pred` codec: bit-exact on the corpus, robust against corrupt payloads, deterministic.

The conformance matrix (bits stored 1-16, signed and unsigned, odd sizes, constants, bits above
Bits Stored, colour declined with a reason) runs in test_conformance.py, since pred is in the
default registry. Here: every frame of every corpus image pred takes, the payload's defences,
the cost of flat areas, and golden digests that pin the bitstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pixcodec import CorruptBitstream, PixelSpec, UnsupportedPixelSpec, default_registry, preprocess
from pixcodec.pred import PredCodec, shipped_models
from pixcodec.base import CodecError
from pixcodec.pred.codec import _HEAD, FLAG_MODEL, FLAG_PACKED, FLAG_TABLES, WrongReference, fit_predictor
from pixcodec.pred.near import decode_within, encode_within

from .corpus_frames import manifest, raw_frames, spec_of
from .helpers import make_spec, round_trip, smooth_frame

CODEC = PredCodec.default()
LEARNED = [PredCodec(model, shipped_models()) for model in shipped_models()]
ENTRIES = [e for e in manifest()
           if e["bits_allocated"] != 1 and not CODEC.capabilities.unsupported_reasons(spec_of(e))]


def _coded(frame: npt.NDArray[np.integer], spec: PixelSpec) -> tuple[npt.NDArray[np.unsignedinteger], PixelSpec]:
    coded, record = preprocess.forward(frame, spec)
    return coded, preprocess.coding_spec(spec, record)


def _ct_slice() -> tuple[npt.NDArray[np.unsignedinteger], PixelSpec]:
    entry = next(e for e in ENTRIES if e["path"].startswith("ct/pancreas_ct_philips_series/"))
    return _coded(next(raw_frames(entry, limit=1)), spec_of(entry))


def test_pred_takes_most_of_the_corpus_and_declines_colour() -> None:
    assert len(ENTRIES) >= 180
    colour = next(e for e in manifest() if e["samples_per_pixel"] == 3)
    reasons = CODEC.capabilities.unsupported_reasons(spec_of(colour))
    assert reasons and "(0028,0002) Samples per Pixel 3" in reasons[0]
    spec = make_spec(samples=3, allocated=8, stored=8, signed=False)
    with pytest.raises(UnsupportedPixelSpec, match=r"\(0028,0002\)"):
        CODEC.encode(np.zeros(spec.frame_shape, dtype=np.uint8), spec)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["path"] for e in ENTRIES])
def test_corpus_round_trip_every_frame(entry: dict[str, Any]) -> None:
    """Every frame, through preprocessing and the codec directly; the container path below."""
    spec = spec_of(entry)
    for frame in raw_frames(entry, limit=entry["frames"]):
        coded, coding = _coded(frame, spec)
        decoded = CODEC.decode(CODEC.encode(coded, coding), coding)
        assert decoded.dtype == coded.dtype and np.array_equal(decoded, coded)


def test_corpus_through_the_container_and_the_registry() -> None:
    entry = next(e for e in ENTRIES if e["signed"] and e["frames"] == 1)
    spec = spec_of(entry)
    reader = round_trip(CODEC, spec, list(raw_frames(entry)))
    assert reader.codec_id == "pred"
    assert default_registry().get("pred", 2).transfer_syntax_uid is None
    # Blobs written before version 2 name version 1 in their container, and still read back.
    old = round_trip(PredCodec.default(bitstream_version=1), spec, list(raw_frames(entry)))
    assert (old.codec_id, old.codec_version, reader.codec_version) == ("pred", 1, 2)


@pytest.mark.parametrize("codec", [CODEC, *LEARNED], ids=lambda c: repr(c))
def test_beats_jpeg_ls_on_a_ct_slice(codec: PredCodec) -> None:
    from pixcodec.standard import JpegLsCodec

    coded, coding = _ct_slice()
    payload = codec.encode(coded, coding)
    assert np.array_equal(codec.decode(payload, coding), coded)
    assert len(payload) < 0.97 * len(JpegLsCodec().encode(coded, coding))


def test_flat_areas_cost_nearly_nothing() -> None:
    spec = make_spec(rows=512, columns=512, allocated=16, stored=12)
    constant = np.full(spec.frame_shape, 1000, dtype=np.uint16)
    assert len(CODEC.encode(constant, spec)) < 120
    # A CT slice on a padded canvas four times its size: the padding adds well under 1 %.
    coded, coding = _ct_slice()
    canvas = np.zeros((1024, 1024), dtype=coded.dtype)
    canvas[256:768, 256:768] = coded
    padded = dataclasses.replace(coding, rows=1024, columns=1024)
    assert len(CODEC.encode(canvas, padded)) < 1.01 * len(CODEC.encode(coded, coding))


def test_sparse_histograms_are_coded_as_ranks() -> None:
    spec = make_spec(rows=64, columns=80, allocated=16, stored=14)
    frame = (smooth_frame(dataclasses.replace(spec, bits_stored=10)).astype(np.uint16) * 16)
    payload = CODEC.encode(frame, spec)
    assert payload[4] & FLAG_PACKED and payload[4] & FLAG_TABLES
    assert np.array_equal(CODEC.decode(payload, spec), frame)


# SHA-256 of the payload of `_golden_frame()`: a bitstream version must never change, on any
# platform. Version 1 is pinned through its own codec instance (it still decodes old blobs);
# version 2 differs from it in the version byte only, and adds "reference": the frame coded
# against a noisy, dimmer copy of itself. Regenerate (after a deliberate format change, with a version
# bump) by running with PACSGW_REGENERATE_GOLDEN=1 and pasting the printed digests.
GOLDEN = {
    (1, "hand"): "0c2a3aaf97117f95b3bee9944ca70dfb5d4e577e2926a93a27f23351b417cd29",
    (1, "9b353d78e7d60ab4c1ed9659cff48376adc9032b8eb9f5b02c4e53bc02369807.npz"):
        "84c642e66875fc1470298c8db581e561058484e87ab9e5a4eba7eca82b2aff44",
    (2, "hand"): "5f5498e174d439367de30f46afbb71232166bd2a777881f059c27835c1e86784",
    (2, "reference"): "90e3705195aaae1c9d208ae1855271141d3a6863940c0e63ab04132c8230ac13",
}


def _golden_frame() -> tuple[npt.NDArray[np.uint16], PixelSpec]:
    spec = make_spec(rows=96, columns=112, allocated=16, stored=12)
    rng = np.random.default_rng(20260601)
    y, x = np.mgrid[0:96, 0:112]
    body = 1200 + 300 * np.sin(x / 9.0) * np.cos(y / 13.0) + rng.normal(0, 12, size=(96, 112))
    frame = np.where((x - 56) ** 2 + (y - 48) ** 2 < 40**2, body, 0)
    frame[5:9, 10:30] = 4000  # burned-in text
    return np.clip(np.round(frame), 0, 4095).astype(np.uint16), spec


def _check_golden(key: tuple[int, str], payload: bytes) -> None:
    digest = hashlib.sha256(payload).hexdigest()
    if os.environ.get("PACSGW_REGENERATE_GOLDEN"):
        print(f"GOLDEN {key!r}: {digest!r}")
        return
    assert key in GOLDEN, f"no golden digest for {key}"
    assert digest == GOLDEN[key]


GOLDEN_CODECS = [PredCodec.default(bitstream_version=1), CODEC,
                 *(PredCodec(model, shipped_models(), bitstream_version=1) for model in shipped_models())]


@pytest.mark.parametrize("codec", GOLDEN_CODECS, ids=lambda c: repr(c))
def test_golden_bitstream(codec: PredCodec) -> None:
    frame, spec = _golden_frame()
    payload = codec.encode(frame, spec)
    assert np.array_equal(codec.decode(payload, spec), frame)
    _check_golden((codec.bitstream_version, "hand" if codec.model is None else codec.model.name), payload)


def test_golden_bitstream_with_a_reference() -> None:
    frame, spec = _golden_frame()
    # A neighbouring slice: the same anatomy a little dimmer, with noise of its own.
    noise = np.random.default_rng(20261125).normal(0, 10, size=frame.shape)
    reference = np.clip(np.round(frame * 0.97 + noise), 0, 4095).astype(np.uint16)
    payload = CODEC.encode(frame, spec, reference=reference)
    assert PredCodec.references(payload)
    assert np.array_equal(CODEC.decode(payload, spec, reference=reference), frame)
    _check_golden((2, "reference"), payload)


def test_predictor_fit_is_deterministic_integers() -> None:
    coded, _ = _ct_slice()
    image = coded.astype(np.int32)
    first, second = fit_predictor(image), fit_predictor(image)
    assert all(np.array_equal(a, b) and a.dtype == np.int64 for a, b in zip(first, second))


# --- corrupt payloads: CorruptBitstream, never a crash, a hang or wrong pixels -----------------

Frame = npt.NDArray[np.unsignedinteger]


def _payloads() -> list[tuple[bytes, PixelSpec, Frame, Frame | None]]:
    frame, spec = _golden_frame()
    small = make_spec(rows=7, columns=9, allocated=8, stored=8)
    tiny = np.arange(63, dtype=np.uint8).reshape(7, 9)
    sparse = frame // 64 * 64
    shifted = np.roll(frame, 1, axis=1)
    referenced = CODEC.encode(frame, spec, reference=shifted)
    assert PredCodec.references(referenced)
    return [(CODEC.encode(frame, spec), spec, frame, None), (CODEC.encode(tiny, small), small, tiny, None),
            (CODEC.encode(sparse, spec), spec, sparse, None), (referenced, spec, frame, shifted)]


def _decodes_or_refuses(payload: bytes, spec: PixelSpec, original: Frame, reference: Frame | None = None) -> None:
    try:
        decoded = CODEC.decode(payload, spec, reference=reference)
    except (CorruptBitstream, WrongReference):  # a flipped flag may ask for a reference
        return
    # The pixel checksum lets a mutation through only when the pixels are exactly right.
    assert np.array_equal(decoded, original)


@pytest.mark.timeout(120)
def test_fuzz_mutated_payloads() -> None:
    rng = np.random.default_rng(6)
    for payload, spec, original, reference in _payloads():
        for _ in range(150):
            data = bytearray(payload)
            kind = rng.integers(4)
            if kind == 0:  # flip bits anywhere
                for _ in range(int(rng.integers(1, 4))):
                    data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            elif kind == 1:  # truncate
                data = data[:int(rng.integers(len(data)))]
            elif kind == 2:  # overwrite a run with random bytes
                start = int(rng.integers(len(data)))
                data[start:start + 8] = rng.integers(0, 256, size=len(data[start:start + 8]), dtype=np.uint8).tobytes()
            else:  # append garbage
                data += rng.integers(0, 256, size=int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
            _decodes_or_refuses(bytes(data), spec, original, reference)


@pytest.mark.timeout(60)
def test_fuzz_random_payloads() -> None:
    rng = np.random.default_rng(7)
    frame, spec = _golden_frame()
    head = CODEC.encode(frame, spec)[:12]  # a valid header, so the random part reaches the coder
    for length in (0, 1, 5, 11, 40, 300, 5000):
        for _ in range(20):
            body = rng.integers(0, 256, size=length, dtype=np.uint8).tobytes()
            for data in (body, head + body):
                with pytest.raises(CorruptBitstream):
                    CODEC.decode(data, spec)


def _series_slices(count: int) -> tuple[list[Frame], PixelSpec]:
    entries = sorted((e for e in ENTRIES if e["path"].startswith("ct/pancreas_ct_philips_series/")),
                     key=lambda e: e["series_index"])[:count]
    coded = [_coded(next(raw_frames(e, limit=1)), spec_of(e)) for e in entries]
    return [frame for frame, _ in coded], coded[0][1]


@pytest.mark.parametrize("codec", [CODEC, *LEARNED], ids=lambda c: repr(c))
def test_a_series_slice_coded_against_the_previous_one_is_exact_and_smaller(codec: PredCodec) -> None:
    slices, spec = _series_slices(4)
    intra = referenced = 0
    for previous, frame in zip(slices, slices[1:]):
        payload = codec.encode(frame, spec, reference=previous)
        assert PredCodec.references(payload)
        assert np.array_equal(codec.decode(payload, spec, reference=previous), frame)
        assert np.array_equal(CODEC.decode(payload, spec, reference=previous), frame)  # the registered one reads it
        referenced += len(payload)
        intra += len(codec.encode(frame, spec))
    assert referenced < 0.99 * intra


def test_a_reference_payload_needs_its_own_reference() -> None:
    slices, spec = _series_slices(3)
    payload = CODEC.encode(slices[1], spec, reference=slices[0])
    with pytest.raises(WrongReference, match="none was given"):
        CODEC.decode(payload, spec)
    with pytest.raises(WrongReference, match="another reference"):
        CODEC.decode(payload, spec, reference=slices[2])
    with pytest.raises(CodecError, match="version 1"):
        PredCodec.default(bitstream_version=1).encode(slices[1], spec, reference=slices[0])
    with pytest.raises(CorruptBitstream, match="version 2 is not 1"):
        PredCodec.default(bitstream_version=1).decode(payload, spec)


def test_a_reference_that_does_not_help_is_not_used() -> None:
    frame, spec = _golden_frame()
    noise = np.random.default_rng(3).integers(0, 4096, size=frame.shape).astype(np.uint16)
    payload = CODEC.encode(frame, spec, reference=noise)
    assert not PredCodec.references(payload)
    assert payload == CODEC.encode(frame, spec)


def test_a_packed_frame_takes_its_reference_as_ranks() -> None:
    slices, spec = _series_slices(2)
    wide = dataclasses.replace(spec, bits_stored=spec.bits_stored + 2)
    previous, frame = (s.astype(np.uint16) * 4 for s in slices)
    payload = CODEC.encode(frame, wide, reference=previous)
    assert payload[4] & FLAG_PACKED and PredCodec.references(payload)
    assert np.array_equal(CODEC.decode(payload, wide, reference=previous), frame)


def test_unknown_context_model_is_refused() -> None:
    frame, spec = _golden_frame()
    payload = bytearray(CODEC.encode(frame, spec))
    payload[4] |= FLAG_MODEL
    payload[_HEAD.size:_HEAD.size] = bytes(32)
    with pytest.raises(CorruptBitstream, match="context model"):
        CODEC.decode(bytes(payload), spec)


def test_the_archive_decision_takes_pred_where_it_wins() -> None:
    from pixcodec.decide import ARCHIVE, INGEST, decide

    assert "pred" in [c.name for c in ARCHIVE.candidates]
    assert "pred" not in [c.name for c in INGEST.candidates]  # ~55 ms a slice: over the ingest budget
    entry = next(e for e in ENTRIES if e["path"].startswith("ct/cptac_lscc_chest_siemens_series/"))
    spec = spec_of(entry)
    decision = decide(next(raw_frames(entry, limit=1)), spec, ARCHIVE)
    sizes = {t.name: t.size for t in decision.trials if t.size is not None}
    assert decision.candidate.name == "pred", sizes
    assert sizes["pred"] < sizes["jpeg-xl-e7"]


def test_near_lossless_honours_each_pixels_tolerance() -> None:
    """`pred.near`: exact where the tolerance is 0, within it elsewhere, and the encoder's
    rebuilt frame is exactly what the decoder gives."""
    frame, spec = _ct_slice()
    maxval = (1 << spec.bits_stored) - 1
    tolerance = np.zeros(frame.shape, dtype=np.uint8)
    tolerance[:, : spec.columns // 2] = 4
    tolerance[: spec.rows // 4] = 1
    payload, rebuilt = encode_within(frame, maxval, tolerance)
    decoded = decode_within(payload, spec.rows, spec.columns, maxval, tolerance)
    assert np.array_equal(decoded, rebuilt)
    error = np.abs(decoded.astype(np.int64) - frame.astype(np.int64))
    assert not error[tolerance == 0].any()
    assert int(error[tolerance == 1].max()) == 1 and int(error[tolerance == 4].max()) == 4
    assert len(payload) < len(PredCodec.default().encode(frame, spec))


def test_near_lossless_with_no_tolerance_is_exact() -> None:
    frame, spec = _ct_slice()
    maxval = (1 << spec.bits_stored) - 1
    exact = np.zeros(frame.shape, dtype=np.uint8)
    payload, rebuilt = encode_within(frame, maxval, exact)
    assert np.array_equal(rebuilt, frame)
    assert np.array_equal(decode_within(payload, spec.rows, spec.columns, maxval, exact), frame)
    with pytest.raises(ValueError):
        decode_within(payload, spec.rows, spec.columns, maxval, exact[1:])
