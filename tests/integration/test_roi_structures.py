"""ROI-hybrid keeps exact what the study's stored Segmentations and RT Structure Sets mark.

A real SEG (the corpus's 1-bit liver segmentation, re-pointed at a corpus CT slice with a region
drawn in the air beside the body) and an RT Structure Set with a closed contour in another
corner are stored first; then CT slices of that study go through a ROI-hybrid rule over a real
pynetdicom association. The marked regions must lie in the stored mask of the slice they name and
come back bit-exact, while a slice they do not name keeps its own automatic region only.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import sqlalchemy as sa
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from gateway.instance_blob import roi_masks
from gateway.services.rebuild import rebuild_instance
from gateway.services.structures import RT_STRUCTURE_SET_STORAGE
from storage.models import Instance
from tests.conftest import CORPUS_DIR
from tests.integration.conftest import GatewayFactory, send_files

SERIES = CORPUS_DIR / "ct" / "pancreas_ct_philips_series"
NAMED, UNNAMED = SERIES / "slice_020.dcm", SERIES / "slice_021.dcm"
SEG_SOURCE = CORPUS_DIR / "seg" / "tcia_liver_seg_1bit.dcm"
RULES = [{"name": "ct-body", "modality": ["CT"], "mode": "roi-hybrid", "roi": {"max_error": 4}}]
# Air beside the body of slice_020, outside its automatic region (asserted below).
SEG_BLOCK = (slice(8, 28), slice(8, 28))
CONTOUR_BLOCK = (slice(470, 490), slice(470, 490))


def _same_study(target: Dataset, source: Dataset) -> None:
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "StudyDate", "StudyTime", "AccessionNumber", "StudyID"):
        if keyword in source:
            setattr(target, keyword, source.data_element(keyword).value)
        elif keyword in target:
            delattr(target, keyword)


def _segmentation(image: Dataset, path: Path) -> None:
    seg = pydicom.dcmread(SEG_SOURCE)
    _same_study(seg, image)
    seg.SeriesInstanceUID, seg.SOPInstanceUID = generate_uid(), generate_uid()
    seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
    frames = np.zeros_like(seg.pixel_array)
    frames[0][SEG_BLOCK] = 1
    for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        source.ReferencedSOPInstanceUID = image.SOPInstanceUID if index == 0 else generate_uid()
    seg.PixelData = pack_bits(frames)
    seg.save_as(path, enforce_file_format=True)


def _structure_set(image: Dataset, path: Path) -> None:
    """A closed planar contour around CONTOUR_BLOCK, in patient millimetres on the image's plane."""
    position = np.asarray([float(v) for v in image.ImagePositionPatient])
    orientation = [float(v) for v in image.ImageOrientationPatient]
    row_direction, column_direction = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    between_rows, between_columns = (float(v) for v in image.PixelSpacing)
    rows, columns = CONTOUR_BLOCK

    def patient(row: float, column: float) -> list[float]:
        point = position + column * between_columns * row_direction + row * between_rows * column_direction
        return [round(float(v), 3) for v in point]

    corners = [(rows.start, columns.start), (rows.start, columns.stop - 1), (rows.stop - 1, columns.stop - 1),
               (rows.stop - 1, columns.start)]
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = len(corners)
    contour.ContourData = [value for row, column in corners for value in patient(row, column)]
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = image.SOPClassUID
    referenced.ReferencedSOPInstanceUID = image.SOPInstanceUID
    contour.ContourImageSequence = Sequence([referenced])
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ContourSequence = Sequence([contour])
    roi = Dataset()
    roi.ROINumber = 1
    roi.ROIName = "marker"
    roi.ReferencedFrameOfReferenceUID = image.FrameOfReferenceUID
    roi.ROIGenerationAlgorithm = "MANUAL"

    rtstruct = Dataset()
    _same_study(rtstruct, image)
    rtstruct.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    rtstruct.SOPInstanceUID, rtstruct.SeriesInstanceUID = generate_uid(), generate_uid()
    rtstruct.Modality = "RTSTRUCT"
    rtstruct.StructureSetLabel = "markers"
    rtstruct.StructureSetDate, rtstruct.StructureSetTime = "20261124", "120000"
    rtstruct.StructureSetROISequence = Sequence([roi])
    rtstruct.ROIContourSequence = Sequence([roi_contour])
    rtstruct.file_meta = FileMetaDataset()
    rtstruct.file_meta.MediaStorageSOPClassUID = rtstruct.SOPClassUID
    rtstruct.file_meta.MediaStorageSOPInstanceUID = rtstruct.SOPInstanceUID
    rtstruct.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rtstruct.save_as(path, enforce_file_format=True)


