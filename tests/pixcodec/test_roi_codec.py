"""ROI-hybrid codec on the real corpus: exact inside the mask, within the bound outside, for every
CT, MR, CR/DX/MG, US and XA/RF object; degenerate frames; damaged blobs."""

from __future__ import annotations

import functools
import math
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pixcodec import CorruptBitstream, PixelSpec, UnsupportedPixelSpec
from pixcodec.roi import (
    LOSSY_METHOD,
    PRED_LOSSY_METHOD,
    Layout,
    automatic_mask,
    combine,
    decode,
    encode,
    encode_measured,
    lossy_method,
    measure,
    read_header,
    rescale_of,
    stored_values,
)

from .corpus_frames import manifest, raw_frames, read_dataset, spec_of
from .helpers import clean_frame, junk_frame, make_spec, smooth_frame

BOUNDS = (1, 2, 4)
MODALITIES = ("CT", "MR", "CR", "DX", "MG", "US", "XA", "RF")


def _entries() -> list[dict[str, Any]]:
    return [entry for entry in manifest() if entry["modality"] in MODALITIES and entry["has_pixel_data"]]


def mask_photometric(entry: dict[str, Any]) -> str:
    """What the decoded frames hold: pydicom hands encapsulated YBR frames over as RGB."""
    if entry["samples_per_pixel"] == 3 and entry["encapsulated"]:
        return "RGB"
    return str(entry["photometric_interpretation"])


@functools.lru_cache(maxsize=None)
def corpus_case(path: str) -> tuple[PixelSpec, list[tuple[npt.NDArray[np.integer], npt.NDArray[np.bool_]]]]:
    entry = next(e for e in manifest() if e["path"] == path)
    spec = spec_of(entry)
    slope, intercept = rescale_of(read_dataset(entry))
    cases = []
    for frame in raw_frames(entry, limit=2):
        mask = automatic_mask(frame, entry["modality"], photometric=mask_photometric(entry),
                              bits_stored=spec.bits_stored, slope=slope, intercept=intercept)
        cases.append((frame, mask))
    return spec, cases


def check_round_trip(frame: npt.NDArray[np.integer], spec: PixelSpec, mask: npt.NDArray[np.bool_],
                     bound: int, layouts: list[Layout] | None = None) -> tuple[bytes, npt.NDArray[np.integer]]:
    blob = encode(frame, spec, mask, bound, layouts=layouts)
    decoded, stored_mask = decode(blob)
    assert decoded.dtype == frame.dtype and decoded.shape == frame.shape
    assert np.array_equal(stored_mask, mask)
    spread = mask if spec.samples_per_pixel == 1 else np.repeat(mask[:, :, None], spec.samples_per_pixel, axis=2)
    assert np.array_equal(decoded[spread], frame[spread]), "not bit-exact inside the ROI"
    error = np.abs(stored_values(decoded, spec) - stored_values(frame, spec))
    assert int(error.max()) <= bound, f"error {int(error.max())} beyond {bound}"
    return blob, decoded


@pytest.mark.parametrize("path", [entry["path"] for entry in _entries()])
def test_corpus_frame_exact_inside_bounded_outside(path: str) -> None:
    spec, cases = corpus_case(path)
    for frame, mask in cases:
        lossless = len(encode(frame, spec, mask, 0))
        for bound in BOUNDS:
            blob, decoded = check_round_trip(frame, spec, mask, bound)
            # The lossless layout is always a candidate, so ROI-hybrid never costs more than it
            # (beyond the stored mask, a few hundred bytes at most).
            assert len(blob) <= lossless + 1024
            figures = measure(frame, decoded, mask, spec, len(blob))
            assert figures.max_error_inside == 0
            assert figures.max_error_outside <= bound
            assert figures.psnr_db >= figures.psnr_outside_db or math.isinf(figures.psnr_db)


def test_ct_slice_saves_against_lossless() -> None:
    """The measured case of the issue: a CT slice, most bits outside the body."""
    spec, cases = corpus_case("ct/pancreas_ct_philips_series/slice_020.dcm")
    frame, mask = cases[0]
    lossless = len(encode(frame, spec, mask, 0))
    sizes = [len(encode(frame, spec, mask, bound)) for bound in BOUNDS]
    assert sizes[0] < 0.9 * lossless
    assert sizes[2] < 0.75 * lossless
    assert sizes == sorted(sizes, reverse=True)


