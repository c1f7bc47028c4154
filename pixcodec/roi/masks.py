"""Regions that must stay bit-exact, found per modality from the stored pixel values alone.

Every mask is a boolean array of shape (rows, columns), True where the ROI-hybrid codec must
keep a pixel exact. Each one errs on the side of the ROI: it is grown by a safety margin (a
Euclidean disk, so the margin is the same in every direction), and an image the heuristics
cannot read (constant, tiny, all noise) gets a mask covering what is plausibly anatomy rather
than none. The finders are classical morphology on scipy.ndimage: they are deterministic and
fast, and each is a few thresholds a reader can check against the image.

Pixels are the stored words as the gateway hands them over (signed or not, any Bits Stored,
MONOCHROME1 or 2, one or three samples); `display_grey` turns them into one float plane where
brighter on screen means larger.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

__all__ = [
    "DEFAULT_MARGIN",
    "Rect",
    "automatic_mask",
    "burned_in_text_mask",
    "collimated_field_mask",
    "ct_body_mask",
    "dilate",
    "display_grey",
    "keep_large_components",
    "mr_foreground_mask",
    "overlay_mask",
    "rectangles_mask",
    "ultrasound_sector_mask",
]

Mask = npt.NDArray[np.bool_]
Pixels = npt.NDArray[np.number[Any]]

# Pixels of safety margin around every automatic region: enough to keep the skin line, the
# edge blur of a collimator blade and the anti-aliased rim of a glyph exact.
DEFAULT_MARGIN = 4

# The masks are found on at most this many pixels per side: morphology on a 3000 x 2400
# mammogram would otherwise take seconds, and a region boundary found at a quarter of the
# resolution is moved by at most the downsampling factor, which the margin absorbs.
_WORK_SIZE = 512


@dataclass(frozen=True, slots=True)
class Rect:
    """A configured rectangle in pixel coordinates: rows top..top+height-1, columns left..left+width-1."""

    top: int
    left: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height < 0 or self.width < 0:
            raise ValueError(f"rectangle {self} has a negative size")


def dilate(mask: Mask, margin: int) -> Mask:
    """`mask` grown by `margin` pixels (Euclidean): every pixel within `margin` of a True pixel."""
    if margin < 0:
        raise ValueError(f"margin {margin} must not be negative")
    mask = np.asarray(mask, dtype=bool)
    if margin == 0 or not mask.any() or mask.all():
        return mask.copy()
    # A distance transform costs the same for any margin, where iterated dilation grows with it.
    distance: npt.NDArray[np.float64] = ndi.distance_transform_edt(~mask)
    grown: Mask = distance <= margin
    return grown


def keep_large_components(mask: Mask, *, keep: int = 2, min_share: float = 0.1) -> Mask:
    """The `keep` largest connected components of `mask` that hold at least `min_share` of the largest.

    Two by default: legs, arms beside the trunk and the two breasts of a prone scan are
    separate components of one patient, while a table, a tube or noise is much smaller.
    """
    labels, count = ndi.label(mask)
    if count <= 1:
        return np.asarray(mask, dtype=bool).copy()
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:keep]
    chosen = [int(i) + 1 for i in order if sizes[i] >= min_share * sizes[order[0]]]
    kept: Mask = np.isin(labels, chosen)
    return kept


def display_grey(pixels: Pixels, *, photometric: str = "MONOCHROME2", signed: bool = False,
                 bits_stored: int | None = None) -> npt.NDArray[np.float64]:
    """One float plane of the frame, larger meaning brighter on screen.

    Colour frames take the maximum over their samples, so a graphic drawn in any one colour
    stands out as it does on screen. MONOCHROME1 is inverted around its stored range, so the
    finders never need to know the polarity. Palette colour indices are used as they are: the
    palettes of the ultrasound devices we see map larger indices to brighter colours.
    """
    values = np.asarray(pixels)
    if values.ndim == 3:
        values = values.max(axis=2)
    grey = values.astype(np.float64)
    if photometric == "MONOCHROME1":
        if bits_stored is None:
            low, high = float(grey.min()) if grey.size else 0.0, float(grey.max()) if grey.size else 0.0
        elif signed:
            low, high = -float(1 << (bits_stored - 1)), float((1 << (bits_stored - 1)) - 1)
        else:
            low, high = 0.0, float((1 << bits_stored) - 1)
        grey = (low + high) - grey
    return grey


def ct_body_mask(pixels: Pixels, slope: float = 1.0, intercept: float = 0.0, *, threshold_hu: float = -500.0,
                 margin: int = DEFAULT_MARGIN, keep: int = 2) -> Mask:
    """The patient in a CT slice: HU above `threshold_hu`, the largest components, holes filled.

    -500 HU lies between air (-1000) and fat (-100): lung parenchyma (-850..-600) falls below it
    but is enclosed by the chest wall, so filling holes takes it in; the table is a separate,
    much smaller component and is left out. Padding outside the reconstruction circle (-2000,
    -3024) falls below any threshold. `pixels` are the stored values; slope and intercept are
    (0028,1053) and (0028,1052).
    """
    values = np.asarray(pixels)
    _check_plane(values)
    hu = values.astype(np.float64) * slope + intercept
    body = hu > threshold_hu
    # No opening before choosing components: it would cut a thin limb or a skin fold off the
    # body, and the patient matters more than the few bytes of a couch that touches the skin.
    body = keep_large_components(body, keep=keep)
    body = ndi.binary_fill_holes(body)
    return dilate(body, margin)


def mr_foreground_mask(pixels: Pixels, *, margin: int = DEFAULT_MARGIN, fraction: float = 0.05, keep: int = 256) -> Mask:
    """The imaged anatomy of an MR slice: above a robust threshold, then morphology.

    The threshold is the one FSL BET uses to separate head from background: `fraction` of the
    way from the 2nd to the 98th percentile, which ignores both the Rician noise floor and a few
    very bright vessels. An opening removes noise specks and ghosting streaks, the largest
    components are kept, a closing bridges dark signal voids (cortical bone, air in sinuses) at
    the outline, and holes are filled. Up to `keep` components are kept, down to 1 % of the
    largest, since a mosaic holds one per slice.
    """
    values = np.asarray(pixels)
    _check_plane(values)
    grey = values.astype(np.float64)
    low, high = np.percentile(grey, [2.0, 98.0]) if grey.size else (0.0, 0.0)
    if high <= low:
        return np.ones(grey.shape, dtype=bool)
    # Thresholding the local mean, not the pixel, separates dark tissue from the noise floor:
    # averaging shrinks the noise's spread and leaves the tissue's level where it is.
    foreground = ndi.uniform_filter(grey, 5) > low + fraction * (high - low)
    radius = _scaled_radius(grey.shape, 2)
    foreground = _opened(foreground, radius)
    foreground = keep_large_components(foreground, keep=keep, min_share=0.01)
    foreground = _closed(foreground, _scaled_radius(grey.shape, 8))
    foreground = ndi.binary_fill_holes(foreground)
    return dilate(foreground, margin)


def collimated_field_mask(pixels: Pixels, *, photometric: str = "MONOCHROME2", margin: int = DEFAULT_MARGIN,
                          flat_fraction: float = 0.1, extreme_fraction: float = 0.05) -> Mask:
    """The exposed field of a projection radiograph (CR, DX, MG, XA, RF), collimator shadows left out.

    Collimator shadows and the unattenuated background are flat (their local gradient is far
    below anatomy's) and at an end of the intensity range (within `extreme_fraction` of the
    1st or 99th percentile): smooth soft tissue such as the mediastinum is flat but not extreme.
    Flat extreme regions that touch the image border are outside; everything else, with
    holes filled, is the field. "Flat" is relative to the image's own structure: a pixel is flat
    when its smoothed gradient is below `flat_fraction` of the upper quartile of the non-zero
    gradients (anatomy fills at least a quarter of any radiograph worth reading). Works on a downsampled copy (see _WORK_SIZE). Polarity does not
    matter, so `photometric` is only checked, not used.
    """
    values = np.asarray(pixels)
    _check_plane(values)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"(0028,0004) Photometric Interpretation {photometric} is not a radiograph's")
    small, factor = _downsampled(values.astype(np.float64))
    if min(small.shape) < 8:
        return np.ones(values.shape, dtype=bool)
    smooth = ndi.gaussian_filter(small, 1.5)
    gradient = np.hypot(ndi.sobel(smooth, axis=0), ndi.sobel(smooth, axis=1))
    moving = gradient[gradient > 0]
    if moving.size == 0:
        return np.ones(values.shape, dtype=bool)
    reference = float(np.percentile(moving, 75))
    low, high = np.percentile(smooth, [1.0, 99.0])
    extreme = (smooth <= low + extreme_fraction * (high - low)) | (smooth >= high - extreme_fraction * (high - low))
    flat = (ndi.uniform_filter(gradient, 5) < flat_fraction * reference) & extreme
    flat = _opened(flat, 2)
    outside = _touching_border(flat)
    field = ndi.binary_fill_holes(~outside)
    field = keep_large_components(field, keep=1)
    return _grown_upsampled(field, factor, values.shape, margin)


def ultrasound_sector_mask(pixels: Pixels, *, photometric: str = "MONOCHROME2", bits_stored: int = 8,
                           margin: int = DEFAULT_MARGIN) -> Mask:
    """The imaging sector (or rectangle) of an ultrasound frame, annotations around it left out.

    The sector is the one large region of speckle on a black background; text, scales and logos
    are thin and separate. Non-black pixels are closed to join the speckle (and the dark fluid
    inside it), opened to cut thin strokes attached to it, and the largest component, holes
    filled, is the sector. Annotations outside it are `burned_in_text_mask`'s job.
    """
    values = np.asarray(pixels)
    grey = display_grey(values, photometric=photometric, bits_stored=bits_stored)
    _check_plane(grey)
    small, factor = _downsampled(grey)
    if min(small.shape) < 8:
        return np.ones(grey.shape, dtype=bool)
    # Black is 0 on every device we see, but JPEG-coded cines carry ringing a few levels up.
    lit = small > max(2.0, float(1 << max(0, bits_stored - 8)) * 6.0)
    if not lit.any():
        return np.ones(grey.shape, dtype=bool)
    sector = _closed(lit, 4)
    sector = _opened(sector, 4)
    sector = keep_large_components(sector, keep=1)
    sector = ndi.binary_fill_holes(sector)
    if not sector.any():
        return np.ones(grey.shape, dtype=bool)
    return _grown_upsampled(sector, factor, grey.shape, margin)


def burned_in_text_mask(pixels: Pixels, *, photometric: str = "MONOCHROME2", bits_stored: int = 8,
                        margin: int = 2, contrast: float = 0.25, level: float = 0.6, max_stroke: int = 7) -> Mask:
    """Burned-in text, calipers, scales and graphics: pixels that must never be altered.

    Three kinds of pixel count, each relative to the frame's own range (a 16-bit palette frame
    may use a few hundred values): (1) thin bright strokes, found with a white top-hat (brighter
    by `contrast` of the range than the opening with a `max_stroke`-pixel square) among pixels
    above `level` of the range; (2) pixels at the frame's maximum, where devices draw text;
    (3) in colour frames, strongly coloured pixels, since grey-scale modalities draw graphics and
    colour Doppler in colour. Speckle that happens to qualify merely stays exact too.
    """
    values = np.asarray(pixels)
    grey = display_grey(values, photometric=photometric, bits_stored=bits_stored)
    _check_plane(grey)
    low, high = float(grey.min()), float(grey.max())
    if high <= low:
        return np.zeros(grey.shape, dtype=bool)
    relative = (grey - low) / (high - low)
    text = relative >= 1.0
    if min(grey.shape) >= 3:
        size = min(max_stroke, *grey.shape)
        tophat = relative - ndi.grey_opening(relative, size=(size, size))
        text |= (tophat >= contrast) & (relative >= level)
    if values.ndim == 3 and values.shape[2] >= 3 and photometric in _COLOUR:
        text |= _coloured(values, photometric, float((1 << bits_stored) - 1))
    return dilate(text, margin)


_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_RCT", "YBR_ICT"})


def overlay_mask(planes: Iterable[npt.NDArray[np.generic]], shape: tuple[int, int], *,
                 origins: Sequence[tuple[int, int]] | None = None, margin: int = 1) -> Mask:
    """The union of overlay planes (60xx,3000) unpacked to arrays, placed at their (60xx,0050) origins.

    An origin is (row, column) of the plane's first pixel, 1-based as DICOM gives it; planes
    reaching past the image (the corpus has one) are clipped.
    """
    result = np.zeros(shape, dtype=bool)
    for index, plane in enumerate(planes):
        bits = np.asarray(plane).astype(bool)
        if bits.ndim != 2:
            raise ValueError(f"overlay plane {index} has shape {bits.shape}, expected (rows, columns)")
        top, left = (origins[index][0] - 1, origins[index][1] - 1) if origins is not None else (0, 0)
        _paste(result, bits, top, left)
    return dilate(result, margin)


def rectangles_mask(shape: tuple[int, int], rects: Iterable[Rect], *, margin: int = 0) -> Mask:
    """Configured rectangles, clipped to the image; no margin unless asked, as they are exact already."""
    result = np.zeros(shape, dtype=bool)
    for rect in rects:
        top, left = max(rect.top, 0), max(rect.left, 0)
        bottom, right = min(rect.top + rect.height, shape[0]), min(rect.left + rect.width, shape[1])
        if bottom > top and right > left:
            result[top:bottom, left:right] = True
    return dilate(result, margin)


def _check_plane(values: npt.NDArray[np.generic]) -> None:
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"a mask needs one non-empty (rows, columns) plane, not shape {values.shape}")


def _scaled_radius(shape: tuple[int, ...], radius_at_256: int) -> int:
    return max(1, round(radius_at_256 * min(shape) / 256))


def _closed(mask: Mask, radius: int) -> Mask:
    """Closing by a Euclidean disk, treating the outside of the image as empty (a region touching
    the edge keeps its rim). Built from two distance transforms, so its cost does not grow with
    the radius as a structuring element's does."""
    padded = np.pad(mask, radius + 1)
    if not padded.any():
        return np.asarray(mask, dtype=bool).copy()
    grown = ndi.distance_transform_edt(~padded) <= radius
    closed = ndi.distance_transform_edt(grown) > radius
    result: Mask = closed[radius + 1:-(radius + 1), radius + 1:-(radius + 1)]
    return result


