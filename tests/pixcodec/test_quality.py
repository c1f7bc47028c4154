"""Quality figures against hand-computed values and an independent, loop-based SSIM."""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pixcodec import PixelSpec, quality
from pixcodec.quality import (
    QualityReport,
    bits_per_pixel,
    byte_ratio,
    compression_ratio,
    max_abs_error,
    measure,
    mse,
    psnr,
    psnr_from_mse,
    ssim,
)

from .corpus_frames import manifest, raw_frames, spec_of
from .helpers import make_spec, smooth_frame

Array = npt.NDArray[Any]


def reference_ssim(x: Array, y: Array, bits_stored: int) -> float:
    """Wang et al. 2004 written out window by window, with the module's documented rules."""
    offset = 2.0 ** (bits_stored - 1) if x.dtype.kind == "i" else 0.0
    x = x.astype(np.float64) + offset
    y = y.astype(np.float64) + offset
    if x.ndim == 3:
        return float(np.mean([reference_ssim(x[..., c], y[..., c], bits_stored) for c in range(x.shape[2])]))
    big_l = 2.0**bits_stored - 1
    c1, c2 = (0.01 * big_l) ** 2, (0.03 * big_l) ** 2

    def length(n: int) -> int:
        return max(1, min(11, n if n % 2 == 1 else n - 1))

    wr, wc = length(x.shape[0]), length(x.shape[1])
    weights = np.empty((wr, wc))
    for i in range(wr):
        for j in range(wc):
            di, dj = i - (wr - 1) / 2, j - (wc - 1) / 2
            weights[i, j] = math.exp(-(di * di + dj * dj) / (2 * 1.5 * 1.5))
    weights /= weights.sum()
    scores = []
    for top in range(x.shape[0] - wr + 1):
        for left in range(x.shape[1] - wc + 1):
            px = x[top:top + wr, left:left + wc]
            py = y[top:top + wr, left:left + wc]
            mx, my = float((weights * px).sum()), float((weights * py).sum())
            vx = float((weights * (px - mx) ** 2).sum())
            vy = float((weights * (py - my) ** 2).sum())
            cxy = float((weights * (px - mx) * (py - my)).sum())
            scores.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(scores))


def noisy(frame: Array, sigma: float, bits_stored: int, seed: int = 7) -> Array:
    field = np.random.default_rng(seed).standard_normal(frame.shape)
    values = np.clip(np.rint(frame.astype(np.float64) + sigma * field), 0, 2**bits_stored - 1)
    return values.astype(frame.dtype)


# --- PSNR, MSE, maximum error ---------------------------------------------------------------


def test_every_pixel_off_by_one_in_12_bits() -> None:
    spec = make_spec(rows=32, columns=40)
    original = smooth_frame(spec)
    decoded = np.where(original < 4095, original + 1, original - 1).astype(spec.dtype)
    assert mse(original, decoded) == 1.0
    assert max_abs_error(original, decoded) == 1
    assert psnr(original, decoded, 12) == pytest.approx(20 * math.log10(4095), abs=1e-12)


def test_peak_comes_from_bits_stored_not_the_dtype() -> None:
    assert psnr_from_mse(4.0, 12) == pytest.approx(10 * math.log10(4095**2 / 4), abs=1e-12)
    assert psnr_from_mse(4.0, 16) == pytest.approx(10 * math.log10(65535**2 / 4), abs=1e-12)
    assert psnr_from_mse(1.0, 8) == pytest.approx(48.1308036, abs=1e-6)


def test_identical_images_have_infinite_psnr() -> None:
    frame = smooth_frame(make_spec())
    assert mse(frame, frame.copy()) == 0.0
    assert psnr(frame, frame.copy(), 12) == math.inf
    assert max_abs_error(frame, frame.copy()) == 0


def test_known_error_pattern_mixed_magnitudes() -> None:
    original = np.zeros((2, 4), dtype=np.uint16)
    decoded = np.array([[0, 1, 2, 3], [0, 0, 0, 10]], dtype=np.uint16)
    expected = (1 + 4 + 9 + 100) / 8
    assert mse(original, decoded) == expected
    assert psnr(decoded, original, 10) == pytest.approx(10 * math.log10(1023**2 / expected), abs=1e-12)
    assert max_abs_error(decoded, original) == 10


