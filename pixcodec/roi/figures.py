"""The figures of one ROI-hybrid coded frame, as the gateway records and exports them.

Errors and PSNR are on the stored pixel values (`codec.stored_values`), the peak from Bits
Stored and the ratio on Bits Allocated, with the definitions of pixcodec.quality, so an ROI
figure and a whole-image figure of the same frame compare directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..base import PixelSpec
from ..quality import compression_ratio, psnr_from_mse
from .codec import stored_values
from .masks import Mask

__all__ = ["RoiFigures", "combine", "measure"]


@dataclass(frozen=True, slots=True)
class RoiFigures:
    """The figures of one frame (`measure`) or of an instance's frames together (`combine`)."""

    roi_fraction: float  # share of sample values inside the mask
    max_error_inside: int  # 0 for every verified blob
    max_error_outside: int  # at most the bound; 0 when nothing lies outside
    psnr_db: float  # over every sample value; math.inf when identical
    psnr_outside_db: float  # over the sample values outside the mask; math.inf when identical or none
    ratio: float  # native Pixel Data bytes / blob bytes (PS3.3 C.7.6.1.1.5)
    compressed_bytes: int
    frames: int
    samples: int
    outside_samples: int
    squared_error: float  # sums, so that frames pool exactly
    squared_error_outside: float

    @property
    def lossless(self) -> bool:
        return self.max_error_outside == 0 and self.max_error_inside == 0


def measure(original: npt.NDArray[np.integer], decoded: npt.NDArray[np.integer], mask: Mask, spec: PixelSpec,
            compressed_bytes: int) -> RoiFigures:
    """Figures of one frame: `original` and `decoded` of `spec`, `mask` of shape (rows, columns)."""
    spec.check_frame(original)
    spec.check_frame(decoded)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (spec.rows, spec.columns):
        raise ValueError(f"mask shape {mask.shape} is not the frame's ({spec.rows}, {spec.columns})")
    error = stored_values(decoded, spec) - stored_values(original, spec)
    if spec.samples_per_pixel > 1:
        mask = np.repeat(mask[:, :, None], spec.samples_per_pixel, axis=2)
    inside, outside = error[mask], error[~mask]
    squared = error.astype(np.float64) ** 2
    return _figures(spec, frames=1, compressed_bytes=compressed_bytes, samples=error.size,
                    outside_samples=outside.size, squared_error=float(squared.sum()),
                    squared_error_outside=float(squared[~mask].sum()),
                    max_error_inside=int(np.abs(inside).max()) if inside.size else 0,
                    max_error_outside=int(np.abs(outside).max()) if outside.size else 0)


def combine(parts: Sequence[RoiFigures], spec: PixelSpec) -> RoiFigures:
    """The figures of an instance from those of its frames (all of `spec`): sizes and squared
    errors add up, maxima are the largest, PSNR comes from the pooled MSE."""
    if not parts:
        raise ValueError("no frames to combine")
    return _figures(spec, frames=sum(p.frames for p in parts), compressed_bytes=sum(p.compressed_bytes for p in parts),
                    samples=sum(p.samples for p in parts), outside_samples=sum(p.outside_samples for p in parts),
                    squared_error=sum(p.squared_error for p in parts),
                    squared_error_outside=sum(p.squared_error_outside for p in parts),
                    max_error_inside=max(p.max_error_inside for p in parts),
                    max_error_outside=max(p.max_error_outside for p in parts))


def _figures(spec: PixelSpec, *, frames: int, compressed_bytes: int, samples: int, outside_samples: int,
             squared_error: float, squared_error_outside: float, max_error_inside: int,
             max_error_outside: int) -> RoiFigures:
    return RoiFigures(
        roi_fraction=(samples - outside_samples) / samples,
        max_error_inside=max_error_inside,
        max_error_outside=max_error_outside,
        psnr_db=psnr_from_mse(squared_error / samples, spec.bits_stored),
        psnr_outside_db=(psnr_from_mse(squared_error_outside / outside_samples, spec.bits_stored)
                         if outside_samples else math.inf),
        ratio=compression_ratio(spec, frames, compressed_bytes),
        compressed_bytes=compressed_bytes,
        frames=frames,
        samples=samples,
        outside_samples=outside_samples,
        squared_error=squared_error,
        squared_error_outside=squared_error_outside,
    )