def test_figures() -> None:
    spec, cases = corpus_case("ct/pancreas_ct_philips_series/slice_001.dcm")
    frame, mask = cases[0]
    blob, decoded = check_round_trip(frame, spec, mask, 2)
    figures = measure(frame, decoded, mask, spec, len(blob))
    assert figures.roi_fraction == pytest.approx(mask.mean())
    assert figures.max_error_inside == 0 and figures.max_error_outside == 2 and not figures.lossless
    assert math.isfinite(figures.psnr_outside_db) and figures.psnr_db > figures.psnr_outside_db > 60
    assert figures.ratio == pytest.approx(spec.frame_nbytes / len(blob))
    assert measure(frame, frame, mask, spec, len(blob)).lossless
    exact = measure(frame, frame, mask, spec, 1000)
    both = combine([figures, exact], spec)
    assert both.frames == 2 and both.compressed_bytes == len(blob) + 1000
    assert both.ratio == pytest.approx(2 * spec.frame_nbytes / (len(blob) + 1000))
    assert both.psnr_db == pytest.approx(figures.psnr_db + 10 * math.log10(2))
    assert both.max_error_outside == 2 and both.roi_fraction == pytest.approx(figures.roi_fraction)
    with pytest.raises(ValueError):
        combine([], spec)


def test_lossy_method_names_the_coder_that_altered_values() -> None:
    assert lossy_method([Layout.CORRECTION, Layout.TWO_LAYERS]) == LOSSY_METHOD == "ISO_14495_1"
    assert lossy_method([Layout.CORRECTION, Layout.PRED]) == PRED_LOSSY_METHOD
    assert len(PRED_LOSSY_METHOD) <= 16  # a CS value


def test_header_labels_the_blob() -> None:
    spec, cases = corpus_case("ct/cptac_lscc_chest_siemens_series/slice_010.dcm")
    frame, mask = cases[0]
    header = read_header(encode(frame, spec, mask, 2))
    assert header.spec == spec and header.max_error == 2
    assert header.lossless == (header.layout is Layout.LOSSLESS)
    assert header.near in (0, 2)


@pytest.mark.parametrize("layout", [Layout.CORRECTION, Layout.TWO_LAYERS, Layout.PRED])
def test_each_layout_round_trips(layout: Layout) -> None:
    spec, cases = corpus_case("ct/barre_ct_brain_signed.dcm")
    frame, mask = cases[0]
    for bound in BOUNDS:
        blob, _ = check_round_trip(frame, spec, mask, bound, [layout])
        assert read_header(blob).layout is layout


DEGENERATE_SPECS = [
    make_spec(rows=1, columns=1),
    make_spec(rows=1, columns=300, stored=16, signed=True),
    make_spec(rows=5, columns=3, allocated=8, stored=8),
    make_spec(rows=9, columns=7, samples=3, allocated=8, stored=8),
    make_spec(rows=16, columns=16, stored=1),
    make_spec(rows=16, columns=16, stored=2),
    make_spec(rows=33, columns=17, stored=12, signed=True),
]


@pytest.mark.parametrize("spec", DEGENERATE_SPECS, ids=lambda s: f"{s.rows}x{s.columns}x{s.samples_per_pixel}-"
                                                               f"{s.bits_stored}{'s' if s.signed else 'u'}")
