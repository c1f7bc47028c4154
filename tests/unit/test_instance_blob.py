"""The instance blob: exact rebuilds, and every kind of damage is detected."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pytest

from gateway.instance_blob import BlobFormatError, PixelMode, Section, read_footer, rebuild_bytes
from gateway.services.prepare import Fallback, IngestJob, prepare
from pixcodec import JpegLsCodec
from tests.conftest import CorpusFile

CT = "ct/cptac_lscc_chest_siemens_series/slice_005.dcm"


def _job(f: CorpusFile, tmp_path: Path) -> IngestJob:
    import pydicom

    header = pydicom.dcmread(f.path, stop_before_pixels=True)
    return IngestJob(f.path, tmp_path / "x.blob", str(header.SOPClassUID), str(header.SOPInstanceUID), "ingest")


def _dataset(path: Path) -> bytes:
    import pydicom

    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    return path.read_bytes()[132 + 12 + int(meta.FileMetaInformationGroupLength):]


def test_blob_rebuilds_the_received_dataset(corpus: list[CorpusFile], tmp_path: Path) -> None:
    f = next(c for c in corpus if c.relpath == CT)
    prepared = prepare(_job(f, tmp_path))
    assert prepared.pixel_mode is PixelMode.PIXCODEC and prepared.codec_id == "jpeg-ls"
    original = _dataset(f.path)
    with (tmp_path / "x.blob").open("rb") as fp:
        assert rebuild_bytes(fp) == original
    assert prepared.dataset_sha256 == hashlib.sha256(original).hexdigest()
    assert prepared.blob_size < 0.6 * len(original)


@pytest.mark.parametrize("where", [0.002, 0.2, 0.5, 0.9, 0.9999])
def test_any_flipped_bit_is_detected(corpus: list[CorpusFile], tmp_path: Path, where: float) -> None:
    f = next(c for c in corpus if c.relpath == CT)
    prepare(_job(f, tmp_path))
    data = bytearray((tmp_path / "x.blob").read_bytes())
    data[int(len(data) * where)] ^= 0x10
    with pytest.raises(BlobFormatError):
        rebuild_bytes(io.BytesIO(bytes(data)))


def test_truncated_blob_is_detected(corpus: list[CorpusFile], tmp_path: Path) -> None:
    f = next(c for c in corpus if c.relpath == CT)
    prepare(_job(f, tmp_path))
    data = (tmp_path / "x.blob").read_bytes()
    for cut in (0, 7, 100, len(data) // 2, len(data) - 1):
        with pytest.raises(BlobFormatError):
            rebuild_bytes(io.BytesIO(data[:cut]))


class _LyingJpegLs(JpegLsCodec):
    """Codes one pixel wrong and says nothing: what an encoder bug looks like."""

    def encode(self, frame: np.ndarray, spec: Any) -> bytes:
        wrong = np.array(frame)
        wrong.flat[12345] ^= 1
        return super().encode(wrong, spec)


def test_a_codec_that_does_not_round_trip_falls_back_to_the_received_bytes(
    corpus: list[CorpusFile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixcodec.decide import Budget, Candidate

    lying = Budget("lying", (Candidate("jpeg-ls", _LyingJpegLs()),), seconds_per_megasample=1.0)
    monkeypatch.setattr("gateway.services.prepare.budget_named", lambda _name: lying)
    f = next(c for c in corpus if c.relpath == CT)
    prepared = prepare(_job(f, tmp_path))
    assert prepared.fallback is Fallback.VERIFICATION_FAILED
    assert prepared.pixel_mode is PixelMode.VERBATIM and prepared.planned_codec_id == "jpeg-ls"
    with (tmp_path / "x.blob").open("rb") as fp:
        assert rebuild_bytes(fp) == _dataset(f.path)


def test_a_cine_decided_on_a_frame_after_another_is_stored_with_references(
    corpus: list[CorpusFile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision judged pred on the probe frame coded against the frame before it; the blob
    codes the cine that way and rebuilds the received bytes."""
    from pixcodec import ContainerReader, PredCodec
    from pixcodec.decide import Budget, Candidate

    budget = Budget("frames", (Candidate("jpeg-ls", JpegLsCodec()), Candidate("pred", PredCodec.default())),
                    seconds_per_megasample=1000.0)
    monkeypatch.setattr("gateway.services.prepare.budget_named", lambda _name: budget)
    f = next(c for c in corpus if c.relpath == "mr/barre_mr_heart_multiframe_8bit.dcm")
    prepared = prepare(_job(f, tmp_path))
    assert prepared.pixel_mode is PixelMode.PIXCODEC and prepared.codec_id == "pred"
    with (tmp_path / "x.blob").open("rb") as fp:
        assert rebuild_bytes(fp) == _dataset(f.path)
        footer, shell_start = read_footer(fp)
        section = Section(fp, shell_start + footer.shell_stored_length, footer.pixel_stored_length)
        reader = ContainerReader(cast(BinaryIO, section))
        assert sum(PredCodec.references(reader.payload(i)) for i in range(reader.frame_count)) >= 8
