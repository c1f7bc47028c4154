"""ROI-hybrid coding on the C-STORE path, with real peers and both databases.

Corpus CT and MR slices go to a gateway whose policy codes them ROI-hybrid. What is stored is a
derived instance: its stored mask's pixels equal the received ones, every other pixel is within
the rule's bound, its DICOM attributes say what was done (checked with pydicom, DCMTK's dcmdump
and dicom3tools' dciodvfy), and C-FIND, C-GET (DCMTK getscu) and a resend all work by the UID the
modality sent.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from pydicom.dataset import Dataset, FileMetaDataset

from gateway import instance_blob
from gateway.instance_blob import rebuild_bytes, roi_masks
from gateway.policy import PolicyRule
from gateway.services import roi_ingest
from gateway.services.prepare import Fallback, IngestJob, PreparedInstance, prepare
from gateway.services.rebuild import rebuild_instance, verify
from pixcodec.roi import LOSSY_METHOD, METHOD_DESCRIPTIONS, PRED_LOSSY_METHOD, stored_values
from storage.models import Instance
from storage.records import RecordResult, StoredInstance
from tests.conftest import CORPUS_DIR
from tests.integration.conftest import GatewayFactory, dataset_bytes, send_files
from tests.integration.test_find import find

BOUND = 4
RULES = [
    {"name": "ct-body", "modality": ["CT"], "mode": "roi-hybrid", "roi": {"max_error": BOUND}},
    {"name": "mr-head", "modality": ["MR"], "mode": "roi-hybrid", "roi": {"max_error": 2, "min_saving": 0.01}},
]
FILES = [
    *sorted((CORPUS_DIR / "ct" / "pancreas_ct_philips_series").glob("slice_00[1-3].dcm")),
    CORPUS_DIR / "mr" / "nih_ge_epi_signed_series" / "slice_015.dcm",  # signed
    # Multi-frame, where lossless coding (packed JPEG-LS) is smaller: it must stay exact.
    CORPUS_DIR / "mr" / "barre_mr_heart_multiframe_8bit.dcm",
    CORPUS_DIR / "mr" / "rorden_siemens_jpeg_lossless.dcm",  # lossless JPEG: decoded, derived native
    CORPUS_DIR / "mr" / "gdcm_siemens_overlays_private.dcm",  # an overlay plane: always exact
    CORPUS_DIR / "mg" / "ge_senographe_mg_jpeg_lossless.dcm",  # built-in rule: lossless
]
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
# Elements a lossy derivation changes (PS3.3 C.7.6.1.1.5, C.12.1.1.1); every other must be kept.
CHANGED = {"SOPInstanceUID", "ImageType", "LossyImageCompression", "LossyImageCompressionRatio",
           "LossyImageCompressionMethod", "SourceImageSequence", "DerivationDescription",
           "DerivationCodeSequence", "PixelData"}


def _parse(data: bytes, syntax: str) -> Dataset:
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _frames(ds: Dataset) -> np.ndarray:
    pixels = ds.pixel_array
    return pixels if int(ds.get("NumberOfFrames", 1)) > 1 else pixels[None]


def _stored(gateway_blobs: object, stored: StoredInstance) -> bytes:
    out = io.BytesIO()
    rebuild_instance(gateway_blobs, stored, out.write)  # type: ignore[arg-type]
    return out.getvalue()


def test_roi_hybrid_instances_are_derived_exact_inside_and_bounded_outside(
        make_gateway: GatewayFactory, db_url: str, tmp_path: Path) -> None:
    gateway = make_gateway(db_url, policy={"rules": RULES})
    assert set(send_files(gateway.dicom_port, FILES).values()) == {0}
    originals = {str(ds.SOPInstanceUID): (path, ds) for path in FILES for ds in [pydicom.dcmread(path)]}

    results = list(verify(gateway.index, gateway.blobs))
    assert [failure for _, failure in results if failure is not None] == []
    with gateway.engine.connect() as conn:
        rows = {row.sop_instance_uid: row for row in conn.execute(sa.select(Instance))}
    derived = {row.source_sop_instance_uid: row for row in rows.values() if row.source_sop_instance_uid}
    mg_uid = next(uid for uid, (path, _) in originals.items() if path.parent.name == "mg")
    heart_uid = next(uid for uid, (path, _) in originals.items() if "heart" in path.name)
    assert set(derived) == set(originals) - {mg_uid, heart_uid}
    assert (rows[mg_uid].policy_rule, rows[mg_uid].policy_mode) == ("builtin-mg", "lossless")
    assert (rows[heart_uid].policy_rule, rows[heart_uid].policy_mode) == ("mr-head", "lossless")
    assert rows[heart_uid].source_sop_instance_uid is None and rows[heart_uid].roi_fraction is None
    sample = gateway.registry.get_sample_value
    assert sample("pacsgw_roi_hybrid_instances_total", {"modality": "CT", "rule": "ct-body"}) == 3
    assert sample("pacsgw_roi_hybrid_instances_total", {"modality": "MR", "rule": "mr-head"}) == 3
    assert sample("pacsgw_roi_hybrid_region_ratio_count", {"modality": "CT"}) == 3
    assert sample("pacsgw_roi_hybrid_psnr_decibels_bucket", {"modality": "CT", "region": "all", "le": "40.0"}) == 0

    by_uid = {stored.sop_instance_uid: stored for stored, _ in results}
    for source_uid, row in derived.items():
        path, original = originals[source_uid]
        bound = BOUND if original.Modality == "CT" else 2
        assert row.sop_instance_uid != source_uid and row.sop_instance_uid.startswith("2.25.")
        assert (row.policy_mode, row.codec_id) == ("roi-hybrid", "roi-hybrid")
        assert 0 < row.roi_fraction < 1 and row.roi_max_error == bound
        assert row.roi_psnr_outside_db is not None and row.roi_psnr_db > 40
        assert row.stored_size < row.original_size

        stored = by_uid[row.sop_instance_uid]
        ds = _parse(_stored(gateway.blobs, stored), row.transfer_syntax_uid)
        native = not original.file_meta.TransferSyntaxUID.is_compressed
        assert row.transfer_syntax_uid == (original.file_meta.TransferSyntaxUID if native else EXPLICIT_LE)
        with gateway.blobs.open(stored.blob) as fp:
            masks = roi_masks(fp)
        spec_signed = int(original.PixelRepresentation) == 1
        for frame_in, frame_out, mask in zip(_frames(original), _frames(ds), masks, strict=True):
            error = frame_out.astype(np.int64) - frame_in.astype(np.int64)
            assert mask.shape == frame_in.shape[:2] and 0 < mask.mean() < 1
            assert np.all(error[mask] == 0), path
            assert int(np.abs(error[~mask]).max()) == bound, path
            assert frame_in.dtype == frame_out.dtype and spec_signed == (frame_in.dtype.kind == "i")

        for group in range(0x6000, 0x6020, 2):
            if (group, 0x3000) in original:
                overlay = original.overlay_array(group).astype(bool)
                top, left = (int(v) - 1 for v in original[group, 0x0050].value)
                assert overlay.any() and masks[0][top:top + overlay.shape[0], left:left + overlay.shape[1]][overlay].all()

        assert ds.LossyImageCompression == "01"
        method = ds.LossyImageCompressionMethod
        assert method in (LOSSY_METHOD, PRED_LOSSY_METHOD) and METHOD_DESCRIPTIONS[method] in ds.DerivationDescription
        if original.Modality == "CT":  # air at a bound of 4: our own near-lossless coder is the smallest
            assert method == PRED_LOSSY_METHOD
        assert float(ds.LossyImageCompressionRatio) == pytest.approx(row.roi_ratio, rel=1e-5)
        assert ds.ImageType[0] == "DERIVED" and list(ds.ImageType[1:]) == list(original.ImageType[1:])
        (source,) = ds.SourceImageSequence
        assert (source.ReferencedSOPInstanceUID, source.ReferencedSOPClassUID) == (source_uid, original.SOPClassUID)
        assert source.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
        assert ds.DerivationCodeSequence[-1].CodeValue == "113040"
        assert f"at most {bound} off" in ds.DerivationDescription
        # Group lengths (gggg,0000) are retired and no longer right once values change: dropped.
        for element in original:
            if element.keyword not in CHANGED and element.tag.element != 0:
                assert ds[element.tag].value == element.value, element.keyword

        # Real DICOM tools read the derived file, and find nothing wrong that was right before.
        written = tmp_path / f"{row.sop_instance_uid}.dcm"
        ds.save_as(written, enforce_file_format=True)
        dump = subprocess.run(["dcmdump", "+P", "0028,2110", "+P", "0008,0018", str(written)],
                              capture_output=True, text=True, check=True).stdout
        assert "[01]" in dump and row.sop_instance_uid in dump
        before = _iod_errors(path)
        after = _iod_errors(written)
        if any(source_uid in error for error in before):  # its own bad UID, now referenced too
            after = {error for error in after if source_uid not in error}
        assert after <= before


def _iod_errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return {line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")}


def test_the_received_uid_finds_and_retrieves_the_derived_instance(
        make_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = make_gateway("", policy={"rules": RULES})
    path = FILES[0]
    assert send_files(gateway.dicom_port, [path]) == {path: 0}
    original = pydicom.dcmread(path)
    source_uid = str(original.SOPInstanceUID)

    status, matches = find(gateway.dicom_port, STUDY_ROOT_FIND, QueryRetrieveLevel="IMAGE",
                           StudyInstanceUID=original.StudyInstanceUID,
                           SeriesInstanceUID=original.SeriesInstanceUID,
                           SOPInstanceUID=source_uid)
    assert status == 0
    (match,) = matches
    derived_uid = str(match.SOPInstanceUID)
    assert derived_uid != source_uid

    out = tmp_path / "got"
    out.mkdir()
    subprocess.run(
        ["getscu", "-aet", "GETSCU", "-aec", "PACSGW", "-S", "-od", str(out),
         "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={original.StudyInstanceUID}",
         "-k", f"SeriesInstanceUID={original.SeriesInstanceUID}", "-k", f"SOPInstanceUID={source_uid}",
         "127.0.0.1", str(gateway.dicom_port)],
        check=True, capture_output=True, timeout=60)
    (received,) = [pydicom.dcmread(p) for p in out.iterdir()]
    assert received.SOPInstanceUID == derived_uid
    assert received.SourceImageSequence[0].ReferencedSOPInstanceUID == source_uid
    error = np.abs(stored_values(received.pixel_array, _spec_of(received)) -
                   stored_values(original.pixel_array, _spec_of(original)))
    assert 0 < int(error.max()) <= BOUND

    # The same instance sent again codes to the same derived instance: recognised, not stored twice.
    assert send_files(gateway.dicom_port, [path]) == {path: 0}
    with gateway.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Instance)).scalar_one() == 1
    identical = {"modality": "CT", "result": RecordResult.IDENTICAL.value}
    assert gateway.registry.get_sample_value("pacsgw_instances_received_total", identical) == 1


def _spec_of(ds: Dataset):  # type: ignore[no-untyped-def]
    from pixcodec import PixelSpec

    return PixelSpec(rows=ds.Rows, columns=ds.Columns, samples_per_pixel=ds.SamplesPerPixel,
                     bits_allocated=ds.BitsAllocated, bits_stored=ds.BitsStored,
                     signed=ds.PixelRepresentation == 1, photometric=ds.PhotometricInterpretation)


def _prepare_with_rules(tmp_path: Path, path: Path) -> PreparedInstance:
    spool = tmp_path / "spool.dcm"
    shutil.copyfile(path, spool)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    rules = tuple(PolicyRule.model_validate(rule) for rule in RULES)
    job = IngestJob(spool, tmp_path / "out.blob", str(header.SOPClassUID), str(header.SOPInstanceUID), "ingest",
                    "TESTSCU", rules)
    return prepare(job)


def test_a_failing_roi_coder_stores_the_received_instance_losslessly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise ValueError("a bug in the mask or the coder")

    monkeypatch.setattr(roi_ingest.roi, "encode_measured", broken)
    prepared = _prepare_with_rules(tmp_path, FILES[0])
    assert prepared.policy is not None and prepared.policy.mode == "lossless"
    assert prepared.policy.reason == "ROI-hybrid coding failed: ValueError"
    assert prepared.roi_failure is Fallback.CODEC_ERROR
    assert prepared.roi is None and prepared.source_sop_instance_uid is None
    with (tmp_path / "out.blob").open("rb") as fp:
        assert rebuild_bytes(fp) == dataset_bytes(FILES[0])


def test_a_roi_blob_that_does_not_rebuild_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = instance_blob.iter_roi_frames

    def off_by_one(section: Any) -> Any:  # a decoder that returns a different frame than was verified
        for frame, mask, spec in real(section):
            frame = frame.copy()
            frame[0, 0] ^= 1
            yield frame, mask, spec

    monkeypatch.setattr(instance_blob, "iter_roi_frames", off_by_one)
    prepared = _prepare_with_rules(tmp_path, FILES[0])
    assert prepared.policy is not None and prepared.policy.mode == "lossless"
    assert prepared.policy.reason == "ROI-hybrid blob did not verify"
    assert prepared.roi_failure is Fallback.VERIFICATION_FAILED  # counted, so the alert fires
    assert prepared.codec_id != "roi-hybrid" and prepared.roi is None
    with (tmp_path / "out.blob").open("rb") as fp:
        assert rebuild_bytes(fp) == dataset_bytes(FILES[0])
