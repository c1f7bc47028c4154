"""ROI masks on the real corpus (plausible per modality) and on odd inputs; the SEG and RT
Structure Set rasterisers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from scipy import ndimage as ndi

from pixcodec.roi import (
    ImagePlane,
    Rect,
    automatic_mask,
    burned_in_text_mask,
    collimated_field_mask,
    contours_mask,
    ct_body_mask,
    decode,
    dilate,
    encode,
    mr_foreground_mask,
    overlay_mask,
    rectangles_mask,
    rescale_of,
    rtstruct_contours,
    seg_frames_for_image,
    seg_frames_mask,
    ultrasound_sector_mask,
)

from .corpus_frames import manifest, raw_frames, read_dataset, spec_of
from .test_roi_codec import corpus_case, mask_photometric


def _paths(*modalities: str) -> list[str]:
    return [e["path"] for e in manifest() if e["modality"] in modalities and e["has_pixel_data"]]


def _entry(path: str) -> dict[str, Any]:
    return next(e for e in manifest() if e["path"] == path)


# Images whose pixel values are HU after the Modality LUT (the 8-bit secondary capture is not).
CT_HU = [p for p in _paths("CT") if _entry(p)["bits_allocated"] == 16]


@pytest.mark.parametrize("path", CT_HU)
def test_ct_body_mask_covers_the_patient(path: str) -> None:
    entry = _entry(path)
    slope, intercept = rescale_of(read_dataset(entry))
    spec, cases = corpus_case(path)
    for frame, mask in cases:
        hu = frame.astype(np.float64) * slope + intercept
        labels, count = ndi.label(hu > -300)
        assert count > 0
        largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        assert mask[largest].all(), "tissue above -300 HU of the largest component lies outside the mask"
        assert 0.05 <= mask.mean() <= 1.0


def test_ct_body_mask_leaves_air_and_table_out() -> None:
    spec, cases = corpus_case("ct/pancreas_ct_philips_series/slice_020.dcm")
    frame, mask = cases[0]
    assert 0.2 <= mask.mean() <= 0.6
    assert not mask[0].any() and not mask[-1].any(), "the top and bottom rows (air, table) are outside"


@pytest.mark.parametrize("path", _paths("MR"))
def test_mr_foreground_is_plausible(path: str) -> None:
    spec, cases = corpus_case(path)
    for frame, mask in cases:
        assert 0.02 <= mask.mean() <= 1.0
        # The brightest tenth of the image is anatomy.
        bright = frame >= np.percentile(frame, 90)
        assert mask[bright].mean() >= 0.98


@pytest.mark.parametrize("path", _paths("CR", "DX", "MG", "XA", "RF"))
def test_collimated_field_is_plausible(path: str) -> None:
    entry = _entry(path)
    frame = next(raw_frames(entry, limit=1))
    mask = collimated_field_mask(frame, photometric=entry["photometric_interpretation"])
    assert 0.25 <= mask.mean() <= 1.0
    rows, columns = mask.shape
    # Anatomy sits in the middle of every radiograph in the corpus.
    assert mask[rows // 2 - rows // 8: rows // 2 + rows // 8, columns // 2 - columns // 8: columns // 2 + columns // 8].mean() > 0.5


def test_mammogram_background_is_outside() -> None:
    entry = _entry("mg/ge_senographe_mg_jpeg_lossless.dcm")
    frame = next(raw_frames(entry, limit=1))
    mask = collimated_field_mask(frame, photometric="MONOCHROME2")
    assert 0.2 <= mask.mean() <= 0.6


@pytest.mark.parametrize("path", _paths("US"))
def test_ultrasound_text_stays_exact(path: str) -> None:
    entry = _entry(path)
    spec, cases = corpus_case(path)
    photometric = mask_photometric(entry)
    for frame, mask in cases:
        sector = ultrasound_sector_mask(frame, photometric=photometric, bits_stored=spec.bits_stored)
        text = burned_in_text_mask(frame, photometric=photometric, bits_stored=spec.bits_stored)
        assert 0.05 <= sector.mean() <= 1.0
        assert (mask >= text).all() and (mask >= sector).all()
        decoded, _ = decode(encode(frame, spec, mask, 4))
        spread = text if spec.samples_per_pixel == 1 else np.repeat(text[:, :, None], spec.samples_per_pixel, axis=2)
        assert np.array_equal(decoded[spread], frame[spread])


def test_burned_in_annotations_are_found() -> None:
    """wg04 US1 carries white text in the corners, outside the sector."""
    spec, cases = corpus_case("us/wg04_us1_rgb_uncompressed.dcm")
    frame, _ = cases[0]
    text = burned_in_text_mask(frame, photometric="RGB", bits_stored=8)
    sector = ultrasound_sector_mask(frame, photometric="RGB")
    outside_text = text & ~sector
    assert outside_text.sum() > 500
    # Every saturated white pixel outside the sector is text.
    white = (frame.min(axis=2) >= 250) & ~sector
    assert white.any() and text[white].all()


DEGENERATE = [
    np.zeros((1, 1), dtype=np.uint16),
    np.full((3, 2), 7, dtype=np.int16),
    np.full((64, 64), -1000, dtype=np.int16),
    np.arange(40 * 30, dtype=np.uint16).reshape(40, 30),
    np.random.default_rng(5).integers(0, 4096, (50, 70)).astype(np.uint16),
    np.random.default_rng(6).integers(-2048, 2048, (17, 9)).astype(np.int16),
]


@pytest.mark.parametrize("frame", DEGENERATE, ids=lambda f: f"{f.shape[0]}x{f.shape[1]}-{f.dtype}")
@pytest.mark.parametrize("modality", ["CT", "MR", "CR", "US", "XA", "PT"])
def test_masks_survive_odd_images(frame: np.ndarray, modality: str) -> None:
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        mask = automatic_mask(frame, modality, photometric=photometric, bits_stored=12, intercept=-1024.0)
        assert mask.shape == frame.shape and mask.dtype == bool
    if frame.min() == frame.max():
        assert collimated_field_mask(frame).all()
        assert mr_foreground_mask(frame).all()
        assert not burned_in_text_mask(frame).any()
    assert ct_body_mask(frame, 1.0, -1024.0).shape == frame.shape


def test_unknown_modality_stays_lossless() -> None:
    frame = np.random.default_rng(1).integers(0, 4096, (32, 32)).astype(np.uint16)
    assert automatic_mask(frame, "PT").all()
    assert automatic_mask(frame, "MG", photometric="PALETTE COLOR").all()


def test_dilate_is_a_euclidean_margin() -> None:
    mask = np.zeros((21, 21), dtype=bool)
    mask[10, 10] = True
    grown = dilate(mask, 3)
    assert grown.sum() == 29  # lattice points within radius 3
    assert grown[10, 13] and not grown[13, 13]
    assert dilate(mask, 0).sum() == 1


def test_rectangles_and_overlays() -> None:
    rects = [Rect(2, 3, 4, 5), Rect(-5, -5, 7, 7), Rect(18, 18, 10, 10)]
    mask = rectangles_mask((20, 20), rects)
    assert mask[2:6, 3:8].all() and mask[0:2, 0:2].all() and mask[18:, 18:].all()
    assert mask.sum() == 20 + 4 + 4
    plane = np.zeros((4, 4), dtype=np.uint8)
    plane[1, 1] = 1
    overlay = overlay_mask([plane], (10, 10), origins=[(9, 9)], margin=0)
    assert overlay.sum() == 1 and overlay[9, 9]
    with pytest.raises(ValueError):
        Rect(0, 0, -1, 2)


def test_overlay_plane_of_the_corpus_stays_exact() -> None:
    entry = _entry("mr/gdcm_siemens_overlays_private.dcm")
    ds = read_dataset(entry)
    spec = spec_of(entry)
    frame = next(raw_frames(entry, limit=1))
    overlay = ds.overlay_array(0x6000)
    origin = tuple(int(v) for v in ds[0x6000, 0x0050].value)
    mask = overlay_mask([overlay], frame.shape, origins=[origin])
    assert mask.any()
    roi = mask | mr_foreground_mask(frame)
    decoded, _ = decode(encode(frame, spec, roi, 4))
    assert np.array_equal(decoded[mask], frame[mask])


def test_contours_fill_by_pixel_centres() -> None:
    square = np.array([[2.0, 2.0], [2.0, 7.0], [7.0, 7.0], [7.0, 2.0]])
    mask = contours_mask((10, 10), [square], margin=0)
    assert mask[2:8, 2:8].all() and mask.sum() == 36
    # A contour inside another one is a hole (even-odd), its outline kept.
    inner = np.array([[4.0, 4.0], [4.0, 5.0], [5.0, 5.0], [5.0, 4.0]])
    holed = contours_mask((10, 10), [square * 1.0, inner], margin=0)
    assert holed.sum() >= 32
    tiny = contours_mask((10, 10), [np.array([[3.2, 3.3]])], margin=0)
    assert tiny.sum() == 1 and tiny[3, 3]


def test_rtstruct_contours_map_patient_mm_to_pixels() -> None:
    plane = ImagePlane(position=(-100.0, -50.0, 20.0), orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                       spacing=(0.5, 2.0), thickness=3.0)
    # A rectangle from column 5..10 (x = -90..-80 mm) and row 4..8 (y = -48..-46 mm) at z = 20.
    points = [(-90.0, -48.0), (-80.0, -48.0), (-80.0, -46.0), (-90.0, -46.0)]
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.ContourData = [v for x, y in points for v in (x, y, 20.0)]
    elsewhere = Dataset()
    elsewhere.ContourGeometricType = "CLOSED_PLANAR"
    elsewhere.ContourData = [v for x, y in points for v in (x, y, 40.0)]
    roi = Dataset()
    roi.ReferencedROINumber = 1
    roi.ContourSequence = Sequence([contour, elsewhere])
    rtstruct = Dataset()
    rtstruct.ROIContourSequence = Sequence([roi])
    contours = rtstruct_contours(rtstruct, "1.2.3", plane)
    assert len(contours) == 1
    assert np.allclose(contours[0], [[4, 5], [4, 10], [8, 10], [8, 5]])
    mask = contours_mask((12, 16), contours, margin=0)
    assert mask[4:9, 5:11].all() and mask.sum() == 30
    assert rtstruct_contours(rtstruct, "1.2.3", plane, roi_numbers=[2]) == []
    assert rtstruct_contours(rtstruct, "1.2.3", None) == []
    image = Dataset()
    image.ImagePositionPatient = list(plane.position)
    image.ImageOrientationPatient = list(plane.orientation)
    image.PixelSpacing = list(plane.spacing)
    image.SliceThickness = 3.0
    assert ImagePlane.from_dataset(image) == plane
    # A contour that names its image is placed on it whatever its distance.
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.4"
    elsewhere.ContourImageSequence = Sequence([item])


def test_seg_frames_of_the_corpus() -> None:
    entry = _entry("seg/tcia_liver_seg_1bit.dcm")
    seg = read_dataset(entry)
    group = seg.PerFrameFunctionalGroupsSequence[0]
    source = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
    frames = seg_frames_for_image(seg, source)
    assert frames and all(f.shape == (entry["rows"], entry["columns"]) for f in frames)
    mask = seg_frames_mask(frames, (entry["rows"], entry["columns"]))
    assert 0 < mask.mean() < 0.5
    assert seg_frames_for_image(seg, "1.2.3.4") == []
    with pytest.raises(ValueError):
        seg_frames_mask([np.zeros((3, 3))], (4, 4))