def test_signed_int16_extremes_do_not_overflow() -> None:
    low = np.full((3, 4), -32768, dtype=np.int16)
    high = np.full((3, 4), 32767, dtype=np.int16)
    assert max_abs_error(low, high) == 65535
    assert max_abs_error(high, low) == 65535
    assert mse(low, high) == 65535.0**2
    assert psnr(low, high, 16) == pytest.approx(0.0, abs=1e-12)
    assert isinstance(max_abs_error(low, high), int)


def test_32_bit_extremes_are_exact() -> None:
    zero = np.zeros((2, 2), dtype=np.uint32)
    full = np.full((2, 2), 2**32 - 1, dtype=np.uint32)
    assert max_abs_error(zero, full) == 2**32 - 1
    assert mse(zero, full) == float(2**32 - 1) ** 2
    assert psnr(zero, full, 32) == pytest.approx(0.0, abs=1e-12)
    low = np.full((2, 2), -(2**31), dtype=np.int32)
    high = np.full((2, 2), 2**31 - 1, dtype=np.int32)
    assert max_abs_error(high, low) == 2**32 - 1
    for value in ssim(zero, full, 32), ssim(low, high, 32):
        assert math.isfinite(value)


# --- SSIM -----------------------------------------------------------------------------------


def test_ssim_of_identical_images_is_one() -> None:
    frame = np.random.default_rng(1).integers(0, 4096, size=(40, 50)).astype(np.uint16)
    assert ssim(frame, frame.copy(), 12) == 1.0


