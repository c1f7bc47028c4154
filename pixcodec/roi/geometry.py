"""ROI from objects of the same study: DICOM Segmentation frames and RT Structure Set contours.

The rasterisers take geometry already in the image's pixel grid; two small readers turn a
pydicom Dataset of a SEG or an RT Structure Set into that geometry for one image, identified by
its SOP Instance UID (and, for contours, its plane). Nothing here reads files or the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from .masks import Mask, dilate

__all__ = [
    "ImagePlane",
    "contours_mask",
    "rescale_of",
    "rtstruct_contours",
    "seg_frames_for_image",
    "seg_frames_mask",
]


@dataclass(frozen=True, slots=True)
class ImagePlane:
    """Where an image lies in patient space (Image Plane module, PS3.3 C.7.6.2)."""

    position: tuple[float, float, float]  # (0020,0032), the centre of the first pixel, mm
    orientation: tuple[float, float, float, float, float, float]  # (0020,0037): row then column direction
    spacing: tuple[float, float]  # (0028,0030): between rows, then between columns, mm
    thickness: float = 1.0  # (0018,0050): contours within half of it belong to this plane

    @classmethod
    def from_dataset(cls, ds: Dataset) -> ImagePlane:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        rx, ry, rz, cx, cy, cz = (float(v) for v in ds.ImageOrientationPatient)
        between_rows, between_columns = (float(v) for v in ds.PixelSpacing)
        thickness = float(ds.get("SliceThickness") or 1.0)
        return cls((x, y, z), (rx, ry, rz, cx, cy, cz), (between_rows, between_columns), thickness)

    def to_pixels(self, points: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(row, column) of patient-space points (N, 3), and their distance from the plane in mm."""
        row_direction = np.asarray(self.orientation[:3])
        column_direction = np.asarray(self.orientation[3:])
        normal = np.cross(row_direction, column_direction)
        offset = np.asarray(points, dtype=np.float64) - np.asarray(self.position)
        # The row direction cosines point along a row, i.e. towards increasing column index.
        columns = offset @ row_direction / self.spacing[1]
        rows = offset @ column_direction / self.spacing[0]
        return np.stack([rows, columns], axis=1), np.abs(offset @ normal)


def rescale_of(ds: Dataset) -> tuple[float, float]:
    """(slope, intercept) of the Modality LUT (0028,1053)/(0028,1052), from the top level or, for
    enhanced objects, the shared Pixel Value Transformation; (1, 0) when absent."""
    source: Dataset | None = ds if "RescaleIntercept" in ds else None
    if source is None:
        for group in ds.get("SharedFunctionalGroupsSequence") or []:
            for item in group.get("PixelValueTransformationSequence") or []:
                source = item
    if source is None:
        return 1.0, 0.0
    return float(source.get("RescaleSlope", 1.0) or 1.0), float(source.get("RescaleIntercept", 0.0) or 0.0)


