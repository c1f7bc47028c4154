"""C-FIND on the index: the entities of one query level that match, a batch at a time.

Each batch is one short transaction (keyset paging on the level's primary key), so a slow peer
holds neither a connection nor a snapshot between batches; the computed keys of a batch (counts,
modalities, SOP classes) are a few GROUP BY queries over the batch, never a loop over rows.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import InstrumentedAttribute, Session

from storage.db import unavailable_as
from storage.index import stored_instance
from storage.matching import Matcher, Range, datetime_range_sql, to_sql
from storage.models import Instance, Patient, Series, Study
from storage.records import BlobRef, StoredInstance


class Level(enum.StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]


_DEPTH = {level: depth for depth, level in enumerate(Level)}


@dataclass(frozen=True, slots=True)
class IndexedKey:
    """A DICOM attribute the index holds: the column returned, and the column matched on."""

    level: Level
    vr: str
    column: InstrumentedAttribute[Any]
    search: InstrumentedAttribute[Any] | None = None

    @property
    def match_column(self) -> InstrumentedAttribute[Any]:
        return self.search if self.search is not None else self.column


INDEXED_KEYS: Mapping[str, IndexedKey] = {
    "PatientID": IndexedKey(Level.PATIENT, "LO", Patient.patient_id),
    "IssuerOfPatientID": IndexedKey(Level.PATIENT, "LO", Patient.issuer_of_patient_id),
    "PatientName": IndexedKey(Level.PATIENT, "PN", Patient.patient_name, Patient.patient_name_folded),
    "PatientBirthDate": IndexedKey(Level.PATIENT, "DA", Patient.birth_date),
    "PatientSex": IndexedKey(Level.PATIENT, "CS", Patient.sex),
    "StudyInstanceUID": IndexedKey(Level.STUDY, "UI", Study.study_instance_uid),
    "StudyDate": IndexedKey(Level.STUDY, "DA", Study.study_date),
    "StudyTime": IndexedKey(Level.STUDY, "TM", Study.study_time),
    "AccessionNumber": IndexedKey(Level.STUDY, "SH", Study.accession_number),
    "StudyID": IndexedKey(Level.STUDY, "SH", Study.study_id),
    "StudyDescription": IndexedKey(Level.STUDY, "LO", Study.study_description),
    "ReferringPhysicianName": IndexedKey(
        Level.STUDY, "PN", Study.referring_physician_name, Study.referring_physician_name_folded
    ),
    "SeriesInstanceUID": IndexedKey(Level.SERIES, "UI", Series.series_instance_uid),
    "Modality": IndexedKey(Level.SERIES, "CS", Series.modality),
    "SeriesNumber": IndexedKey(Level.SERIES, "IS", Series.series_number),
    "SeriesDescription": IndexedKey(Level.SERIES, "LO", Series.series_description),
    "BodyPartExamined": IndexedKey(Level.SERIES, "CS", Series.body_part_examined),
    "SOPInstanceUID": IndexedKey(Level.IMAGE, "UI", Instance.sop_instance_uid),
    "SOPClassUID": IndexedKey(Level.IMAGE, "UI", Instance.sop_class_uid),
    "InstanceNumber": IndexedKey(Level.IMAGE, "IS", Instance.instance_number),
    "Rows": IndexedKey(Level.IMAGE, "US", Instance.rows),
    "Columns": IndexedKey(Level.IMAGE, "US", Instance.columns),
    "NumberOfFrames": IndexedKey(Level.IMAGE, "IS", Instance.number_of_frames),
}

# Keys the index computes, by the level whose entities they describe.
COMPUTED_KEYS: Mapping[str, Level] = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "ModalitiesInStudy": Level.STUDY,
    "SOPClassesInStudy": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}

# Computed keys that may also be matched on (STUDY level, PS3.4 C.6.1.1.3), with their VR.
MATCHABLE_COMPUTED: Mapping[str, str] = {"ModalitiesInStudy": "CS", "SOPClassesInStudy": "UI"}

_ENTITY_PK = {
    Level.PATIENT: Patient.id,
    Level.STUDY: Study.id,
    Level.SERIES: Series.id,
    Level.IMAGE: Instance.id,
}


@dataclass(frozen=True, slots=True)
class LevelQuery:
    level: Level
    conditions: Mapping[str, Matcher] = field(default_factory=dict)  # keyword -> matcher
    # Study Date + Study Time matched together (PS3.4 C.2.2.2.5); replaces both conditions.
    study_datetime: Range | None = None
    computed: frozenset[str] = frozenset()
    # Whether each match needs an instance whose stored header answers the other keys.
    with_header: bool = False


@dataclass(frozen=True, slots=True)
class HeaderSource:
    """The stored instance a match's header keys are read from."""

    blob: BlobRef
    transfer_syntax_uid: str


