"""The archive recompression queue: which instances await a stronger codec, claims, and swaps.

Everything the archive worker knows lives in these rows (archive_work, archive_control,
retired_blobs), so a restart resumes the work where it stopped and the CLI can pause a running
server. The swap of an instance's blob is one transaction guarded by the old blob key.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from storage.db import for_writing, unavailable_as
from storage.index import add_to_totals, dialect_insert
from storage.models import ArchiveControl, ArchiveWork, Instance, RetiredBlob
from storage.records import BlobRef, StorageMode

_SCAN_BATCH = 1000
_ERROR_LENGTH = 200
# Policy modes whose stored pixels are exact: anything else (keep, roi-hybrid) is left alone.
_LOSSLESS_MODES = ("lossless",)


class WorkState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # swapped for the smaller archive blob
    KEPT = "kept"  # the archive blob was not smaller: the ingest blob stays
    SKIPPED = "skipped"  # superseded (new revision, changed blob) or not re-encodable
    FAILED = "failed"  # max attempts reached; the ingest blob stays


@dataclass(frozen=True, slots=True)
class ArchiveTask:
    """One claimed instance revision, as it was when claimed."""

    instance_pk: int
    attempts: int  # including this one
    blob: BlobRef
    dataset_sha256: str
    stored_size: int
    policy_rule: str | None


@dataclass(frozen=True, slots=True)
class ArchiveCounts:
    paused: bool
    by_state: dict[WorkState, int]
    saved_bytes: int  # ingest blob bytes minus archive blob bytes, over the swapped instances

    @property
    def backlog(self) -> int:
        return self.by_state[WorkState.PENDING] + self.by_state[WorkState.RUNNING]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands aggregates back without an offset; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class ArchiveQueue:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = for_writing(engine)

    # -- control ---------------------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        with unavailable_as("archive pause"), Session(self._writer) as session, session.begin():
            _control(session)
            session.execute(sa.update(ArchiveControl).values(paused=paused, updated_at=_now()))

    def paused(self) -> bool:
        with unavailable_as("archive pause"), Session(self._engine) as session:
            return bool(session.scalar(sa.select(ArchiveControl.paused)))

    def backlog(self) -> tuple[int, bool]:
        """Instances queued or being re-encoded, and the pause flag: an indexed count of the
        unfinished rows only, cheap enough for every scrape."""
        with unavailable_as("archive backlog"), Session(self._engine) as session:
            count = session.scalar(
                sa.select(sa.func.count()).where(
                    ArchiveWork.state.in_((WorkState.PENDING.value, WorkState.RUNNING.value))
                )
            )
            paused = session.scalar(sa.select(ArchiveControl.paused))
        return int(count or 0), bool(paused)

    def counts(self) -> ArchiveCounts:
        """Every state and the bytes saved: reads the whole queue (for the CLI, not for scrapes)."""
        with unavailable_as("archive status"), Session(self._engine) as session:
            rows = session.execute(
                sa.select(ArchiveWork.state, sa.func.count()).group_by(ArchiveWork.state)
            ).all()
            saved = session.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(ArchiveWork.size_before - ArchiveWork.size_after), 0))
                .where(ArchiveWork.state == WorkState.DONE.value)
            )
            paused = session.scalar(sa.select(ArchiveControl.paused))
        by_state = dict.fromkeys(WorkState, 0)
        by_state.update({WorkState(state): int(count) for state, count in rows})
        return ArchiveCounts(bool(paused), by_state, int(saved or 0))

    # -- queueing --------------------------------------------------------------------------

    def enqueue_quiet(self, cutoff: dt.datetime) -> int:
        """Queue the eligible current instances of every series whose newest instance was
        received before `cutoff`; returns how many were queued.

        Reads only the instances recorded since the oldest one still waiting for its series to go
        quiet (archive_control.scanned_through), never the whole table.
        """
        queued = 0
        with unavailable_as("archive enqueue"), Session(self._writer) as session, session.begin():
            control = _control(session, lock=True)
            after = control.scanned_through
            through: int | None = None
            while True:
                rows = session.execute(
                    sa.select(
                        Instance.id, Instance.series_pk, Instance.is_current, Instance.storage_mode,
                        Instance.policy_mode, Instance.codec_id,
                    )
                    .where(Instance.id > after)
                    .order_by(Instance.id)
                    .limit(_SCAN_BATCH)
                ).all()
                if not rows:
                    break
                newest = _newest_received(session, {row.series_pk for row in rows})
                ready: list[int] = []
                for row in rows:
                    if not _eligible(row.is_current, row.storage_mode, row.policy_mode, row.codec_id):
                        continue
                    if newest[row.series_pk] >= cutoff:
                        # Its series is still receiving: look at it again from here next time.
                        through = row.id - 1 if through is None else through
                        continue
                    ready.append(row.id)
                queued += _insert_pending(session, ready)
                after = rows[-1].id
            new_mark = after if through is None else through
            if new_mark != control.scanned_through:
                session.execute(
                    sa.update(ArchiveControl).values(scanned_through=new_mark, updated_at=_now())
                )
        return queued

    # -- claims ----------------------------------------------------------------------------

    def reset_running(self) -> int:
        """Return every running claim to pending: for a database only this process writes
        (SQLite), where a running row at start-up is one the last run left behind."""
        with unavailable_as("archive reset"), Session(self._writer) as session, session.begin():
            result = session.execute(
                sa.update(ArchiveWork)
                .where(ArchiveWork.state == WorkState.RUNNING.value)
                .values(state=WorkState.PENDING.value, lease_until=None, updated_at=_now())
                .returning(ArchiveWork.instance_pk)
            ).all()
        return len(result)

    def claim(self, lease_seconds: float) -> ArchiveTask | None:
        """The oldest pending instance (or one whose claim lapsed), now running under a lease;
        None when there is none. Rows superseded since they were queued are settled on the way.

        PostgreSQL: FOR UPDATE SKIP LOCKED lets several workers and replicas claim side by side.
        SQLite: writers take turns on the database lock, so the select and update cannot interleave.
        """
        while True:
            with unavailable_as("archive claim"), Session(self._writer) as session, session.begin():
                claimed = _claim_one(session, lease_seconds)
            if claimed is None or isinstance(claimed, ArchiveTask):
                return claimed

    def renew(self, instance_pks: Iterable[int], lease_seconds: float) -> None:
        held = list(instance_pks)
        if not held:
            return
        with unavailable_as("archive renew"), Session(self._writer) as session, session.begin():
            session.execute(
                sa.update(ArchiveWork)
                .where(ArchiveWork.instance_pk.in_(held), ArchiveWork.state == WorkState.RUNNING.value)
                .values(lease_until=_now() + dt.timedelta(seconds=lease_seconds))
            )

    def release(self, task: ArchiveTask) -> None:
        """Give a claim back untried (the gateway is stopping): the attempt does not count."""
        with unavailable_as("archive release"), Session(self._writer) as session, session.begin():
            session.execute(
                sa.update(ArchiveWork)
                .where(ArchiveWork.instance_pk == task.instance_pk, ArchiveWork.state == WorkState.RUNNING.value)
                .values(state=WorkState.PENDING.value, attempts=ArchiveWork.attempts - 1, lease_until=None,
                        updated_at=_now())
            )

    # -- outcomes --------------------------------------------------------------------------

    def swap(
        self,
        task: ArchiveTask,
        new_blob: BlobRef,
        *,
        codec_id: str,
        codec_version: int,
        retire_after: dt.datetime,
    ) -> bool:
        """Point the instance at `new_blob` and retire its old blob, in one transaction.

        Only if the row still references the blob the task was claimed with: a new revision or
        another worker's swap since then wins, and False tells the caller to delete `new_blob`.
        """
        with unavailable_as("archive swap"), Session(self._writer) as session, session.begin():
            swapped = session.execute(
                sa.update(Instance)
                .where(
                    Instance.id == task.instance_pk,
                    Instance.is_current,
                    Instance.blob_store == task.blob.store,
                    Instance.blob_key == task.blob.key,
                )
                .values(
                    blob_store=new_blob.store,
                    blob_key=new_blob.key,
                    blob_size=new_blob.size,
                    blob_sha256=new_blob.sha256,
                    stored_size=new_blob.size,
                    codec_id=codec_id,
                    codec_version=codec_version,
                )
                .returning(Instance.id)
            ).first()
            if swapped is None:
                _finish(session, task.instance_pk, WorkState.SKIPPED, error="superseded during re-encoding")
                return False
            add_to_totals(session, instances=0, revisions=0, studies=0, series=0, original_bytes=0,
                          stored_bytes=new_blob.size - task.stored_size)
            session.execute(
                dialect_insert(session, RetiredBlob)
                .values(blob_store=task.blob.store, blob_key=task.blob.key, delete_after=retire_after)
                .on_conflict_do_nothing(index_elements=["blob_store", "blob_key"])
            )
            _finish(session, task.instance_pk, WorkState.DONE, codec=(codec_id, codec_version),
                    sizes=(task.stored_size, new_blob.size))
        return True

    def keep(self, task: ArchiveTask, *, size_after: int, codec_id: str, codec_version: int) -> None:
        """The archive blob was not smaller: the ingest blob stays, and it is not tried again."""
        with unavailable_as("archive outcome"), Session(self._writer) as session, session.begin():
            _finish(session, task.instance_pk, WorkState.KEPT, codec=(codec_id, codec_version),
                    sizes=(task.stored_size, size_after))

    def skip(self, task: ArchiveTask, reason: str) -> None:
        with unavailable_as("archive outcome"), Session(self._writer) as session, session.begin():
            _finish(session, task.instance_pk, WorkState.SKIPPED, error=reason)

    def fail(self, task: ArchiveTask, error: str, *, max_attempts: int) -> WorkState:
        """Record a failed attempt: pending again while attempts remain, else failed."""
        state = WorkState.FAILED if task.attempts >= max_attempts else WorkState.PENDING
        with unavailable_as("archive outcome"), Session(self._writer) as session, session.begin():
            _finish(session, task.instance_pk, state, error=error)
        return state

    # -- retired blobs ---------------------------------------------------------------------

    def due_retired(self, store: str, limit: int = 500) -> list[tuple[int, BlobRef]]:
        """The store's retired blobs whose grace period is over (a reference to delete by: size
        and digest are not kept)."""
        with unavailable_as("retired blobs"), Session(self._engine) as session:
            rows = session.execute(
                sa.select(RetiredBlob.id, RetiredBlob.blob_store, RetiredBlob.blob_key)
                .where(RetiredBlob.blob_store == store, RetiredBlob.delete_after <= _now())
                .order_by(RetiredBlob.id)
                .limit(limit)
            ).all()
        return [(row.id, BlobRef(row.blob_store, row.blob_key, 0, "")) for row in rows]

    def forget_retired(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with unavailable_as("retired blobs"), Session(self._writer) as session, session.begin():
            session.execute(sa.delete(RetiredBlob).where(RetiredBlob.id.in_(list(ids))))


def _eligible(is_current: bool, storage_mode: StorageMode, policy_mode: str | None, codec_id: str | None) -> bool:
    """Current revisions whose pixels a pixcodec codec holds exactly; NULL policy predates the
    policy, when every compressed instance was lossless."""
    return (
        is_current
        and storage_mode is StorageMode.COMPRESSED
        and codec_id is not None
        and (policy_mode is None or policy_mode in _LOSSLESS_MODES)
    )


def _claim_one(session: Session, lease_seconds: float) -> ArchiveTask | bool | None:
    """A task, None when nothing is claimable, or False when the row claimed was superseded."""
    now = _now()
    pick = (
        sa.select(ArchiveWork.instance_pk)
        .where(
            sa.or_(
                ArchiveWork.state == WorkState.PENDING.value,
                sa.and_(ArchiveWork.state == WorkState.RUNNING.value, ArchiveWork.lease_until < now),
            )
        )
        .order_by(ArchiveWork.instance_pk)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    instance_pk = session.scalar(pick)
    if instance_pk is None:
        return None
    attempts = session.scalar(
        sa.update(ArchiveWork)
        .where(ArchiveWork.instance_pk == instance_pk)
        .values(
            state=WorkState.RUNNING.value,
            attempts=ArchiveWork.attempts + 1,
            lease_until=now + dt.timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(ArchiveWork.attempts)
    )
    row = session.get(Instance, instance_pk)
    if row is None or not _eligible(row.is_current, row.storage_mode, row.policy_mode, row.codec_id):
        _finish(session, instance_pk, WorkState.SKIPPED, error="superseded before its turn")
        return False
    return ArchiveTask(
        instance_pk=int(instance_pk),
        attempts=int(attempts or 1),
        blob=BlobRef(row.blob_store, row.blob_key, row.blob_size, row.blob_sha256),
        dataset_sha256=row.dataset_sha256,
        stored_size=row.stored_size,
        policy_rule=row.policy_rule,
    )


def _control(session: Session, *, lock: bool = False) -> ArchiveControl:
    """The control row, created on first use (ON CONFLICT: two processes may both try)."""
    session.execute(
        dialect_insert(session, ArchiveControl)
        .values(id=1, paused=False, scanned_through=0, updated_at=_now())
        .on_conflict_do_nothing(index_elements=["id"])
    )
    statement = sa.select(ArchiveControl).where(ArchiveControl.id == 1)
    if lock:
        # One enqueuer at a time on PostgreSQL; the others wait and then see its mark.
        statement = statement.with_for_update()
    return session.scalars(statement).one()


def _newest_received(session: Session, series: set[int]) -> dict[int, dt.datetime]:
    rows = session.execute(
        sa.select(Instance.series_pk, sa.func.max(Instance.received_at))
        .where(Instance.series_pk.in_(series))
        .group_by(Instance.series_pk)
    ).all()
    return {int(pk): _aware(newest) for pk, newest in rows}


def _insert_pending(session: Session, instance_pks: list[int]) -> int:
    if not instance_pks:
        return 0
    now = _now()
    result = session.execute(
        dialect_insert(session, ArchiveWork)
        .values([
            {"instance_pk": pk, "state": WorkState.PENDING.value, "attempts": 0, "updated_at": now}
            for pk in instance_pks
        ])
        .on_conflict_do_nothing(index_elements=["instance_pk"])
        .returning(ArchiveWork.instance_pk)
    ).all()
    return len(result)


def _finish(
    session: Session,
    instance_pk: int,
    state: WorkState,
    *,
    error: str | None = None,
    codec: tuple[str, int] | None = None,
    sizes: tuple[int, int] | None = None,
) -> None:
    values: dict[str, object] = {"state": state.value, "lease_until": None, "updated_at": _now()}
    if error is not None:
        values["last_error"] = error[:_ERROR_LENGTH]
    if codec is not None:
        values["codec_id"], values["codec_version"] = codec
    if sizes is not None:
        values["size_before"], values["size_after"] = sizes
    # Only the claim's holder settles it: a worker whose lease lapsed while it was still encoding
    # must not overwrite what the worker that took over recorded.
    session.execute(
        sa.update(ArchiveWork)
        .where(ArchiveWork.instance_pk == instance_pk, ArchiveWork.state == WorkState.RUNNING.value)
        .values(**values)
    )