@pytest.mark.parametrize("kind", ["constant", "noise", "smooth"])
@pytest.mark.parametrize("roi", ["empty", "all", "half"])
def test_degenerate_frames(spec: PixelSpec, kind: str, roi: str) -> None:
    rng = np.random.default_rng(7)
    if kind == "constant":
        frame = np.full(spec.frame_shape, -1 if spec.signed else (1 << spec.bits_stored) - 1, dtype=spec.dtype)
    elif kind == "noise":
        frame = clean_frame(spec, rng)
    else:
        frame = smooth_frame(spec)
    mask = np.zeros((spec.rows, spec.columns), dtype=bool)
    if roi == "all":
        mask[:] = True
    elif roi == "half":
        mask[: (spec.rows + 1) // 2] = True
    for bound in (0, *BOUNDS, 300):
        check_round_trip(frame, spec, mask, bound)


def test_bits_above_bits_stored_stay_exact() -> None:
    rng = np.random.default_rng(3)
    for spec in (make_spec(rows=40, columns=50, stored=12), make_spec(rows=40, columns=50, stored=12, signed=True)):
        frame = junk_frame(spec, rng)
        mask = np.zeros((spec.rows, spec.columns), dtype=bool)
        mask[10:20, 10:30] = True
        blob, decoded = check_round_trip(frame, spec, mask, 4)
        above = np.uint16(0xF000)
        assert np.array_equal(decoded.view(np.uint16) & above, frame.view(np.uint16) & above)
        assert read_header(blob).high_length > 0


def test_refuses_what_it_cannot_code() -> None:
    spec = make_spec(rows=4, columns=4, allocated=16, stored=12)
    frame = np.zeros(spec.frame_shape, dtype=spec.dtype)
    with pytest.raises(ValueError):
        encode(frame, spec, np.zeros((4, 5), dtype=bool), 2)
    with pytest.raises(ValueError):
        encode(frame, spec, np.zeros((4, 4), dtype=bool), -1)
    with pytest.raises(UnsupportedPixelSpec):
        encode(frame.astype(np.int16), spec, np.zeros((4, 4), dtype=bool), 2)
    wide = PixelSpec(rows=4, columns=4, samples_per_pixel=1, bits_allocated=32, bits_stored=32, signed=False,
                     photometric="MONOCHROME2")
    with pytest.raises(UnsupportedPixelSpec):
        encode(np.zeros((4, 4), dtype=np.uint32), wide, np.zeros((4, 4), dtype=bool), 2)


@functools.lru_cache(maxsize=None)
def sample_blobs() -> dict[Layout, bytes]:
    spec, cases = corpus_case("mr/brain_tumor_progression_t1post_siemens_series/slice_012.dcm")
    frame, mask = cases[0]
    blobs = {layout: encode(frame, spec, mask, 2, layouts=[layout]) for layout in Layout}
    small = make_spec(rows=20, columns=20, stored=12)
    high = junk_frame(small, np.random.default_rng(1))
    blobs[Layout.LOSSLESS] = encode(high, small, np.ones((20, 20), dtype=bool), 2)
    return blobs


@pytest.mark.parametrize("layout", list(Layout))
def test_corrupted_blobs_raise_corrupt_bitstream(layout: Layout) -> None:
    blob = sample_blobs()[layout]
    assert read_header(blob).layout is layout
    decode(blob)
    rng = np.random.default_rng(11)
    positions = sorted({0, 9, 12, 20, 40, len(blob) // 2, len(blob) - 1, *rng.integers(0, len(blob), 40).tolist()})
    for position in positions:
        damaged = bytearray(blob)
        damaged[position] ^= 0x5A
        with pytest.raises(CorruptBitstream):
            decode(bytes(damaged))
    for length in (0, 5, 30, len(blob) // 3, len(blob) - 1):
        with pytest.raises(CorruptBitstream):
            decode(blob[:length])
    with pytest.raises(CorruptBitstream):
        decode(blob + b"\x00")


def test_unknown_format_version_is_refused() -> None:
    blob = bytearray(sample_blobs()[Layout.CORRECTION])
    blob[8] = 99
    with pytest.raises(CorruptBitstream, match="version"):
        decode(bytes(blob))


def _with_version(blob: bytes, version: int) -> bytes:
    """`blob` with its header's format version rewritten and the header checksum made good."""
    length = int.from_bytes(blob[10:12], "little")
    head = bytearray(blob[:length - 4])
    head[8:10] = version.to_bytes(2, "little")
    return bytes(head) + (zlib.crc32(head) & 0xFFFFFFFF).to_bytes(4, "little") + blob[length:]


@pytest.mark.parametrize("layout", [Layout.LOSSLESS, Layout.CORRECTION, Layout.TWO_LAYERS])
def test_version_1_blobs_still_decode(layout: Layout) -> None:
    blob = sample_blobs()[layout]
    assert np.array_equal(decode(_with_version(blob, 1))[0], decode(blob)[0])


def test_pred_layout_is_refused_in_a_version_1_blob() -> None:
    with pytest.raises(CorruptBitstream, match="PRED"):
        decode(_with_version(sample_blobs()[Layout.PRED], 1))


def test_pred_layout_is_the_smallest_on_ct_outside_the_body() -> None:
    """The context-coded layout beats both JPEG-LS layouts where much of the slice is air."""
    spec, cases = corpus_case("ct/pancreas_ct_philips_series/slice_020.dcm")
    frame, mask = cases[0]
    sizes = {layout: len(encode(frame, spec, mask, 4, layouts=[layout])) for layout in Layout}
    assert read_header(encode(frame, spec, mask, 4)).layout is Layout.PRED
    assert sizes[Layout.PRED] < 0.95 * min(sizes[Layout.CORRECTION], sizes[Layout.TWO_LAYERS])


@pytest.mark.parametrize("layout", list(Layout))
def test_unverified_encode_names_exactly_what_the_blob_decodes_to(layout: Layout) -> None:
    spec, cases = corpus_case("ct/barre_ct_brain_signed.dcm")
    frame, mask = cases[0]
    encoded = encode_measured(frame, spec, mask, 4, layouts=[layout], verify=False)
    decoded, _ = decode(encoded.blob)
    assert np.array_equal(decoded, encoded.decoded)
    assert np.array_equal(encoded.decoded[mask], frame[mask])
