"""Quality figures of a coded image: compression ratio, bits per sample, MSE, PSNR, SSIM, max error.

Shared by the gateway (what it records about a lossy derivative) and the benchmarks, so that both
report the same numbers from the same definitions. Every function takes the stored integer words
(any signedness, at most 32 bits) and works in float64 or int64, so neither the difference of two
int16 extremes nor the square of a uint32 difference can overflow.

The peak value and the SSIM dynamic range come from (0028,0101) Bits Stored, not from the dtype:
a 12-bit CT slice held in 16-bit words has a peak of 4095, not 65535.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .base import PixelSpec

__all__ = [
    "QualityReport",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "bits_per_pixel",
    "byte_ratio",
    "compression_ratio",
    "max_abs_error",
    "measure",
    "mse",
    "psnr",
    "psnr_from_mse",
    "ssim",
]

# Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
# structural similarity", IEEE Trans. Image Processing 13(4):600-612, 2004, section III-C.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

_MAX_BITS = 32


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The figures of one coded object (all its frames), as `measure` computes them."""

    ratio: float  # uncompressed bytes on Bits Allocated / compressed bytes
    bpp: float  # compressed bits per sample value
    mse: float
    psnr_db: float  # math.inf when the decoded frames are identical
    ssim: float  # mean SSIM; 1.0 when identical
    max_abs_error: int

    @property
    def lossless(self) -> bool:
        return self.max_abs_error == 0


def byte_ratio(original_bytes: int, compressed_bytes: int) -> float:
    """`original_bytes / compressed_bytes`: 30.0 for what (0028,2112) writes as 30 (a 30:1 ratio)."""
    if original_bytes < 0:
        raise ValueError(f"original size {original_bytes} bytes is negative")
    if compressed_bytes <= 0:
        raise ValueError(f"compressed size {compressed_bytes} bytes must be positive")
    return original_bytes / compressed_bytes


def compression_ratio(spec: PixelSpec, frames: int, compressed_bytes: int) -> float:
    """Compression ratio on allocated bits (PS3.3 C.7.6.1.1.5, Lossy Image Compression Ratio).

    The uncompressed size is what native Pixel Data (7FE0,0010) occupies:
    rows * columns * samples * frames * Bits Allocated / 8, so the unused high bits of a 12-bit
    image in 16-bit words count as part of the original, as they do on the wire.
    """
    return byte_ratio(_sample_count(spec, frames) * spec.bits_allocated // 8, compressed_bytes)


def bits_per_pixel(spec: PixelSpec, frames: int, compressed_bytes: int) -> float:
    """Compressed bits per sample value: 8 * compressed_bytes / (rows * columns * samples * frames).

    Counted per sample, not per pixel, so an RGB image and a grey image coded to the same bytes
    per value report the same figure; Bits Allocated / bpp equals the compression ratio.
    """
    if compressed_bytes < 0:
        raise ValueError(f"compressed size {compressed_bytes} bytes is negative")
    return 8 * compressed_bytes / _sample_count(spec, frames)


def mse(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer]) -> float:
    """Mean squared error, (1 / N) * sum((original - decoded) ** 2) over every sample value."""
    _check_pair(original, decoded)
    squared, count = _squared_error(original, decoded)
    return squared / count


def psnr_from_mse(mse: float, bits_stored: int) -> float:
    """PSNR = 10 * log10(MAX ** 2 / MSE) dB with MAX = 2 ** bits_stored - 1; inf when MSE is 0.

    The peak is the largest value Bits Stored can hold (the usual definition, e.g. Gonzalez &
    Woods; ITU-T J.340 for 8-bit video); it is not scaled by the image size.
    """
    _check_bits_stored(bits_stored)
    if mse < 0 or math.isnan(mse):
        raise ValueError(f"MSE {mse} must be a non-negative number")
    if mse == 0:
        return math.inf
    peak = float((1 << bits_stored) - 1)
    return 10.0 * math.log10(peak * peak / mse)


def psnr(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer], bits_stored: int) -> float:
    """Peak signal-to-noise ratio in dB with the peak of Bits Stored (see `psnr_from_mse`)."""
    _check_bits_stored(bits_stored)
    return psnr_from_mse(mse(original, decoded), bits_stored)


def max_abs_error(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer]) -> int:
    """max |original - decoded| over every sample value, exact (65535 for int16 -32768 against 32767)."""
    _check_pair(original, decoded)
    return _max_abs_error(original, decoded)


