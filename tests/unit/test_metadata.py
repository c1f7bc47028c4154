from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.dataset import Dataset

from gateway.errors import DatasetDoesNotMatchSOPClass
from gateway.metadata import extract, normalise_date, normalise_time


@pytest.mark.parametrize("raw,expected", [
    ("20240131", "20240131"), ("1999.05.05", "19990505"), ("1999-05-05", "19990505"),
    (" 20240131 ", "20240131"), ("2024", None), ("20241331", None), ("", None), (None, None),
])
def test_dates_normalised_or_left_out(raw: str | None, expected: str | None) -> None:
    assert normalise_date(raw) == expected


@pytest.mark.parametrize("raw,expected", [
    ("101530", "101530"), ("10:15:30", "101530"), ("1015", "101500"), ("10", "100000"),
    ("101530.123456", "101530.123456"), ("25x", None),
])
def test_times_normalised(raw: str, expected: str | None) -> None:
    assert normalise_time(raw) == expected


def _header() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.StudyDate = "1999.05.05"
    ds.Modality = "CT"
    # Odd values index as NULL, they do not fail: an IS that is not a number, as a modality sent it.
    ds[0x00200011] = RawDataElement(Tag(0x00200011), "IS", 4, b"abc ", 0, True, True)
    # As received: parsed back from bytes, the way the gateway reads headers.
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True)


def test_extract_keeps_odd_values_indexable() -> None:
    attrs = extract(_header())
    assert attrs.study.study_date == "19990505"
    assert attrs.series.series_number is None
    assert attrs.patient.patient_name == "Doe^Jane"


def test_missing_type1_uid_is_a_mismatch() -> None:
    ds = _header()
    del ds.SeriesInstanceUID
    with pytest.raises(DatasetDoesNotMatchSOPClass, match="SeriesInstanceUID"):
        extract(ds)
