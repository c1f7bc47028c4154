"""The metadata index: records instance revisions and finds them again."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, Row
from sqlalchemy.orm import Session

from storage.db import IndexUnavailable, describe, for_writing, unavailable_as
from storage.matching import fold_person_name
from storage.models import Base, IndexTotals, Instance, Patient, RetiredBlob, Series, Study
from storage.records import (
    BlobRef,
    DuplicatePolicy,
    InstanceMeta,
    RecordOutcome,
    RecordResult,
    StoredInstance,
)

_SHA256 = re.compile(r"[0-9a-f]{64}")

# Writers of one UID queue on a lock (see _serialise_uid), so the unique constraint only has to
# catch what slips past it; one retry then sees the winner's row.
_RECORD_ATTEMPTS = 2

# More stripes spread PostgreSQL row locks of concurrent recordings; the scrape sums them all.
_TOTALS_STRIPES = 16

_KEYS_PER_QUERY = 500


@dataclass(frozen=True, slots=True)
class IndexCounts:
    instances: int  # SOP instances (their current revisions)
    revisions: int  # every revision kept, current or not
    studies: int
    series: int
    stored_bytes: int  # blob bytes of every revision kept
    original_bytes: int  # bytes as received of every revision kept


class SqlIndex:
    """The index on one engine: PostgreSQL in production, SQLite for the embedded default."""

    def __init__(self, engine: Engine, *, batch_size: int = 500) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._engine = engine
        self._writer = for_writing(engine)
        self._batch_size = batch_size

    def record_instance(
        self, meta: InstanceMeta, blob: BlobRef, duplicates: DuplicatePolicy
    ) -> RecordOutcome:
        """Record one received instance and its blob in one transaction.

        Patient, study and series rows keep the attributes of the first instance that created
        them. When `blob_used` is False the index keeps no reference to the blob and the caller
        deletes it.
        """
        _validate(meta, blob)
        race: exc.IntegrityError | None = None
        for _ in range(_RECORD_ATTEMPTS):
            try:
                with unavailable_as("record instance"), Session(self._writer) as session:
                    with session.begin():
                        return _record(session, meta, blob, duplicates)
            except exc.IntegrityError as error:
                # Another association committed the same UID (or the same study, series, ...)
                # since we looked: look again.
                race = error
        raise IndexUnavailable(
            f"could not record an instance after {_RECORD_ATTEMPTS} attempts against concurrent "
            f"writers: {describe(race) if race else 'unknown'}"
        ) from race

    def locate(self, sop_instance_uid: str, revision: int | None = None) -> StoredInstance | None:
        """One revision of an instance: the current one unless `revision` is given."""
        statement = _stored_instances().where(Instance.sop_instance_uid == sop_instance_uid)
        if revision is None:
            statement = statement.where(Instance.is_current)
        else:
            statement = statement.where(Instance.revision == revision)
        with unavailable_as("locate instance"), Session(self._engine) as session:
            row = session.execute(statement).first()
        return None if row is None else stored_instance(row)

    def iter_instances(
        self, *, study_instance_uid: str | None = None, current_only: bool = False
    ) -> Iterator[StoredInstance]:
        """Instances in insertion order, fetched a batch at a time.

        Each batch is its own short transaction (keyset paging on the primary key), so a slow
        consumer such as a C-MOVE holds neither a connection nor a snapshot between batches.
        """
        statement = _stored_instances().order_by(Instance.id).limit(self._batch_size)
        if study_instance_uid is not None:
            statement = statement.where(Study.study_instance_uid == study_instance_uid)
        if current_only:
            statement = statement.where(Instance.is_current)
        after = 0
        while True:
            with unavailable_as("list instances"), Session(self._engine) as session:
                rows = session.execute(statement.where(Instance.id > after)).all()
            for row in rows:
                yield stored_instance(row)
            if len(rows) < self._batch_size:
                return
            after = rows[-1][0].id

    def referenced_keys(self, store: str, keys: Iterable[str]) -> set[str]:
        """Those of `keys` in `store` that some instance revision still references."""
        found: set[str] = set()
        pending = list(keys)
        with unavailable_as("referenced blob keys"), Session(self._engine) as session:
            for start in range(0, len(pending), _KEYS_PER_QUERY):
                batch = pending[start : start + _KEYS_PER_QUERY]
                found.update(
                    session.scalars(
                        sa.select(Instance.blob_key)
                        .where(Instance.blob_store == store, Instance.blob_key.in_(batch))
                        .distinct()
                    )
                )
                # A blob an archive swap replaced stays readable until its grace period is over.
                found.update(
                    session.scalars(
                        sa.select(RetiredBlob.blob_key).where(
                            RetiredBlob.blob_store == store,
                            RetiredBlob.blob_key.in_(batch),
                            RetiredBlob.delete_after > _utcnow(),
                        )
                    )
                )
        return found

    def counts(self) -> IndexCounts:
        """Totals kept up to date by record_instance: a sum over a few rows, whatever the index size."""
        columns = ("instances", "revisions", "studies", "series", "stored_bytes", "original_bytes")
        totals = sa.inspect(IndexTotals).columns
        statement = sa.select(*(sa.func.coalesce(sa.func.sum(totals[c]), 0) for c in columns))
        with unavailable_as("index counts"), self._engine.connect() as connection:
            row = connection.execute(statement).one()
        return IndexCounts(**{name: int(value) for name, value in zip(columns, row, strict=True)})

    def ping(self) -> None:
        with unavailable_as("ping"), self._engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))


def _validate(meta: InstanceMeta, blob: BlobRef) -> None:
    """Refuse malformed values up front, with a message, rather than as a constraint violation."""
    digests = {
        "blob sha256": blob.sha256,
        "dataset_sha256": meta.instance.dataset_sha256,
        "pixel_sha256": meta.instance.pixel_sha256,
    }
    for what, digest in digests.items():
        if digest is not None and not _SHA256.fullmatch(digest):
            raise ValueError(f"{what} must be 64 lowercase hex digits, got {digest!r}")
    if meta.instance.received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    if min(blob.size, meta.instance.original_size, meta.instance.stored_size) < 0:
        raise ValueError("sizes must not be negative")


def _record(
    session: Session, meta: InstanceMeta, blob: BlobRef, duplicates: DuplicatePolicy
) -> RecordOutcome:
    attrs = meta.instance
    _serialise_uid(session, attrs.sop_instance_uid)
    # Duplicates are decided before anything is written, so the three outcomes that keep nothing
    # leave the database exactly as it was.
    known = session.execute(
        sa.select(Instance.id, Instance.revision, Instance.is_current, Instance.dataset_sha256)
        .where(Instance.sop_instance_uid == attrs.sop_instance_uid)
        .order_by(Instance.revision)
    ).all()
    revision = 1
    if known:
        current = next((row for row in known if row.is_current), known[-1])
        if any(row.dataset_sha256 == attrs.dataset_sha256 for row in known):
            return RecordOutcome(RecordResult.IDENTICAL, current.revision, blob_used=False)
        if duplicates is DuplicatePolicy.KEEP_FIRST:
            return RecordOutcome(RecordResult.KEPT_FIRST, current.revision, blob_used=False)
        if duplicates is DuplicatePolicy.REJECT:
            return RecordOutcome(RecordResult.REJECTED, current.revision, blob_used=False)
        session.execute(sa.update(Instance).where(Instance.id == current.id).values(is_current=False))
        revision = known[-1].revision + 1

    patient_pk, _ = _get_or_create(
        session,
        Patient,
        {
            "patient_id": meta.patient.patient_id,
            "issuer_of_patient_id": meta.patient.issuer_of_patient_id,
            "patient_name": meta.patient.patient_name,
            "patient_name_folded": fold_person_name(meta.patient.patient_name),
            "birth_date": meta.patient.birth_date,
            "sex": meta.patient.sex,
        },
        ("patient_id", "issuer_of_patient_id"),
    )
    study_pk, new_study = _get_or_create(
        session,
        Study,
        {
            "study_instance_uid": meta.study.study_instance_uid,
            "patient_pk": patient_pk,
            "study_date": meta.study.study_date,
            "study_time": meta.study.study_time,
            "accession_number": meta.study.accession_number,
            "study_id": meta.study.study_id,
            "study_description": meta.study.study_description,
            "referring_physician_name": meta.study.referring_physician_name,
            "referring_physician_name_folded": fold_person_name(meta.study.referring_physician_name),
        },
        ("study_instance_uid",),
    )
    series_pk, new_series = _get_or_create(
        session,
        Series,
        {
            "series_instance_uid": meta.series.series_instance_uid,
            "study_pk": study_pk,
            "modality": meta.series.modality,
            "series_number": meta.series.series_number,
            "series_description": meta.series.series_description,
            "body_part_examined": meta.series.body_part_examined,
        },
        ("series_instance_uid",),
    )
    session.execute(
        sa.insert(Instance).values(
            series_pk=series_pk,
            sop_instance_uid=attrs.sop_instance_uid,
            revision=revision,
            is_current=True,
            sop_class_uid=attrs.sop_class_uid,
            instance_number=attrs.instance_number,
            transfer_syntax_uid=attrs.transfer_syntax_uid,
            specific_character_set=attrs.specific_character_set,
            rows=attrs.rows,
            columns=attrs.columns,
            number_of_frames=attrs.number_of_frames,
            bits_allocated=attrs.bits_allocated,
            bits_stored=attrs.bits_stored,
            photometric_interpretation=attrs.photometric_interpretation,
            storage_mode=attrs.storage_mode,
            codec_id=attrs.codec_id,
            codec_version=attrs.codec_version,
            original_size=attrs.original_size,
            stored_size=attrs.stored_size,
            dataset_sha256=attrs.dataset_sha256,
            pixel_sha256=attrs.pixel_sha256,
            received_at=attrs.received_at,
            calling_ae_title=attrs.calling_ae_title,
            compression_fallback=attrs.compression_fallback,
            policy_rule=attrs.policy_rule,
            policy_mode=attrs.policy_mode,
            source_sop_instance_uid=attrs.source_sop_instance_uid,
            roi_fraction=attrs.roi.fraction if attrs.roi else None,
            roi_max_error=attrs.roi.max_error_outside if attrs.roi else None,
            roi_psnr_db=attrs.roi.psnr_db if attrs.roi else None,
            roi_psnr_outside_db=attrs.roi.psnr_outside_db if attrs.roi else None,
            roi_ratio=attrs.roi.ratio if attrs.roi else None,
            blob_store=blob.store,
            blob_key=blob.key,
            blob_size=blob.size,
            blob_sha256=blob.sha256,
        )
    )
    # The unique (sop_instance_uid, revision) constraint decided any race in that INSERT.
    _add_to_totals(
        session,
        instances=1 if revision == 1 else 0,
        revisions=1,
        studies=int(new_study),
        series=int(new_series),
        stored_bytes=blob.size,
        original_bytes=attrs.original_size,
    )
    result = RecordResult.STORED if revision == 1 else RecordResult.NEW_REVISION
    return RecordOutcome(result, revision, blob_used=True)


def _serialise_uid(session: Session, sop_instance_uid: str) -> None:
    """Make concurrent recordings of one UID on PostgreSQL take turns, until commit.

    Without it, N associations sending N versions of one UID at once would each lose the unique
    constraint race up to N-1 times. SQLite needs nothing: its writers already take turns.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(sop_instance_uid.encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def _dialect_insert(session: Session, entity: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """INSERT with ON CONFLICT, which both dialects spell the same way but build separately."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(entity)
    if name == "sqlite":
        return sqlite.insert(entity)
    raise ValueError(f"the index supports PostgreSQL and SQLite, not {name}")


def _get_or_create(
    session: Session, entity: type[Base], values: Mapping[str, Any], keys: Sequence[str]
) -> tuple[int, bool]:
    """The row's id, creating it on first sight; True when this transaction created it.

    ON CONFLICT DO NOTHING makes a second association creating the same row at the same moment
    wait for the first and then reuse its row, instead of failing.
    """
    columns = sa.inspect(entity).columns
    lookup = sa.select(columns["id"]).where(*(columns[key] == values[key] for key in keys))
    # Almost every instance belongs to a patient, study and series already indexed: look first.
    existing = session.execute(lookup).scalar_one_or_none()
    if existing is not None:
        return int(existing), False
    inserted = session.execute(
        _dialect_insert(session, entity)
        .values(dict(values))
        .on_conflict_do_nothing(index_elements=list(keys))
        .returning(columns["id"])
    ).scalar_one_or_none()
    if inserted is not None:
        return int(inserted), True
    return int(session.execute(lookup).scalar_one()), False


def add_to_totals(session: Session, **deltas: int) -> None:
    """Add to the running totals inside the caller's transaction (a recording, an archive swap)."""
    _add_to_totals(session, **deltas)


def dialect_insert(session: Session, entity: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """INSERT ... ON CONFLICT for the session's database."""
    return _dialect_insert(session, entity)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _add_to_totals(session: Session, **deltas: int) -> None:
    totals = sa.inspect(IndexTotals).columns
    insert = _dialect_insert(session, IndexTotals)
    session.execute(
        insert.values(stripe=random.randrange(_TOTALS_STRIPES), **deltas).on_conflict_do_update(
            index_elements=[totals["stripe"]],
            set_={name: totals[name] + insert.excluded[name] for name in deltas},
        )
    )


def _stored_instances() -> sa.Select[Instance, str, str]:
    return (
        sa.select(Instance, Series.series_instance_uid, Study.study_instance_uid)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
    )


def stored_instance(row: Row[Instance, str, str]) -> StoredInstance:
    instance, series_uid, study_uid = row
    return StoredInstance(
        sop_instance_uid=instance.sop_instance_uid,
        revision=instance.revision,
        is_current=instance.is_current,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        storage_mode=instance.storage_mode,
        codec_id=instance.codec_id,
        codec_version=instance.codec_version,
        original_size=instance.original_size,
        stored_size=instance.stored_size,
        dataset_sha256=instance.dataset_sha256,
        pixel_sha256=instance.pixel_sha256,
        blob=BlobRef(
            store=instance.blob_store,
            key=instance.blob_key,
            size=instance.blob_size,
            sha256=instance.blob_sha256,
        ),
        received_at=instance.received_at,
    )