@dataclass(frozen=True, slots=True)
class Found:
    values: Mapping[str, Any]  # keyword -> value; computed multi-valued keys are tuples
    header: HeaderSource | None


def find(engine: Engine, query: LevelQuery, *, batch_size: int = 500) -> Iterator[Found]:
    """The matching entities of `query.level`, in primary key order, `batch_size` at a time."""
    pk = _ENTITY_PK[query.level]
    keys = {kw: key for kw, key in INDEXED_KEYS.items() if key.level.depth <= query.level.depth}
    statement = (
        _joined(sa.select(pk, *(key.column.label(kw) for kw, key in keys.items())), query.level)
        .where(*_conditions(query))
        .order_by(pk)
        .limit(batch_size)
    )
    after: Any = None
    while True:
        page = statement if after is None else statement.where(pk > after)
        with unavailable_as("c-find"), Session(engine) as session:
            rows = session.execute(page).all()
            pks = [row[0] for row in rows]
            extra = _computed(session, query, pks) if pks else {}
            headers = _headers(session, query.level, pks) if query.with_header and pks else {}
        for row in rows:
            values = dict(row._mapping)
            values.pop(pk.key, None)
            values = {kw: values[kw] for kw in keys}
            for keyword in query.computed:
                values[keyword] = extra.get(keyword, {}).get(row[0], _empty(keyword))
            yield Found(values, headers.get(row[0]))
        if len(rows) < batch_size:
            return
        after = pks[-1]


def matching_instances(engine: Engine, query: LevelQuery, *, batch_size: int = 500) -> Iterator[StoredInstance]:
    """The current instances of the entities `query` matches (C-GET, C-MOVE), in index order."""
    columns = cast(sa.Select[Any], sa.select(Instance, Series.series_instance_uid, Study.study_instance_uid))
    statement = (
        _joined(columns, Level.IMAGE)
        .where(*_conditions(query))
        .order_by(Instance.id)
        .limit(batch_size)
    )
    after: Any = None
    while True:
        page = statement if after is None else statement.where(Instance.id > after)
        with unavailable_as("retrieve"), Session(engine) as session:
            rows = session.execute(page).all()
        for row in rows:
            yield stored_instance(row)
        if len(rows) < batch_size:
            return
        after = rows[-1][0].id


def _joined(statement: sa.Select[Any], level: Level) -> sa.Select[Any]:
    if level is Level.IMAGE:
        statement = statement.select_from(Instance).join(Series, Instance.series_pk == Series.id)
        statement = statement.where(Instance.is_current)
    if level.depth >= Level.SERIES.depth:
        statement = statement.select_from(Series) if level is Level.SERIES else statement
        statement = statement.join(Study, Series.study_pk == Study.id)
    if level.depth >= Level.STUDY.depth:
        statement = statement.select_from(Study) if level is Level.STUDY else statement
        statement = statement.join(Patient, Study.patient_pk == Patient.id)
    return statement


def _conditions(query: LevelQuery) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = []
    for keyword, matcher in query.conditions.items():
        if query.study_datetime is not None and keyword in ("StudyDate", "StudyTime"):
            continue
        if keyword == "ModalitiesInStudy":
            clause = to_sql(Series.modality, matcher)
            if clause is not None:
                clauses.append(
                    sa.exists().where(Series.study_pk == Study.id, clause).correlate(Study)
                )
            continue
        if keyword == "SOPClassesInStudy":
            clause = to_sql(Instance.sop_class_uid, matcher)
            if clause is not None:
                clauses.append(
                    sa.exists()
                    .where(Instance.series_pk == Series.id, Series.study_pk == Study.id)
                    .where(Instance.is_current, clause)
                    .correlate(Study)
                )
            continue
        clause = to_sql(INDEXED_KEYS[keyword].match_column, matcher)
        if clause is not None and keyword == "SOPInstanceUID":
            # A derived (ROI-hybrid) instance still answers to the UID its modality sent.
            source = to_sql(Instance.source_sop_instance_uid, matcher)
            clause = sa.or_(clause, source) if source is not None else clause
        if clause is not None:
            clauses.append(clause)
    if query.study_datetime is not None:
        combined = datetime_range_sql(Study.study_date, Study.study_time, query.study_datetime)
        if combined is not None:
            clauses.append(combined)
    return clauses


