"""The index values of an instance, read from its header.

Odd but valid values (old-style dates such as 1999.05.05, stray spaces) are normalised where the
meaning is clear and left out of the normalised column otherwise; the raw value always stays in
the stored header, so nothing is lost and nothing fails to index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset

from gateway.errors import DatasetDoesNotMatchSOPClass
from storage.records import PatientAttrs, SeriesAttrs, StudyAttrs

_DATE = re.compile(r"^(\d{4})[.\-/]?(\d{2})[.\-/]?(\d{2})$")
_TIME = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?$")


@dataclass(frozen=True, slots=True)
class InstanceBasics:
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    specific_character_set: str | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    bits_allocated: int | None
    bits_stored: int | None
    photometric_interpretation: str | None


@dataclass(frozen=True, slots=True)
class HeaderAttrs:
    patient: PatientAttrs
    study: StudyAttrs
    series: SeriesAttrs
    instance: InstanceBasics


def normalise_date(value: object) -> str | None:
    match = _DATE.match(str(value or "").strip())
    if not match:
        return None
    year, month, day = match.groups()
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
        return None
    return f"{year}{month}{day}"


def normalise_time(value: object) -> str | None:
    match = _TIME.match(str(value or "").strip())
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    return f"{hours}{minutes or '00'}{seconds or '00'}{fraction or ''}"


def _text(header: Dataset, keyword: str) -> str | None:
    value = header.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _integer(header: Dataset, keyword: str) -> int | None:
    value = header.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _required_uid(header: Dataset, keyword: str) -> str:
    value = _text(header, keyword)
    if not value:
        raise DatasetDoesNotMatchSOPClass(f"{keyword} missing")
    return value


def _charset(header: Dataset) -> str | None:
    value = header.get("SpecificCharacterSet")
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def extract(header: Dataset) -> HeaderAttrs:
    """Index values of a header; DatasetDoesNotMatchSOPClass when a Type 1 UID is missing."""
    patient = PatientAttrs(
        patient_id=_text(header, "PatientID") or "",
        issuer_of_patient_id=_text(header, "IssuerOfPatientID") or "",
        patient_name=_text(header, "PatientName"),
        birth_date=normalise_date(header.get("PatientBirthDate")),
        sex=_text(header, "PatientSex"),
    )
    study = StudyAttrs(
        study_instance_uid=_required_uid(header, "StudyInstanceUID"),
        study_date=normalise_date(header.get("StudyDate")),
        study_time=normalise_time(header.get("StudyTime")),
        accession_number=_text(header, "AccessionNumber"),
        study_id=_text(header, "StudyID"),
        study_description=_text(header, "StudyDescription"),
        referring_physician_name=_text(header, "ReferringPhysicianName"),
    )
    series = SeriesAttrs(
        series_instance_uid=_required_uid(header, "SeriesInstanceUID"),
        modality=_text(header, "Modality"),
        series_number=_integer(header, "SeriesNumber"),
        series_description=_text(header, "SeriesDescription"),
        body_part_examined=_text(header, "BodyPartExamined"),
    )
    instance = InstanceBasics(
        sop_instance_uid=_required_uid(header, "SOPInstanceUID"),
        sop_class_uid=_required_uid(header, "SOPClassUID"),
        instance_number=_integer(header, "InstanceNumber"),
        specific_character_set=_charset(header),
        rows=_integer(header, "Rows"),
        columns=_integer(header, "Columns"),
        number_of_frames=_integer(header, "NumberOfFrames"),
        bits_allocated=_integer(header, "BitsAllocated"),
        bits_stored=_integer(header, "BitsStored"),
        photometric_interpretation=_text(header, "PhotometricInterpretation"),
    )
    return HeaderAttrs(patient, study, series, instance)
