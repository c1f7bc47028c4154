"""The lossy attributes of a derived instance (PS3.3 C.7.6.1.1.5), one value per lossy step."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.derived import LossyStep, apply_lossy_step, derived_uid
from pixcodec.roi import LOSSY_METHOD, PRED_LOSSY_METHOD
from tests.conftest import CorpusFile


def _ct(corpus: list[CorpusFile]) -> Dataset:
    item = next(c for c in corpus if c.relpath == "ct/pancreas_ct_philips_series/slice_001.dcm")
    return pydicom.dcmread(item.path, stop_before_pixels=True)


def test_one_step_on_a_received_instance(corpus: list[CorpusFile]) -> None:
    dataset = _ct(corpus)
    source = str(dataset.SOPInstanceUID)
    new_uid = derived_uid(source, "roi-hybrid:4")
    apply_lossy_step(dataset, LossyStep(3.123456789, LOSSY_METHOD, "what was done"), new_uid)
    assert dataset.LossyImageCompression == "01"
    assert dataset.LossyImageCompressionMethod == LOSSY_METHOD == "ISO_14495_1"
    ratio = str(dataset.LossyImageCompressionRatio)
    assert float(ratio) == pytest.approx(3.123456789, rel=1e-5) and len(ratio) <= 16  # DS
    assert dataset.SOPInstanceUID == new_uid != source
    assert dataset.SourceImageSequence[-1].ReferencedSOPInstanceUID == source
    assert dataset.ImageType[0] == "DERIVED"


def test_a_second_step_appends_never_overwrites(corpus: list[CorpusFile]) -> None:
    dataset = _ct(corpus)
    apply_lossy_step(dataset, LossyStep(2.0, LOSSY_METHOD, "first"), "2.25.1")
    apply_lossy_step(dataset, LossyStep(1e12, PRED_LOSSY_METHOD, "second"), "2.25.2")
    assert list(dataset.LossyImageCompressionMethod) == [LOSSY_METHOD, PRED_LOSSY_METHOD]
    assert len(PRED_LOSSY_METHOD) <= 16  # a CS value
    assert [float(v) for v in dataset.LossyImageCompressionRatio] == [2.0, 1e12]
    assert all(len(str(v)) <= 16 for v in dataset.LossyImageCompressionRatio)
    assert dataset.DerivationDescription == "first | second"


@pytest.mark.parametrize("ratio", [0.0, -1.0, float("inf"), float("nan")])
def test_a_ratio_that_is_no_ratio_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError):
        LossyStep(ratio, LOSSY_METHOD, "nothing")