@pytest.mark.parametrize("shape", [(24, 30), (16, 11), (12, 17), (9, 13), (3, 5), (4, 4), (2, 7), (1, 1), (1, 9)])
def test_ssim_matches_the_windowed_definition(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    original = rng.integers(0, 4096, size=shape).astype(np.uint16)
    decoded = noisy(original, 150.0, 12)
    expected = reference_ssim(original, decoded, 12)
    assert ssim(original, decoded, 12) == pytest.approx(expected, abs=1e-6, rel=0)


def test_ssim_on_a_smooth_8_bit_image_matches_the_definition() -> None:
    spec = make_spec(rows=25, columns=28, allocated=8, stored=8)
    original = smooth_frame(spec)
    decoded = noisy(original, 6.0, 8)
    assert ssim(original, decoded, 8) == pytest.approx(reference_ssim(original, decoded, 8), abs=1e-6, rel=0)


def test_colour_ssim_is_the_mean_of_the_channels() -> None:
    spec = make_spec(rows=14, columns=15, samples=3, allocated=8, stored=8)
    original = smooth_frame(spec)
    decoded = noisy(original, 10.0, 8)
    per_channel = [ssim(np.ascontiguousarray(original[..., c]), np.ascontiguousarray(decoded[..., c]), 8)
                   for c in range(3)]
    assert ssim(original, decoded, 8) == pytest.approx(float(np.mean(per_channel)), abs=1e-12)
    assert ssim(original, decoded, 8) == pytest.approx(reference_ssim(original, decoded, 8), abs=1e-6, rel=0)


def test_signed_images_score_as_their_unsigned_equivalent() -> None:
    rng = np.random.default_rng(5)
    unsigned = rng.integers(0, 4096, size=(20, 22)).astype(np.uint16)
    other = noisy(unsigned, 80.0, 12)
    as_signed = (unsigned.astype(np.int32) - 2048).astype(np.int16)
    other_signed = (other.astype(np.int32) - 2048).astype(np.int16)
    assert ssim(as_signed, other_signed, 12) == pytest.approx(ssim(unsigned, other, 12), abs=1e-12)


def test_ssim_decreases_with_the_noise() -> None:
    spec = make_spec(rows=64, columns=64)
    yy, xx = np.mgrid[0:64, 0:64]
    original = (2048 + 1200 * np.sin(xx / 7.0) * np.cos(yy / 5.0)).astype(spec.dtype)
    scores = [ssim(original, noisy(original, sigma, 12), 12) for sigma in (1, 4, 16, 64, 256, 1024)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 1.0
    assert scores[-1] < 0.5


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (2, 2), (3, 5), (5, 3), (1, 1, 3), (2, 2, 3)])
def test_tiny_images_give_a_number(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    for original, decoded, bits in (
        (np.zeros(shape, np.uint16), np.full(shape, 4095, np.uint16), 12),
        (rng.integers(0, 256, size=shape).astype(np.uint8), rng.integers(0, 256, size=shape).astype(np.uint8), 8),
        (np.full(shape, -32768, np.int16), np.full(shape, 32767, np.int16), 16),
        (np.zeros(shape, np.uint8), np.ones(shape, np.uint8), 1),
    ):
        value = ssim(original, decoded, bits)
        assert math.isfinite(value) and -1.0 <= value <= 1.0
        assert value == pytest.approx(reference_ssim(original, decoded, bits), abs=1e-6, rel=0)


def test_one_pixel_ssim_is_the_luminance_term() -> None:
    x, y, big_l = 1000.0, 1100.0, 4095.0
    c1 = (0.01 * big_l) ** 2
    expected = (2 * x * y + c1) / (x * x + y * y + c1)
    got = ssim(np.array([[1000]], np.uint16), np.array([[1100]], np.uint16), 12)
    assert got == pytest.approx(expected, abs=1e-12)


# --- ratio and bits per sample --------------------------------------------------------------


def test_ratio_and_bpp_of_a_known_case() -> None:
    ct = make_spec(rows=512, columns=512, allocated=16, stored=12)
    assert compression_ratio(ct, 1, 131072) == 4.0  # 524288 bytes on 16 allocated bits
    assert bits_per_pixel(ct, 1, 131072) == 4.0
    assert compression_ratio(ct, 10, 131072) == 40.0
    rgb = make_spec(rows=10, columns=10, samples=3, allocated=8, stored=8)
    assert compression_ratio(rgb, 2, 150) == 4.0  # 600 bytes
    assert bits_per_pixel(rgb, 2, 150) == 2.0  # 1200 bits over 600 sample values
    assert byte_ratio(1000, 250) == 4.0


@pytest.mark.parametrize("call", [
    lambda: byte_ratio(100, 0),
    lambda: byte_ratio(-1, 10),
    lambda: compression_ratio(make_spec(), 0, 10),
    lambda: bits_per_pixel(make_spec(), 1, -1),
    lambda: psnr_from_mse(-1.0, 12),
    lambda: psnr_from_mse(1.0, 0),
    lambda: psnr_from_mse(1.0, 33),
])
def test_meaningless_sizes_raise(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


# --- mismatches -----------------------------------------------------------------------------


def test_mismatched_dtypes_and_shapes_are_named() -> None:
    a = np.zeros((4, 5), np.uint16)
    with pytest.raises(ValueError, match="dtypes differ.*<u2.*<i2"):
        mse(a, a.astype(np.int16))
    with pytest.raises(ValueError, match=r"shapes differ.*\(4, 5\).*\(5, 4\)"):
        ssim(a, a.reshape(5, 4), 12)
    with pytest.raises(ValueError, match="integer type"):
        max_abs_error(a.astype(np.float64), a.astype(np.float64))
    with pytest.raises(ValueError, match="integer type"):
        mse(a.astype(np.int64), a.astype(np.int64))
    with pytest.raises(ValueError, match="Bits Stored"):
        ssim(a, a, 0)


def test_measure_names_the_frame_that_does_not_fit_the_spec() -> None:
    spec = make_spec(rows=4, columns=5)
    good = np.zeros(spec.frame_shape, spec.dtype)
    with pytest.raises(ValueError, match=r"decoded frame 1 shape \(5, 4\).*Rows 4"):
        measure([good, good], [good, good.reshape(5, 4)], spec, 10)
    with pytest.raises(ValueError, match="original frame 0 dtype <i2.*Pixel Representation 0"):
        measure([good.astype(np.int16)], [good], spec, 10)
    with pytest.raises(ValueError, match="original frames number 3 but decoded frames 2"):
        measure([good] * 3, [good] * 2, spec, 10)
    with pytest.raises(ValueError, match="decoded frames number 2 but original frames 1"):
        measure([good], [good] * 2, spec, 10)
    with pytest.raises(ValueError, match="no frames"):
        measure([], [], spec, 10)


# --- measure --------------------------------------------------------------------------------


def test_multi_frame_figures_equal_the_whole_array_figures() -> None:
    spec = make_spec(rows=20, columns=24)
    rng = np.random.default_rng(3)
    originals = [rng.integers(0, 4096, size=spec.frame_shape).astype(spec.dtype) for _ in range(3)]
    decodeds = [noisy(originals[0], 3.0, 12, seed=1), originals[1].copy(), noisy(originals[2], 40.0, 12, seed=2)]
    report = measure(iter(originals), iter(decodeds), spec, 960)
    whole_original, whole_decoded = np.stack(originals), np.stack(decodeds)
    assert report.mse == mse(whole_original, whole_decoded)
    assert report.psnr_db == psnr(whole_original, whole_decoded, 12)
    assert report.max_abs_error == max_abs_error(whole_original, whole_decoded)
    assert report.ssim == pytest.approx(np.mean([ssim(o, d, 12) for o, d in zip(originals, decodeds)]), abs=1e-15)
    assert report.ratio == 3 * 20 * 24 * 2 / 960
    assert report.bpp == 960 * 8 / (3 * 20 * 24)
    assert not report.lossless


def test_lossless_frames_skip_ssim(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> float:
        raise AssertionError("SSIM computed for identical frames")

    monkeypatch.setattr(quality, "_ssim", forbidden)
    spec = make_spec(rows=16, columns=16, samples=3, allocated=8, stored=8)
    frames = [smooth_frame(spec), smooth_frame(spec)[::-1].copy()]
    report = measure(frames, [f.copy() for f in frames], spec, 384)
    assert report == QualityReport(ratio=4.0, bpp=2.0, mse=0.0, psnr_db=math.inf, ssim=1.0, max_abs_error=0)
    assert report.lossless


def test_measure_holds_one_pair_of_frames_at_a_time() -> None:
    spec = make_spec(rows=8, columns=8)
    produced: list[weakref.ref[Array]] = []

    def frames(offset: int) -> Iterator[Array]:
        for index in range(6):
            gc.collect()
            # While frame `index` is made, the caller may still hold frame index - 1, no older.
            assert all(ref() is None for ref in produced[:max(0, 2 * (index - 1))])
            frame = np.full(spec.frame_shape, index + offset, spec.dtype)
            produced.append(weakref.ref(frame))
            yield frame

    report = measure(frames(0), frames(1), spec, 64)
    assert report.max_abs_error == 1 and report.mse == 1.0


def test_real_ct_slice_with_a_bounded_error() -> None:
    entry = next(e for e in manifest()
                 if e["modality"] == "CT" and not e["signed"] and not e["encapsulated"] and e["bits_stored"] == 12)
    spec: PixelSpec = spec_of(entry)
    original = next(raw_frames(entry, limit=1))
    assert int(original.max()) <= 4093  # the +2 below never needs clipping
    steps = np.random.default_rng(11).choice(np.array([-2, 2]), size=original.shape)
    steps[original < 2] = 2
    decoded = np.clip(original.astype(np.int32) + steps, 0, 4095).astype(spec.dtype)
    assert np.all(np.abs(decoded.astype(np.int32) - original) == 2)

    expected_psnr = 10 * math.log10(4095**2 / 4)
    assert max_abs_error(original, decoded) == 2
    assert mse(original, decoded) == 4.0
    assert psnr(original, decoded, spec.bits_stored) == pytest.approx(expected_psnr, abs=1e-12)
    report = measure([original], [decoded], spec, spec.frame_nbytes // 8)
    assert (report.max_abs_error, report.mse, report.ratio, report.bpp) == (2, 4.0, 8.0, 2.0)
    assert report.psnr_db == pytest.approx(expected_psnr, abs=1e-12)
    assert 0.5 < report.ssim < 1.0
