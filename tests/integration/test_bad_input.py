"""Bad input gets its DICOM failure status, and the gateway keeps serving the next association."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from gateway.app import Gateway
from tests.conftest import CorpusFile
from tests.integration.conftest import GatewayFactory, send_files

CT_SLICE = "ct/pancreas_ct_philips_series/slice_001.dcm"


def _ct(corpus: list[CorpusFile], rel: str = CT_SLICE) -> Path:
    return next(f.path for f in corpus if f.relpath == rel)


def _still_serving(gateway: Gateway, corpus: list[CorpusFile]) -> None:
    good = _ct(corpus, "ct/pancreas_ct_philips_series/slice_002.dcm")
    assert send_files(gateway.dicom_port, [good]) == {good: 0x0000}


def _failure_count(gateway: Gateway, reason: str) -> float:
    value = gateway.registry.get_sample_value(
        "pacsgw_dimse_failures_total", {"service": "c_store", "reason": reason}
    )
    return value or 0.0


def _store(gateway: Gateway, path: Path) -> int:
    return send_files(gateway.dicom_port, [path])[path]


def test_truncated_dataset_is_refused(make_gateway: GatewayFactory, corpus: list[CorpusFile],
                                      tmp_path: Path) -> None:
    gateway = make_gateway()
    raw = _ct(corpus).read_bytes()
    for cut in (2_000, 3_000, len(raw) - 1_000):
        truncated = tmp_path / f"truncated_{cut}.dcm"
        truncated.write_bytes(raw[:cut])
        assert _store(gateway, truncated) == 0xC000, cut
    assert _failure_count(gateway, "cannot_understand") == 3
    assert gateway.index.counts().instances == 0
    _still_serving(gateway, corpus)


def test_garbage_after_the_file_meta_is_refused(make_gateway: GatewayFactory, corpus: list[CorpusFile],
                                                 tmp_path: Path) -> None:
    gateway = make_gateway()
    source = _ct(corpus)
    meta_end = 132 + 12 + int(pydicom.dcmread(source, stop_before_pixels=True).file_meta.FileMetaInformationGroupLength)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(source.read_bytes()[:meta_end] + os.urandom(50_000))
    assert _store(gateway, garbage) == 0xC000
    _still_serving(gateway, corpus)


def test_dataset_uid_differing_from_the_command_is_refused(
    make_gateway: GatewayFactory, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    gateway = make_gateway()
    ds = pydicom.dcmread(_ct(corpus))
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7.8.9"  # becomes the command's UID
    mismatched = tmp_path / "mismatch.dcm"
    ds.save_as(mismatched)
    assert _store(gateway, mismatched) == 0xA900
    assert _failure_count(gateway, "dataset_mismatch") == 1
    _still_serving(gateway, corpus)


def test_pixel_data_shorter_than_the_image_is_refused(
    make_gateway: GatewayFactory, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    gateway = make_gateway()
    ds = pydicom.dcmread(_ct(corpus))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    short = tmp_path / "short_pixels.dcm"
    ds.save_as(short)
    assert _store(gateway, short) == 0xC001
    _still_serving(gateway, corpus)


def test_calling_ae_not_allowed_is_rejected_and_counted(
    make_gateway: GatewayFactory, corpus: list[CorpusFile]
) -> None:
    gateway = make_gateway(dicom={"allowed_calling_aets": ["CT_SCANNER_1"]})
    intruder = AE(ae_title="INTRUDER")
    intruder.add_requested_context(Verification)
    assoc = intruder.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_rejected
    assert gateway.registry.get_sample_value(
        "pacsgw_associations_rejected_total", {"reason": "calling_ae_not_allowed"}) == 1
    good = _ct(corpus)
    assert send_files(gateway.dicom_port, [good], calling_aet="CT_SCANNER_1") == {good: 0x0000}


def test_read_only_blob_store_gives_out_of_resources(
    make_gateway: GatewayFactory, corpus: list[CorpusFile]
) -> None:
    gateway = make_gateway()
    blob_root = Path(gateway.settings.blob_path)
    blob_root.mkdir(parents=True, exist_ok=True)
    # Tests run as root, which ignores permission bits; the immutable attribute stops even root
    # from adding an entry, as a read-only mount does.
    subprocess.run(["chattr", "+i", str(blob_root)], check=True)
    try:
        assert _store(gateway, _ct(corpus)) == 0xA700
        assert _failure_count(gateway, "out_of_resources") == 1
        assert gateway.index.counts().instances == 0
    finally:
        subprocess.run(["chattr", "-i", str(blob_root)], check=True)
    _still_serving(gateway, corpus)


def test_echo_answers(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


@pytest.mark.parametrize("policy,second_status,revisions", [
    ("keep-revisions", 0x0000, 2),
    ("keep-first", 0x0000, 1),
    ("reject", 0x0111, 1),
])
def test_duplicates_follow_the_configured_policy(
    make_gateway: GatewayFactory, corpus: list[CorpusFile], tmp_path: Path,
    policy: str, second_status: int, revisions: int,
) -> None:
    gateway = make_gateway(ingest={"workers": 1, "duplicates": policy})
    original = _ct(corpus)
    assert _store(gateway, original) == 0x0000
    assert _store(gateway, original) == 0x0000  # identical bytes: acknowledged, stored once
    assert gateway.index.counts().instances == 1

    ds = pydicom.dcmread(original)
    ds.StudyDescription = "corrected by the modality"
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    assert _store(gateway, changed) == second_status

    stored = list(gateway.index.iter_instances())
    assert len(stored) == revisions
    current = gateway.index.locate(str(ds.SOPInstanceUID))
    assert current is not None
    expected_sha = stored[-1].dataset_sha256 if policy == "keep-revisions" else stored[0].dataset_sha256
    assert current.dataset_sha256 == expected_sha


def test_ct_storage_context_is_accepted_with_every_syntax(make_gateway: GatewayFactory) -> None:
    from gateway import syntaxes

    gateway = make_gateway()
    ae = AE(ae_title="PROBE")
    for syntax in syntaxes.ACCEPTED:
        ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == set(syntaxes.ACCEPTED)
