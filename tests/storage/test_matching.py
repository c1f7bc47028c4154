"""The C-FIND matching rules on the index, on both SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from storage.index import SqlIndex
from storage.matching import (
    InvalidMatchingValue,
    Range,
    Universal,
    combine_date_time,
    matches,
    parse,
)
from storage.query import INDEXED_KEYS, Level, LevelQuery, find
from storage.records import BlobRef, DuplicatePolicy, InstanceMeta

MetaFactory = Callable[..., InstanceMeta]

PATIENTS = {
    # patient id: (name, study date, study time, accession, study description)
    "P1": ("Doe^Jane", "20200115", "093000", "ACC_1", "CT HEAD"),
    "P2": ("DOE^JOHN", "20201231", "235959.5", "ACC%2", "CT CHEST"),
    "P3": ("Yamada^Tarou=山田^太郎=やまだ^たろう", "20210301", "120000", "ACCX2", "MR KNEE"),
    "P4": ("Люкceмбypг", "20190704", "080000", "A4", "ct abdomen"),
}


@pytest.fixture
def archive(index: SqlIndex, make_meta: MetaFactory, make_blob: Callable[..., BlobRef]) -> SqlIndex:
    for n, (pid, (name, date, time, accession, description)) in enumerate(PATIENTS.items(), 1):
        for series in (1, 2):
            for image in (1, 2, 3)[: series + 1]:
                meta = make_meta(f"1.2.{n}.{series}.{image}", study_uid=f"1.2.{n}",
                                 series_uid=f"1.2.{n}.{series}", patient_id=pid,
                                 modality="CT" if series == 1 else ("SR" if n == 2 else "MR"))
                meta = dataclasses.replace(
                    meta,
                    patient=dataclasses.replace(meta.patient, patient_name=name),
                    study=dataclasses.replace(meta.study, study_date=date, study_time=time,
                                              accession_number=accession, study_description=description),
                )
                index.record_instance(meta, make_blob(f"k{n}{series}{image}"), DuplicatePolicy.REJECT)
    return index


def studies(engine: Engine, **values: str) -> set[str]:
    conditions = {kw: parse(v, INDEXED_KEYS[kw].vr) for kw, v in values.items()}
    query = LevelQuery(Level.STUDY, conditions)
    return {str(found.values["PatientID"]) for found in find(engine, query, batch_size=2)}


def test_universal_and_single_value(archive: SqlIndex, engine: Engine) -> None:
    assert studies(engine) == set(PATIENTS)
    assert studies(engine, PatientID="") == set(PATIENTS)
    assert studies(engine, PatientID="*") == set(PATIENTS)
    assert studies(engine, PatientID="P2") == {"P2"}
    assert studies(engine, StudyDescription="CT HEAD") == {"P1"}
    assert studies(engine, StudyDescription="CT") == set()


def test_wildcards(archive: SqlIndex, engine: Engine) -> None:
    assert studies(engine, StudyDescription="CT*") == {"P1", "P2"}
    assert studies(engine, StudyDescription="*KNEE") == {"P3"}
    assert studies(engine, StudyDescription="CT HEA?") == {"P1"}
    assert studies(engine, StudyDescription="C?") == set()
    assert studies(engine, AccessionNumber="ACC?2") == {"P2", "P3"}


def test_sql_wildcard_characters_are_literal(archive: SqlIndex, engine: Engine) -> None:
    assert studies(engine, AccessionNumber="ACC%2") == {"P2"}
    assert studies(engine, AccessionNumber="ACC_1") == {"P1"}
    assert studies(engine, AccessionNumber="ACC_*") == {"P1"}
    assert studies(engine, AccessionNumber="ACC[%]2") == set()


def test_case_sensitive_except_person_names(archive: SqlIndex, engine: Engine) -> None:
    assert studies(engine, StudyDescription="ct*") == {"P4"}
    assert studies(engine, StudyDescription="CT ABDOMEN") == set()
    assert studies(engine, PatientName="doe^*") == {"P1", "P2"}
    assert studies(engine, PatientName="DOE^JANE") == {"P1"}


def test_person_names_in_other_character_sets(archive: SqlIndex, engine: Engine) -> None:
    assert studies(engine, PatientName="山田^太郎") == {"P3"}
    assert studies(engine, PatientName="山田*") == {"P3"}
    assert studies(engine, PatientName="やまだ^たろう") == {"P3"}
    assert studies(engine, PatientName="yamada^tarou") == {"P3"}
    assert studies(engine, PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう") == {"P3"}
    assert studies(engine, PatientName="ЛЮКСЕМБУРГ") == set()  # Latin c, y, p in the stored value
    assert studies(engine, PatientName="люкceмбypг") == {"P4"}
    assert studies(engine, PatientName="ЛЮК*") == {"P4"}


def test_date_and_time_ranges(archive: SqlIndex, engine: Engine) -> None:
    assert studies(engine, StudyDate="20200101-20201231") == {"P1", "P2"}
    assert studies(engine, StudyDate="20200101-") == {"P1", "P2", "P3"}
    assert studies(engine, StudyDate="-20200115") == {"P1", "P4"}
    assert studies(engine, StudyDate="20201231") == {"P2"}
    assert studies(engine, StudyTime="0900-1200") == {"P1", "P3"}
    assert studies(engine, StudyTime="2359") == {"P2"}  # reduced precision covers its minute
    assert studies(engine, StudyTime="-0800") == {"P4"}


def test_combined_date_time(archive: SqlIndex, engine: Engine) -> None:
    date, time = parse("20200115-20210301", "DA"), parse("1000-1200", "TM")
    combined = combine_date_time(date, time)
    assert combined == Range("20200115100000", "20210301120059.999999")
    conditions = {"StudyDate": date, "StudyTime": time}
    separate = LevelQuery(Level.STUDY, conditions)
    together = LevelQuery(Level.STUDY, conditions, study_datetime=combined)
    assert {f.values["PatientID"] for f in find(engine, separate)} == {"P3"}
    assert {f.values["PatientID"] for f in find(engine, together)} == {"P2", "P3"}


def test_uid_lists(archive: SqlIndex, engine: Engine) -> None:
    assert studies(engine, StudyInstanceUID="1.2.1\\1.2.3") == {"P1", "P3"}
    assert studies(engine, StudyInstanceUID="1.2.4") == {"P4"}


@pytest.mark.parametrize(
    ("value", "vr"),
    [("1.2.*", "UI"), ("1.2.3?", "UI"), ("2020-2021", "DA"), ("20201301", "DA"), ("20201231-20200101", "DA"),
     ("-", "DA"), ("2500", "TM"), ("1*", "IS"), ("a\\b*", "LO")],
)
def test_values_the_rules_refuse(value: str, vr: str) -> None:
    with pytest.raises(InvalidMatchingValue):
        parse(value, vr)


def test_computed_keys_and_levels(archive: SqlIndex, engine: Engine) -> None:
    query = LevelQuery(
        Level.STUDY,
        {"ModalitiesInStudy": parse("SR", "CS")},
        computed=frozenset({"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                            "ModalitiesInStudy", "SOPClassesInStudy"}),
    )
    (found,) = find(engine, query)
    assert found.values["PatientID"] == "P2"
    assert found.values["NumberOfStudyRelatedSeries"] == 2
    assert found.values["NumberOfStudyRelatedInstances"] == 5
    assert found.values["ModalitiesInStudy"] == ("CT", "SR")
    assert found.values["SOPClassesInStudy"] == ("1.2.840.10008.5.1.4.1.1.2",)

    patients = LevelQuery(Level.PATIENT, {"PatientName": parse("*", "PN")},
                          computed=frozenset({"NumberOfPatientRelatedInstances"}), with_header=True)
    found_patients = list(find(engine, patients, batch_size=3))
    assert [f.values["NumberOfPatientRelatedInstances"] for f in found_patients] == [5] * 4
    assert all(f.header is not None for f in found_patients)

    images = LevelQuery(Level.IMAGE, {"StudyInstanceUID": parse("1.2.3", "UI"),
                                      "SeriesInstanceUID": parse("1.2.3.2", "UI")})
    assert sorted(f.values["SOPInstanceUID"] for f in find(engine, images)) == [
        "1.2.3.2.1", "1.2.3.2.2", "1.2.3.2.3"]
    series = LevelQuery(Level.SERIES, {"Modality": parse("MR", "CS")},
                        computed=frozenset({"NumberOfSeriesRelatedInstances"}))
    assert sorted((f.values["SeriesInstanceUID"], f.values["NumberOfSeriesRelatedInstances"])
                  for f in find(engine, series)) == [("1.2.1.2", 3), ("1.2.3.2", 3), ("1.2.4.2", 3)]


@pytest.mark.parametrize("wanted", [
    {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"},
    {"NumberOfStudyRelatedSeries"},
    {"NumberOfStudyRelatedInstances"},
])
def test_study_counts_leave_out_superseded_revisions(archive: SqlIndex, engine: Engine, make_meta: MetaFactory,
                                                     make_blob: Callable[..., BlobRef], wanted: set[str]) -> None:
    """The study counts, asked together or alone, count current revisions only."""
    resent = make_meta("1.2.1.2.1", content="v2", study_uid="1.2.1", series_uid="1.2.1.2", patient_id="P1",
                       modality="MR")
    outcome = archive.record_instance(resent, make_blob("k121-again"), DuplicatePolicy.KEEP_REVISIONS)
    assert outcome.revision == 2
    query = LevelQuery(Level.STUDY, {"PatientID": parse("P1", "LO")}, computed=frozenset(wanted))
    (found,) = find(engine, query)
    expected = {"NumberOfStudyRelatedSeries": 2, "NumberOfStudyRelatedInstances": 5}
    assert {key: found.values[key] for key in wanted} == {key: expected[key] for key in wanted}


def test_python_rules_on_header_values() -> None:
    assert matches(Universal(), [])
    assert matches(parse("AB*", "LO"), ["ABC"])
    assert not matches(parse("ab*", "LO"), ["ABC"])
    assert matches(parse("山田*", "PN"), ["Yamada^Tarou=山田^太郎"])
    assert matches(parse("1.2\\1.3", "UI"), ["1.3"])
    assert matches(parse("20200101-", "DA"), ["20200102"])
    assert not matches(parse("5", "IS"), ["6"])