def _opened(mask: Mask, radius: int) -> Mask:
    """Opening by a Euclidean disk (see `_closed`): removes whatever is thinner than 2 * radius."""
    padded = np.pad(mask, radius + 1)
    if not padded.any():
        return np.asarray(mask, dtype=bool).copy()
    shrunk = ndi.distance_transform_edt(padded) > radius
    opened = ndi.distance_transform_edt(~shrunk) <= radius if shrunk.any() else shrunk
    result: Mask = opened[radius + 1:-(radius + 1), radius + 1:-(radius + 1)]
    return result


def _touching_border(mask: Mask) -> Mask:
    labels, count = ndi.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    touching: Mask = np.isin(labels, edge[edge > 0])
    return touching


def _downsampled(grey: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], int]:
    factor = max(1, -(-max(grey.shape) // _WORK_SIZE))
    if factor == 1:
        return grey, 1
    rows, columns = (grey.shape[0] // factor) * factor, (grey.shape[1] // factor) * factor
    if rows == 0 or columns == 0:
        return grey, 1
    blocks = grey[:rows, :columns].reshape(rows // factor, factor, columns // factor, factor)
    small: npt.NDArray[np.float64] = blocks.mean(axis=(1, 3))
    return small, factor


def _upsampled(mask: Mask, factor: int, shape: tuple[int, ...]) -> Mask:
    if factor == 1:
        return mask
    big = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    result = np.zeros(shape[:2], dtype=bool)
    rows, columns = min(big.shape[0], shape[0]), min(big.shape[1], shape[1])
    result[:rows, :columns] = big[:rows, :columns]
    # The rows and columns cut off by the block grid copy their neighbours.
    if rows < shape[0]:
        result[rows:, :] = result[rows - 1:rows, :]
    if columns < shape[1]:
        result[:, columns:] = result[:, columns - 1:columns]
    return result


def _grown_upsampled(mask: Mask, factor: int, shape: tuple[int, ...], margin: int) -> Mask:
    """`mask`, found on blocks of `factor` pixels, grown by `margin` full-resolution pixels and
    scaled up. Growing the small mask is far cheaper; its block-centre distances differ from
    pixel distances by at most sqrt(2) blocks, so the block margin is rounded up past that.
    """
    if factor == 1:
        return dilate(mask, margin)
    return _upsampled(dilate(mask, math.ceil(margin / factor + math.sqrt(2))), factor, shape)


def _coloured(values: Pixels, photometric: str, span: float) -> Mask:
    samples = values[..., :3].astype(np.float64)
    if photometric.startswith("YBR"):
        # Chroma is Cb and Cr's distance from their neutral midpoint.
        chroma = np.abs(samples[..., 1] - (span + 1) / 2) + np.abs(samples[..., 2] - (span + 1) / 2)
    else:
        chroma = samples.max(axis=2) - samples.min(axis=2)
    coloured: Mask = chroma > 0.15 * span
    return coloured


def _paste(target: Mask, plane: Mask, top: int, left: int) -> None:
    rows, columns = target.shape
    source_top, source_left = max(0, -top), max(0, -left)
    top, left = max(0, top), max(0, left)
    height = min(plane.shape[0] - source_top, rows - top)
    width = min(plane.shape[1] - source_left, columns - left)
    if height > 0 and width > 0:
        target[top:top + height, left:left + width] |= plane[source_top:source_top + height,
                                                             source_left:source_left + width]


# Modalities whose frames are projection radiographs, found by their collimated field (the
# round or octagonal field of view of angiography and fluoroscopy is found the same way).
_PROJECTION = frozenset({"CR", "DX", "MG", "IO", "PX", "RG", "XA", "RF"})
# Modalities whose devices burn text and graphics into the pixels.
_ANNOTATED = frozenset({"US", "XA", "RF", "ES", "XC", "OT", "SC"})


def automatic_mask(pixels: Pixels, modality: str, *, photometric: str = "MONOCHROME2", bits_stored: int = 16,
                   slope: float = 1.0, intercept: float = 0.0, margin: int = DEFAULT_MARGIN) -> Mask:
    """The automatic ROI for a frame of `modality` (0008,0060): its anatomy finder, plus burned-in
    text where the modality draws it. A modality without a finder gets everything, so it stays
    lossless however the policy is set. Colour frames are only ever ultrasound-like.
    """
    values = np.asarray(pixels)
    shape = values.shape[:2]
    grey_only = values.ndim == 2
    if modality == "CT" and grey_only:
        mask = ct_body_mask(values, slope, intercept, margin=margin)
    elif modality == "MR" and grey_only:
        mask = mr_foreground_mask(values, margin=margin)
    elif modality in _PROJECTION and grey_only and photometric in ("MONOCHROME1", "MONOCHROME2"):
        mask = collimated_field_mask(values, photometric=photometric, margin=margin)
    elif modality == "US":
        mask = ultrasound_sector_mask(values, photometric=photometric, bits_stored=bits_stored, margin=margin)
    else:
        return np.ones(shape, dtype=bool)
    if modality in _ANNOTATED or not grey_only:
        mask |= burned_in_text_mask(values, photometric=photometric, bits_stored=bits_stored)
    return mask