def ssim(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer], bits_stored: int) -> float:
    """Mean structural similarity index of Wang et al. 2004 (eq. 13 and 17, section III-C).

    SSIM(x, y) = ((2 mu_x mu_y + C1) (2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))
    with C1 = (K1 L)^2, C2 = (K2 L)^2, K1 = 0.01, K2 = 0.03, L = 2 ** bits_stored - 1, the local
    statistics weighted by an 11x11 circular-symmetric Gaussian window of sigma 1.5 (normalised to
    sum 1, covariances without Bessel's correction), evaluated at every position where the window
    lies wholly inside the image (the reference MATLAB code's 'valid' filtering), and averaged.

    Arrays of shape (rows, columns) are one channel; (rows, columns, samples) are scored per
    channel and the channel scores averaged.

    Rules the paper leaves open:

    - An axis shorter than 11 samples gets a shorter window: the largest odd length not exceeding
      the axis (1 for an axis of 1 or 2 samples), with the same sigma-1.5 Gaussian weights cut
      to that length and renormalised. A 1x1 image thus scores its luminance term alone. C1 and
      C2 are positive, so no image gives NaN.
    - Signed input is offset by 2 ** (bits_stored - 1) first, so that the luminance term sees
      intensities in [0, L] as the paper assumes, and a signed image scores as its unsigned
      equivalent does.
    """
    _check_pair(original, decoded)
    _check_bits_stored(bits_stored)
    if original.ndim not in (2, 3):
        raise ValueError(f"SSIM needs (rows, columns) or (rows, columns, samples) arrays, not shape {original.shape}")
    if np.array_equal(original, decoded):
        return 1.0
    return _ssim(original, decoded, bits_stored)


def measure(
    original_frames: Iterable[npt.NDArray[np.integer]],
    decoded_frames: Iterable[npt.NDArray[np.integer]],
    spec: PixelSpec,
    compressed_bytes: int,
) -> QualityReport:
    """All the figures of a coded object, from its frames taken one pair at a time.

    MSE and PSNR are over every sample value of every frame; SSIM is the mean of the per-frame
    SSIMs (every frame has the same number of windows, so this is the mean over all windows).
    Identical frame pairs are recognised with one comparison and score 1.0 without computing
    SSIM, so a lossless object costs one comparison per frame. No frame is kept once its pair
    has been measured, so memory does not grow with the number of frames.

    Each frame must have the spec's shape and dtype; the iterables must yield the same number of
    frames, at least one.
    """
    squared = 0.0
    samples = 0
    worst = 0
    ssim_total = 0.0
    frames = 0
    for original, decoded in _pairs(original_frames, decoded_frames):
        _check_frame(original, spec, frames, "original")
        _check_frame(decoded, spec, frames, "decoded")
        frames += 1
        samples += original.size
        if np.array_equal(original, decoded):
            ssim_total += 1.0
            continue
        frame_squared, _ = _squared_error(original, decoded)
        squared += frame_squared
        worst = max(worst, _max_abs_error(original, decoded))
        ssim_total += _ssim(original, decoded, spec.bits_stored)
    if frames == 0:
        raise ValueError("no frames to measure")
    error = squared / samples
    return QualityReport(
        ratio=compression_ratio(spec, frames, compressed_bytes),
        bpp=bits_per_pixel(spec, frames, compressed_bytes),
        mse=error,
        psnr_db=psnr_from_mse(error, spec.bits_stored),
        ssim=ssim_total / frames,
        max_abs_error=worst,
    )


def _pairs(
    original_frames: Iterable[npt.NDArray[np.integer]], decoded_frames: Iterable[npt.NDArray[np.integer]]
) -> Iterator[tuple[npt.NDArray[np.integer], npt.NDArray[np.integer]]]:
    originals, decodeds = iter(original_frames), iter(decoded_frames)
    count = 0
    while True:
        original = next(originals, None)
        decoded = next(decodeds, None)
        if original is None and decoded is None:
            return
        if original is None or decoded is None:
            longer, longer_name = (decodeds, "decoded") if original is None else (originals, "original")
            total = count + 1 + sum(1 for _ in longer)
            shorter_name = "original" if original is None else "decoded"
            raise ValueError(f"{longer_name} frames number {total} but {shorter_name} frames {count}")
        count += 1
        yield original, decoded


def _sample_count(spec: PixelSpec, frames: int) -> int:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frame count {frames!r} must be a positive integer")
    return spec.rows * spec.columns * spec.samples_per_pixel * frames


def _check_bits_stored(bits_stored: int) -> None:
    if isinstance(bits_stored, bool) or not isinstance(bits_stored, int) or not 1 <= bits_stored <= _MAX_BITS:
        raise ValueError(f"(0028,0101) Bits Stored {bits_stored!r} is not an integer from 1 to {_MAX_BITS}")