def contours_mask(shape: tuple[int, int], contours: Iterable[npt.NDArray[np.floating]], *, margin: int = 1) -> Mask:
    """Closed polygons given as (N, 2) arrays of (row, column) pixel coordinates, filled.

    A pixel is inside when its centre is (even-odd rule, so a contour drawn inside another one
    with the opposite winding, as RT Structure Sets draw holes, stays a hole); the outline's own
    pixels are added so a contour thinner than a pixel still marks something, and then the
    margin.
    """
    result = np.zeros(shape, dtype=bool)
    for contour in contours:
        points = np.asarray(contour, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise ValueError(f"a contour needs (N, 2) row, column points, not shape {points.shape}")
        result ^= _filled(shape, points)
        result |= _outline(shape, points)
    return dilate(result, margin)


def seg_frames_mask(frames: Iterable[npt.NDArray[np.generic]], shape: tuple[int, int], *, margin: int = 1) -> Mask:
    """The union of SEG frames that lie on the image (binary, or fractional above zero)."""
    result = np.zeros(shape, dtype=bool)
    for frame in frames:
        plane = np.asarray(frame)
        if plane.shape != shape:
            raise ValueError(f"a SEG frame of shape {plane.shape} does not lie on an image of {shape}")
        result |= plane > 0
    return dilate(result, margin)


def seg_frames_for_image(seg: Dataset, sop_instance_uid: str) -> list[npt.NDArray[np.generic]]:
    """The frames of a Segmentation whose source image (Derivation Image Sequence) is `sop_instance_uid`."""
    groups = seg.get("PerFrameFunctionalGroupsSequence") or []
    wanted = [index for index, group in enumerate(groups) if sop_instance_uid in _source_uids(group)]
    if not wanted:
        return []
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    return [pixels[index] for index in wanted]


def rtstruct_contours(rtstruct: Dataset, sop_instance_uid: str, plane: ImagePlane | None = None,
                      roi_numbers: Sequence[int] | None = None) -> list[npt.NDArray[np.float64]]:
    """The closed planar contours of an RT Structure Set on one image, in its (row, column) pixels.

    A contour belongs to the image when its Contour Image Sequence names the image, or, when it
    names none, when all its points lie within half a slice of the image's plane. `plane` is
    needed to map patient millimetres to pixels; without it nothing can be placed. Contours of
    type POINT or OPEN_PLANAR mark no area and are left out.
    """
    if plane is None:
        return []
    result: list[npt.NDArray[np.float64]] = []
    for roi in rtstruct.get("ROIContourSequence") or []:
        if roi_numbers is not None and int(roi.get("ReferencedROINumber", -1)) not in roi_numbers:
            continue
        for contour in roi.get("ContourSequence") or []:
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            data = np.asarray([float(v) for v in contour.get("ContourData") or []], dtype=np.float64)
            if data.size < 9 or data.size % 3:
                continue
            pixels, distance = plane.to_pixels(data.reshape(-1, 3))
            referenced = {str(item.get("ReferencedSOPInstanceUID", ""))
                          for item in contour.get("ContourImageSequence") or []}
            if referenced:
                if sop_instance_uid not in referenced:
                    continue
            elif float(distance.max()) > plane.thickness / 2:
                continue
            result.append(pixels)
    return result


def _source_uids(group: Dataset) -> set[str]:
    uids: set[str] = set()
    for derivation in group.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            uids.add(str(source.get("ReferencedSOPInstanceUID", "")))
    return uids


def _filled(shape: tuple[int, int], points: npt.NDArray[np.float64]) -> Mask:
    """Even-odd scanline fill at pixel centres: for each row, the crossings of every edge, sorted."""
    result = np.zeros(shape, dtype=bool)
    if len(points) < 3:
        return result
    start, end = points, np.roll(points, -1, axis=0)
    low = max(0, int(np.ceil(points[:, 0].min())))
    high = min(shape[0] - 1, int(np.floor(points[:, 0].max())))
    columns = np.arange(shape[1])
    for row in range(low, high + 1):
        # Half-open in rows, so a vertex on the scanline is counted once, not twice.
        crossing = (start[:, 0] <= row) != (end[:, 0] <= row)
        if not crossing.any():
            continue
        a, b = start[crossing], end[crossing]
        x = a[:, 1] + (row - a[:, 0]) * (b[:, 1] - a[:, 1]) / (b[:, 0] - a[:, 0])
        inside = (np.searchsorted(np.sort(x), columns, side="right") % 2) == 1
        result[row] = inside
    return result


def _outline(shape: tuple[int, int], points: npt.NDArray[np.float64]) -> Mask:
    result = np.zeros(shape, dtype=bool)
    start, end = points, np.roll(points, -1, axis=0)
    steps = np.maximum(1, np.ceil(np.abs(end - start).max(axis=1) * 2).astype(np.int64))
    for a, b, count in zip(start, end, steps, strict=True):
        t = np.linspace(0.0, 1.0, int(count) + 1)[:, None]
        samples = np.rint(a + t * (b - a)).astype(np.int64)
        keep = (samples[:, 0] >= 0) & (samples[:, 0] < shape[0]) & (samples[:, 1] >= 0) & (samples[:, 1] < shape[1])
        result[samples[keep, 0], samples[keep, 1]] = True
    return result