def _stored_frame_and_mask(gateway: object, source_uid: str) -> tuple[np.ndarray, np.ndarray]:
    with gateway.engine.connect() as conn:  # type: ignore[attr-defined]
        derived_uid = conn.execute(sa.select(Instance.sop_instance_uid).where(
            Instance.source_sop_instance_uid == source_uid)).scalar_one()
    stored = gateway.index.locate(derived_uid)  # type: ignore[attr-defined]
    with gateway.blobs.open(stored.blob) as fp:  # type: ignore[attr-defined]
        (mask,) = roi_masks(fp)
    out = io.BytesIO()
    rebuild_instance(gateway.blobs, stored, out.write)  # type: ignore[attr-defined]
    ds = pydicom.dcmread(io.BytesIO(out.getvalue()), force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = stored.transfer_syntax_uid
    return ds.pixel_array, mask


def test_stored_segmentations_and_structure_sets_stay_exact(
        make_gateway: GatewayFactory, db_url: str, tmp_path: Path) -> None:
    named, unnamed = pydicom.dcmread(NAMED), pydicom.dcmread(UNNAMED)
    seg_path, rtstruct_path = tmp_path / "seg.dcm", tmp_path / "rtstruct.dcm"
    _segmentation(named, seg_path)
    _structure_set(named, rtstruct_path)
    gateway = make_gateway(db_url, policy={"rules": RULES})
    # The structure objects first: ingest uses what the study holds when the image arrives.
    assert set(send_files(gateway.dicom_port, [seg_path, rtstruct_path]).values()) == {0}
    assert set(send_files(gateway.dicom_port, [NAMED, UNNAMED]).values()) == {0}

    pixels, mask = _stored_frame_and_mask(gateway, str(named.SOPInstanceUID))
    original = named.pixel_array
    for block in (SEG_BLOCK, CONTOUR_BLOCK):
        assert mask[block].all()
        assert np.array_equal(pixels[block], original[block])
    assert np.array_equal(pixels[mask], original[mask])

    # The neighbouring slice is named by neither object: those corners are air it may alter.
    _, unnamed_mask = _stored_frame_and_mask(gateway, str(unnamed.SOPInstanceUID))
    assert not unnamed_mask[SEG_BLOCK].any() and not unnamed_mask[CONTOUR_BLOCK].any()
    assert mask.sum() > unnamed_mask.sum()


def test_a_structure_object_that_cannot_be_placed_keeps_the_image_exact(
        make_gateway: GatewayFactory, db_url: str, tmp_path: Path) -> None:
    """A SEG naming the slice but drawn on another grid: the slice is stored losslessly."""
    named = pydicom.dcmread(NAMED)
    seg_path = tmp_path / "seg.dcm"
    _segmentation(named, seg_path)
    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array[:, :256, :256]
    seg.Rows = seg.Columns = 256
    seg.PixelData = pack_bits(frames)
    seg.save_as(seg_path, enforce_file_format=True)
    gateway = make_gateway(db_url, policy={"rules": RULES})
    assert set(send_files(gateway.dicom_port, [seg_path, NAMED]).values()) == {0}
    with gateway.engine.connect() as conn:
        row = conn.execute(sa.select(Instance).where(Instance.sop_instance_uid == str(named.SOPInstanceUID))).one()
        derived = conn.execute(sa.select(sa.func.count()).select_from(Instance).where(
            Instance.source_sop_instance_uid == str(named.SOPInstanceUID))).scalar_one()
    assert (row.policy_rule, row.policy_mode) == ("ct-body", "lossless")
    assert derived == 0
