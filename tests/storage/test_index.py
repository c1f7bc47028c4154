"""The metadata index on SQLite and PostgreSQL: recording, revisions, duplicates, concurrency."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.index import IndexCounts, SqlIndex
from storage.models import Instance, Patient, Series, Study
from storage.records import (
    BlobRef,
    DuplicatePolicy,
    InstanceMeta,
    RecordOutcome,
    RecordResult,
    StorageMode,
)

MakeMeta = Callable[..., InstanceMeta]
MakeBlob = Callable[..., BlobRef]
REJECT, KEEP_REVISIONS = DuplicatePolicy.REJECT, DuplicatePolicy.KEEP_REVISIONS


def count(engine: Engine, entity: type) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(entity)).scalar_one())


def test_record_and_locate(index: SqlIndex, make_meta: MakeMeta, make_blob: MakeBlob) -> None:
    meta, blob = make_meta("1.2.3.4.1"), make_blob("a" * 32)

    outcome = index.record_instance(meta, blob, KEEP_REVISIONS)

    assert outcome == RecordOutcome(RecordResult.STORED, revision=1, blob_used=True)
    found = index.locate("1.2.3.4.1")
    assert found is not None
    assert found.revision == 1 and found.is_current
    assert found.blob == blob
    assert found.study_instance_uid == meta.study.study_instance_uid
    assert found.series_instance_uid == meta.series.series_instance_uid
    assert found.sop_class_uid == meta.instance.sop_class_uid
    assert found.storage_mode is meta.instance.storage_mode
    assert (found.codec_id, found.codec_version) == ("jpegls", 1)
    assert found.dataset_sha256 == meta.instance.dataset_sha256
    assert found.pixel_sha256 == meta.instance.pixel_sha256
    assert (found.original_size, found.stored_size) == (1000, 400)
    assert found.received_at == meta.instance.received_at
    assert found.received_at.tzinfo is not None
    assert index.locate("9.9.9") is None


def test_hierarchy_rows_are_reused(
    index: SqlIndex, engine: Engine, make_meta: MakeMeta, make_blob: MakeBlob
) -> None:
    for n in range(3):
        index.record_instance(
            make_meta(f"1.2.3.4.{n}"), make_blob(f"{n:032x}"), REJECT
        )
    index.record_instance(
        make_meta("1.2.3.5.1", series_uid="1.2.3.5"), make_blob("f" * 32), REJECT
    )

    assert (count(engine, Patient), count(engine, Study), count(engine, Series)) == (1, 1, 2)


def test_keep_revisions(index: SqlIndex, make_meta: MakeMeta, make_blob: MakeBlob) -> None:
    uid = "1.2.3.4.7"
    first = index.record_instance(make_meta(uid, content="v1"), make_blob("1" * 32), KEEP_REVISIONS)
    second = index.record_instance(
        make_meta(uid, content="v2"), make_blob("2" * 32), KEEP_REVISIONS
    )

    assert first.result is RecordResult.STORED
    assert second == RecordOutcome(RecordResult.NEW_REVISION, revision=2, blob_used=True)
    current, old = index.locate(uid), index.locate(uid, revision=1)
    assert current is not None and old is not None
    assert (current.revision, current.is_current, current.blob.key) == (2, True, "2" * 32)
    assert (old.revision, old.is_current, old.blob.key) == (1, False, "1" * 32)
    assert index.locate(uid, revision=3) is None

    # The bytes of an older revision again: identical, nothing written, current stays 2.
    again = index.record_instance(make_meta(uid, content="v1"), make_blob("3" * 32), KEEP_REVISIONS)
    assert again == RecordOutcome(RecordResult.IDENTICAL, revision=2, blob_used=False)


@pytest.mark.parametrize(
    ("policy", "result"),
    [
        (DuplicatePolicy.KEEP_FIRST, RecordResult.KEPT_FIRST),
        (REJECT, RecordResult.REJECTED),
        (KEEP_REVISIONS, RecordResult.IDENTICAL),
    ],
)
def test_duplicates_that_write_nothing(
    index: SqlIndex,
    engine: Engine,
    make_meta: MakeMeta,
    make_blob: MakeBlob,
    policy: DuplicatePolicy,
    result: RecordResult,
) -> None:
    uid = "1.2.3.4.8"
    index.record_instance(make_meta(uid), make_blob("1" * 32), policy)
    before = index.counts()
    # Different bytes for KEEP_FIRST and REJECT; the same bytes for the identical case.
    content = "v1" if result is RecordResult.IDENTICAL else "v2"
    duplicate = make_meta(
        uid, content=content, study_uid="7.7", series_uid="7.7.7", patient_id="OTHER"
    )

    outcome = index.record_instance(duplicate, make_blob("2" * 32), policy)

    assert outcome == RecordOutcome(result, revision=1, blob_used=False)
    assert index.counts() == before
    # Nothing written: not even the patient, study and series of the refused duplicate.
    assert (count(engine, Patient), count(engine, Study), count(engine, Instance)) == (1, 1, 1)
    located = index.locate(uid)
    assert located is not None and located.blob.key == "1" * 32


def test_identical_under_every_policy(
    index: SqlIndex, make_meta: MakeMeta, make_blob: MakeBlob
) -> None:
    index.record_instance(make_meta("1.2.3.4.9"), make_blob("1" * 32), REJECT)
    for policy in DuplicatePolicy:
        outcome = index.record_instance(make_meta("1.2.3.4.9"), make_blob("2" * 32), policy)
        assert outcome.result is RecordResult.IDENTICAL


def test_malformed_digest_is_refused(
    index: SqlIndex, make_meta: MakeMeta, make_blob: MakeBlob
) -> None:
    meta = make_meta()
    upper = dataclasses.replace(meta.instance, dataset_sha256="AB" * 32)
    bad = dataclasses.replace(meta, instance=upper)
    with pytest.raises(ValueError, match="dataset_sha256"):
        index.record_instance(bad, make_blob("1" * 32), REJECT)


def test_check_constraint_refuses_uppercase_digest(engine: Engine) -> None:
    """The database itself refuses a malformed digest, on both backends."""
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO blobs (key, size, sha256, created_at) VALUES (:k, 1, :s, :t)"),
            {"k": "k", "s": "A" * 64, "t": dt.datetime.now(dt.UTC)},
        )


def test_concurrent_recordings_of_the_same_uid(
    engine: Engine, make_meta: MakeMeta, make_blob: MakeBlob
) -> None:
    """Eight associations send the same UID with different bytes at once: every one is kept."""
    index = SqlIndex(engine)
    threads = 8
    start = threading.Barrier(threads)

    def record(n: int) -> RecordOutcome:
        meta = make_meta("1.2.3.4.99", content=f"v{n}")
        start.wait()
        return index.record_instance(meta, make_blob(f"{n:032x}"), KEEP_REVISIONS)

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(record, range(threads)))

    assert sorted(o.result for o in outcomes).count(RecordResult.STORED) == 1
    assert sorted(o.revision for o in outcomes) == list(range(1, threads + 1))
    revisions = list(index.iter_instances())
    assert sorted(r.revision for r in revisions) == list(range(1, threads + 1))
    assert [r.revision for r in revisions if r.is_current] == [threads]
    assert count(engine, Study) == 1 and count(engine, Series) == 1
    assert index.counts().instances == 1 and index.counts().revisions == threads


def test_concurrent_identical_recordings(
    engine: Engine, make_meta: MakeMeta, make_blob: MakeBlob
) -> None:
    """The same instance sent twice at once (a retry crossing the first attempt): stored once."""
    index = SqlIndex(engine)
    threads = 6
    start = threading.Barrier(threads)

    def record(n: int) -> RecordOutcome:
        start.wait()
        return index.record_instance(make_meta("1.2.3.4.98"), make_blob(f"{n:032x}"), REJECT)

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(record, range(threads)))

    results = [o.result for o in outcomes]
    assert results.count(RecordResult.STORED) == 1
    assert results.count(RecordResult.IDENTICAL) == threads - 1
    assert [o.blob_used for o in outcomes].count(True) == 1
    assert count(engine, Instance) == 1


def test_concurrent_new_study_is_created_once(
    engine: Engine, make_meta: MakeMeta, make_blob: MakeBlob
) -> None:
    index = SqlIndex(engine)
    threads = 8
    start = threading.Barrier(threads)

    def record(n: int) -> RecordOutcome:
        start.wait()
        return index.record_instance(make_meta(f"1.2.3.4.{n}"), make_blob(f"{n:032x}"), REJECT)

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(record, range(threads)))

    assert {o.result for o in outcomes} == {RecordResult.STORED}
    assert (count(engine, Patient), count(engine, Study), count(engine, Series)) == (1, 1, 1)
    assert count(engine, Instance) == threads
    assert index.counts() == IndexCounts(
        instances=threads, revisions=threads, studies=1, series=1,
        stored_bytes=400 * threads, original_bytes=1000 * threads,
    )


def test_iter_instances(index: SqlIndex, make_meta: MakeMeta, make_blob: MakeBlob) -> None:
    # Seven instances in two studies, and a second revision: several pages of three.
    for n in range(5):
        index.record_instance(make_meta(f"1.2.3.4.{n}"), make_blob(f"{n:032x}"), REJECT)
    for n in range(5, 7):
        index.record_instance(
            make_meta(f"2.4.{n}", study_uid="2", series_uid="2.4"), make_blob(f"{n:032x}"), REJECT
        )
    index.record_instance(make_meta("1.2.3.4.0", content="v2"), make_blob("e" * 32), KEEP_REVISIONS)

    everything = list(index.iter_instances())
    assert len(everything) == 8
    assert len(list(index.iter_instances(current_only=True))) == 7
    first_study = list(index.iter_instances(study_instance_uid="1.2.3", current_only=True))
    assert sorted(i.sop_instance_uid for i in first_study) == [f"1.2.3.4.{n}" for n in range(5)]
    assert {i.study_instance_uid for i in index.iter_instances(study_instance_uid="2")} == {"2"}
    assert list(index.iter_instances(study_instance_uid="nope")) == []


def test_referenced_keys(index: SqlIndex, make_meta: MakeMeta, make_blob: MakeBlob) -> None:
    index.record_instance(make_meta("1.1"), make_blob("1" * 32, store="fs"), REJECT)
    index.record_instance(make_meta("1.2"), make_blob("2" * 32, store="other"), REJECT)

    asked = ["1" * 32, "2" * 32, "3" * 32] + [f"{n:032x}" for n in range(1200)]
    assert index.referenced_keys("fs", asked) == {"1" * 32}
    assert index.referenced_keys("other", iter(asked)) == {"2" * 32}
    assert index.referenced_keys("fs", []) == set()


def test_counts(index: SqlIndex, make_meta: MakeMeta, make_blob: MakeBlob) -> None:
    assert index.counts() == IndexCounts(0, 0, 0, 0, 0, 0)
    index.record_instance(
        make_meta("1.1", original_size=100, stored_size=40), make_blob("1" * 32, size=40), REJECT
    )
    index.record_instance(
        make_meta("1.2", series_uid="9.9", original_size=200, stored_size=70),
        make_blob("2" * 32, size=70),
        REJECT,
    )
    index.record_instance(
        make_meta("1.2", content="v2", series_uid="9.9", original_size=300, stored_size=90),
        make_blob("3" * 32, size=90),
        KEEP_REVISIONS,
    )

    assert index.counts() == IndexCounts(
        instances=2, revisions=3, studies=1, series=2, stored_bytes=200, original_bytes=600
    )


def test_ping(index: SqlIndex) -> None:
    index.ping()


@pytest.mark.parametrize("mode", list(StorageMode))
def test_every_storage_mode_round_trips(
    index: SqlIndex, make_meta: MakeMeta, make_blob: MakeBlob, mode: StorageMode
) -> None:
    meta = make_meta()
    instance = dataclasses.replace(meta.instance, storage_mode=mode)
    as_mode = dataclasses.replace(meta, instance=instance)
    index.record_instance(as_mode, make_blob("1" * 32), REJECT)

    found = index.locate(meta.instance.sop_instance_uid)
    assert found is not None and found.storage_mode is mode