def _empty(keyword: str) -> Any:
    return () if keyword in ("ModalitiesInStudy", "SOPClassesInStudy") else 0


def _counts(session: Session, statement: sa.Select[Any, Any]) -> dict[Any, int]:
    return {group: int(count) for group, count in session.execute(statement)}


def _distinct(session: Session, statement: sa.Select[Any, Any]) -> dict[Any, tuple[str, ...]]:
    found: defaultdict[Any, list[str]] = defaultdict(list)
    for group, value in session.execute(statement.distinct()):
        if value:
            found[group].append(value)
    return {group: tuple(sorted(values)) for group, values in found.items()}


def _computed(session: Session, query: LevelQuery, pks: list[Any]) -> dict[str, dict[Any, Any]]:
    wanted = query.computed
    out: dict[str, dict[Any, Any]] = {}
    count = sa.func.count
    current = sa.and_(Instance.series_pk == Series.id, Instance.is_current)
    if query.level is Level.PATIENT:
        by = Study.patient_pk
        if "NumberOfPatientRelatedStudies" in wanted:
            out["NumberOfPatientRelatedStudies"] = _counts(
                session, sa.select(by, count()).where(by.in_(pks)).group_by(by))
        if "NumberOfPatientRelatedSeries" in wanted:
            out["NumberOfPatientRelatedSeries"] = _counts(
                session, sa.select(by, count()).join(Series, Series.study_pk == Study.id)
                .where(by.in_(pks)).group_by(by))
        if "NumberOfPatientRelatedInstances" in wanted:
            out["NumberOfPatientRelatedInstances"] = _counts(
                session, sa.select(by, count()).join(Series, Series.study_pk == Study.id)
                .join(Instance, current).where(by.in_(pks)).group_by(by))
    elif query.level is Level.STUDY:
        by = Series.study_pk
        if wanted & {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}:
            # Both counts in one statement (viewers ask for both): one round trip per batch.
            series: dict[Any, int] = {}
            instances: dict[Any, int] = {}
            for group, series_count, instance_count in session.execute(
                    sa.select(by, count(sa.distinct(Series.id)), count(Instance.id))
                    .outerjoin(Instance, current).where(by.in_(pks)).group_by(by)):
                series[group], instances[group] = int(series_count), int(instance_count)
            out["NumberOfStudyRelatedSeries"], out["NumberOfStudyRelatedInstances"] = series, instances
        if "ModalitiesInStudy" in wanted:
            out["ModalitiesInStudy"] = _distinct(
                session, sa.select(by, Series.modality).where(by.in_(pks)))
        if "SOPClassesInStudy" in wanted:
            out["SOPClassesInStudy"] = _distinct(
                session, sa.select(by, Instance.sop_class_uid).join(Instance, current).where(by.in_(pks)))
    elif query.level is Level.SERIES and "NumberOfSeriesRelatedInstances" in wanted:
        by = Instance.series_pk
        out["NumberOfSeriesRelatedInstances"] = _counts(
            session, sa.select(by, count()).where(by.in_(pks), Instance.is_current).group_by(by))
    return out


def _headers(session: Session, level: Level, pks: list[Any]) -> dict[Any, HeaderSource]:
    """One current instance per entity (the first indexed) to read header keys from."""
    if level is Level.IMAGE:
        chosen = {pk: pk for pk in pks}
    else:
        group = {Level.PATIENT: Study.patient_pk, Level.STUDY: Series.study_pk,
                 Level.SERIES: Instance.series_pk}[level]
        statement = sa.select(group, sa.func.min(Instance.id)).where(Instance.is_current)
        if level is not Level.SERIES:
            statement = statement.join(Series, Instance.series_pk == Series.id)
        if level is Level.PATIENT:
            statement = statement.join(Study, Series.study_pk == Study.id)
        chosen = {pk: first for pk, first in session.execute(statement.where(group.in_(pks)).group_by(group))}
    rows = session.execute(
        sa.select(Instance.id, Instance.blob_store, Instance.blob_key, Instance.blob_size,
                  Instance.blob_sha256, Instance.transfer_syntax_uid)
        .where(Instance.id.in_(list(chosen.values())))
    ).all()
    sources = {
        row.id: HeaderSource(BlobRef(row.blob_store, row.blob_key, row.blob_size, row.blob_sha256),
                             row.transfer_syntax_uid)
        for row in rows
    }
    return {pk: sources[instance] for pk, instance in chosen.items() if instance in sources}