def _check_pair(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer]) -> None:
    if original.dtype != decoded.dtype:
        raise ValueError(f"dtypes differ: original {original.dtype.str}, decoded {decoded.dtype.str}")
    if original.shape != decoded.shape:
        raise ValueError(f"shapes differ: original {original.shape}, decoded {decoded.shape}")
    if original.dtype.kind not in "iu" or original.dtype.itemsize > _MAX_BITS // 8:
        raise ValueError(f"dtype {original.dtype.str} is not an integer type of at most {_MAX_BITS} bits")
    if original.size == 0:
        raise ValueError(f"arrays of shape {original.shape} hold no samples")


def _check_frame(frame: npt.NDArray[np.integer], spec: PixelSpec, index: int, role: str) -> None:
    if frame.dtype != spec.dtype:
        raise ValueError(
            f"{role} frame {index} dtype {frame.dtype.str} differs from {spec.dtype.str} of (0028,0100) "
            f"Bits Allocated {spec.bits_allocated} and (0028,0103) Pixel Representation {int(spec.signed)}"
        )
    if frame.shape != spec.frame_shape:
        raise ValueError(
            f"{role} frame {index} shape {frame.shape} differs from {spec.frame_shape} of (0028,0010) Rows "
            f"{spec.rows}, (0028,0011) Columns {spec.columns}, (0028,0002) Samples per Pixel {spec.samples_per_pixel}"
        )


def _difference(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    # int64 holds any difference of two values of at most 32 bits, signed or not.
    difference: npt.NDArray[np.int64] = np.subtract(original, decoded, dtype=np.int64)
    return difference


def _squared_error(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer]) -> tuple[float, int]:
    # Squares of 33-bit differences overflow int64, so square in float64; below 2**53 in total
    # (any 16-bit image of practical size) the sum is exact.
    difference = _difference(original, decoded).astype(np.float64)
    return float(np.sum(difference * difference)), difference.size


def _max_abs_error(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer]) -> int:
    return int(np.max(np.abs(_difference(original, decoded))))


def _gaussian_window(length: int) -> npt.NDArray[np.float64]:
    offsets = np.arange(length, dtype=np.float64) - (length - 1) / 2
    weights = np.exp(-(offsets * offsets) / (2 * SSIM_SIGMA * SSIM_SIGMA))
    normalised: npt.NDArray[np.float64] = weights / weights.sum()
    return normalised


def _window_length(axis_length: int) -> int:
    return min(SSIM_WINDOW, axis_length if axis_length % 2 else axis_length - 1) or 1


def _valid_filter(
    image: npt.NDArray[np.float64], rows: npt.NDArray[np.float64], columns: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Separable correlation with the window rows x columns, at positions wholly inside the image."""
    height = image.shape[0] - len(rows) + 1
    vertical = np.zeros((height, image.shape[1]), dtype=np.float64)
    for tap, weight in enumerate(rows):
        vertical += weight * image[tap:tap + height]
    width = image.shape[1] - len(columns) + 1
    result = np.zeros((height, width), dtype=np.float64)
    for tap, weight in enumerate(columns):
        result += weight * vertical[:, tap:tap + width]
    return result


def _ssim(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer], bits_stored: int) -> float:
    channels = [(original, decoded)] if original.ndim == 2 else [
        (original[..., c], decoded[..., c]) for c in range(original.shape[2])
    ]
    offset = float(1 << (bits_stored - 1)) if original.dtype.kind == "i" else 0.0
    return float(np.mean([_ssim_channel(x, y, bits_stored, offset) for x, y in channels]))


def _ssim_channel(
    original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer], bits_stored: int, offset: float
) -> float:
    dynamic_range = float((1 << bits_stored) - 1)
    c1 = (SSIM_K1 * dynamic_range) ** 2
    c2 = (SSIM_K2 * dynamic_range) ** 2
    rows = _gaussian_window(_window_length(original.shape[0]))
    columns = _gaussian_window(_window_length(original.shape[1]))
    # Moments of values centred on one common constant: covariances are unchanged by the shift,
    # and E[x^2] - E[x]^2 no longer cancels catastrophically on 32-bit magnitudes.
    x = original.astype(np.float64)
    y = decoded.astype(np.float64)
    centre = float(x.mean())
    x -= centre
    y -= centre
    mu_x = _valid_filter(x, rows, columns)
    mu_y = _valid_filter(y, rows, columns)
    var_x = _valid_filter(x * x, rows, columns) - mu_x * mu_x
    var_y = _valid_filter(y * y, rows, columns) - mu_y * mu_y
    cov_xy = _valid_filter(x * y, rows, columns) - mu_x * mu_y
    mu_x += centre + offset
    mu_y += centre + offset
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return float(np.mean(numerator / denominator))
