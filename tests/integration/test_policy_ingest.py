"""The compression policy on the C-STORE path: the matched rule and its mode are stored per
instance, `keep` stores pixels as received, and every instance still rebuilds byte for byte."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom
import sqlalchemy as sa

from gateway.services.rebuild import rebuild_instance, verify
from storage.models import Instance
from storage.records import StorageMode
from tests.conftest import CORPUS_DIR
from tests.integration.conftest import GatewayFactory, dataset_bytes, needs_new_meta, send_files, with_file_meta

FILES = {
    "mr": CORPUS_DIR / "mr" / "barre_mr_heart_multiframe_8bit.dcm",  # native
    "ct": CORPUS_DIR / "ct" / "gdcm_ct_8bit_abdo.dcm",  # native
    "ct-lossy": CORPUS_DIR / "ct" / "wg04_ct1_j2k_lossy.dcm",
    "mg": CORPUS_DIR / "mg" / "ge_senographe_mg_jpeg_lossless.dcm",
}

RULES = [
    {"name": "mr-keep", "modality": ["MR"], "mode": "keep"},
    {"name": "ct-hybrid", "modality": ["CT"], "calling_ae": ["CT_*"], "mode": "roi-hybrid", "roi": {"max_error": 2}},
]


def test_rule_and_mode_are_stored_per_instance(make_gateway: GatewayFactory, db_url: str, tmp_path: Path) -> None:
    gateway = make_gateway(db_url, policy={"rules": RULES})
    (tmp_path / "meta").mkdir()
    paths = {key: with_file_meta(p, tmp_path / "meta") if needs_new_meta(p) else p for key, p in FILES.items()}
    sent = send_files(gateway.dicom_port, list(paths.values()), calling_aet="CT_ROOM2")
    assert set(sent.values()) == {0}

    uid_of = {key: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for key, p in paths.items()}
    with gateway.engine.connect() as conn:
        rows = {row.sop_instance_uid: row for row in conn.execute(sa.select(
            Instance.sop_instance_uid, Instance.policy_rule, Instance.policy_mode,
            Instance.storage_mode, Instance.codec_id))}
    got = {key: (rows[uid].policy_rule, rows[uid].policy_mode) for key, uid in uid_of.items()}
    assert got == {
        "mr": ("mr-keep", "keep"),
        # The automatic CT region covers this whole 8-bit slice: nothing may be lossy, so lossless.
        "ct": ("ct-hybrid", "lossless"),
        "ct-lossy": ("ct-hybrid", "keep"),  # lossy input is never coded lossily again
        "mg": ("builtin-mg", "lossless"),
    }
    assert StorageMode(rows[uid_of["mr"]].storage_mode) is StorageMode.AS_RECEIVED
    assert rows[uid_of["mr"]].codec_id is None
    assert StorageMode(rows[uid_of["ct"]].storage_mode) is StorageMode.COMPRESSED

    results = list(verify(gateway.index, gateway.blobs))
    assert [f for _, f in results if f is not None] == []
    by_uid = {s.sop_instance_uid: s for s, _ in results}
    for key, path in paths.items():
        out = io.BytesIO()
        rebuild_instance(gateway.blobs, by_uid[uid_of[key]], out.write)
        assert out.getvalue() == dataset_bytes(path), key


def test_other_calling_ae_falls_through_to_the_defaults(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = make_gateway("", policy={"rules": RULES})
    path = FILES["ct"]
    path = with_file_meta(path, tmp_path) if needs_new_meta(path) else path
    assert set(send_files(gateway.dicom_port, [path], calling_aet="MR_ROOM1").values()) == {0}
    with gateway.engine.connect() as conn:
        row = conn.execute(sa.select(Instance.policy_rule, Instance.policy_mode, Instance.storage_mode)).one()
    assert (row.policy_rule, row.policy_mode) == ("builtin-default", "lossless")
    assert StorageMode(row.storage_mode) is StorageMode.COMPRESSED


def test_dcmtk_storescu_calling_ae_selects_the_rule(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    # DCMTK's storescu, a real peer in its own process, sets the calling AE title.
    gateway = make_gateway("", policy={"rules": [{"name": "scanner-keep", "calling_ae": ["CT_ROOM?"], "mode": "keep"}]})
    path = FILES["ct"]
    path = with_file_meta(path, tmp_path) if needs_new_meta(path) else path
    sent = subprocess.run(
        ["storescu", "-aet", "CT_ROOM2", "-aec", "PACSGW", "-xi", "-R", "-nh", "127.0.0.1",
         str(gateway.dicom_port), str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert sent.returncode == 0, sent.stderr
    with gateway.engine.connect() as conn:
        row = conn.execute(sa.select(Instance.policy_rule, Instance.policy_mode, Instance.storage_mode)).one()
    assert (row.policy_rule, row.policy_mode) == ("scanner-keep", "keep")
    assert StorageMode(row.storage_mode) is StorageMode.AS_RECEIVED
