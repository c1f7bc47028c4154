"""Archive recompression: once a series is quiet, re-encode its instances with the archive codec.

A scheduler thread queues the instances of quiet series (storage.archive_queue) and deletes the
blobs that swaps retired once their grace period is over; worker threads claim one instance at a
time and hand the CPU work to their own codec pool, whose processes run at a lower priority than
the ingest and retrieval workers. A re-encoded blob replaces the old one only when it rebuilds the
received dataset bit for bit and is smaller, in one transaction that loses to any concurrent change.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ArchiveSettings
from gateway.metrics import ArchiveMetrics
from gateway.policy import BUILTIN_RULES, PolicyRule
from gateway.services.archive_job import AUTO, ArchiveJob, ArchiveResult, run_job
from gateway.services.pool import CodecPool, WorkerLost
from storage.archive_queue import ArchiveQueue, ArchiveTask, WorkState
from storage.blobs.base import BlobNotFound, BlobStore, BlobStoreError

log = logging.getLogger(__name__)


class Outcome:
    """Values of the `outcome` label (bounded)."""

    SWAPPED = "swapped"  # the smaller archive blob replaced the ingest blob
    KEPT = "kept"  # the archive blob was not smaller
    SKIPPED = "skipped"  # superseded, or not re-encodable
    RETRY = "retry"  # failed; tried again later
    FAILED = "failed"  # failed for the last time
    INTERRUPTED = "interrupted"  # the gateway stopped: given back untried


@dataclass(frozen=True, slots=True)
class Processed:
    outcome: str
    codec: str  # the archive codec id, "none" when there is no archive blob
    saved_bytes: int = 0


def archive_codecs(rules: Iterable[PolicyRule]) -> dict[str, str]:
    """Each rule's archive codec by rule name, the built-in rules included."""
    return {rule.name: rule.archive_codec for rule in (*rules, *BUILTIN_RULES)}


class ArchiveService:
    def __init__(
        self,
        queue: ArchiveQueue,
        blobs: BlobStore,
        pool: CodecPool,
        settings: ArchiveSettings,
        *,
        rules: Iterable[PolicyRule],
        scratch_dir: Path,
        metrics: ArchiveMetrics,
        single_writer: bool,
    ) -> None:
        """`single_writer`: only this process uses the database (SQLite), so claims left running
        by an earlier run are returned to the queue at start, without waiting for their lease."""
        self._queue, self._blobs, self._pool = queue, blobs, pool
        self._settings = settings
        self._codecs = archive_codecs(rules)
        self._scratch = scratch_dir
        self._metrics = metrics
        self._single_writer = single_writer
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._held: set[int] = set()
        self._held_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._scratch.mkdir(parents=True, exist_ok=True)
        _clear(self._scratch)  # what a killed run left behind
        if self._single_writer:
            returned = self._queue.reset_running()
            if returned:
                log.info("archive claims of an earlier run returned to the queue",
                         extra={"fields": {"instances": returned}})
        self._threads = [threading.Thread(target=self._schedule, name="archive-scheduler", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"archive-{n}", daemon=True)
            for n in range(self._settings.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop promptly: running encodes are killed and their claims given back untried."""
        self._stopping.set()
        self._wake.set()
        self._pool.terminate()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def wake(self) -> None:
        self._wake.set()

    # -- the work, callable directly (CLI, tests, bench) ---------------------------------------

    def poll(self) -> int:
        """Queue the instances of series quiet since `quiet_seconds`, delete retired blobs whose
        grace is over; how many instances were queued."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self._settings.quiet_seconds)
        queued = self._queue.enqueue_quiet(cutoff)
        self.delete_retired()
        return queued

    def process_one(self) -> Processed | None:
        """Claim and process one instance; None when nothing is claimable or work is paused."""
        if self._queue.paused():
            return None
        task = self._queue.claim(self._settings.lease_seconds)
        if task is None:
            return None
        if self._stopping.is_set():
            self._queue.release(task)
            return None
        return self.process(task)

    def drain(self) -> list[Processed]:
        """poll(), then process in this thread until nothing is left (or work is paused)."""
        self.poll()
        done: list[Processed] = []
        while (processed := self.process_one()) is not None:
            done.append(processed)
        return done

    def process(self, task: ArchiveTask) -> Processed:
        started = time.perf_counter()
        with self._held_lock:
            self._held.add(task.instance_pk)
        try:
            processed = self._process(task)
        finally:
            with self._held_lock:
                self._held.discard(task.instance_pk)
        self._metrics.instances.labels(processed.codec, processed.outcome).inc()
        if processed.outcome != Outcome.INTERRUPTED:
            self._metrics.duration.observe(time.perf_counter() - started)
        if processed.saved_bytes:
            self._metrics.saved_bytes.inc(processed.saved_bytes)
        return processed

    def delete_retired(self) -> int:
        """Delete this store's retired blobs whose grace period is over; how many."""
        removed = 0
        while due := self._queue.due_retired(self._blobs.name):
            for _row_id, ref in due:
                try:
                    self._blobs.delete(ref)
                except BlobNotFound:
                    pass  # deleted just before a crash kept its row, or swept
                removed += 1
            self._queue.forget_retired([row_id for row_id, _ref in due])
        return removed

    # -- threads ---------------------------------------------------------------------------

    def _schedule(self) -> None:
        settings = self._settings
        # Leases are renewed well before they lapse; new quiet series are looked for every poll.
        tick = min(settings.poll_seconds, settings.lease_seconds / 3)
        next_poll = 0.0
        while not self._stopping.is_set():
            try:
                with self._held_lock:
                    held = list(self._held)
                self._queue.renew(held, settings.lease_seconds)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + settings.poll_seconds
                    if self.poll():
                        self._wake.set()
            except Exception:
                log.exception("archive scheduling failed")
            self._stopping.wait(tick)

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                processed = self.process_one()
            except Exception:
                log.exception("archive worker failed")
                processed = None
            if processed is None:
                self._wake.wait(self._settings.poll_seconds)
                self._wake.clear()

    # -- one instance ----------------------------------------------------------------------

    def _process(self, task: ArchiveTask) -> Processed:
        codec = self._codecs.get(task.policy_rule or "", AUTO)
        work = Path(tempfile.mkdtemp(prefix="archive-", dir=self._scratch))
        try:
            job = ArchiveJob(
                blob_path=work / "current.blob",
                dataset_path=work / "dataset",
                out_path=work / "archive.blob",
                dataset_sha256=task.dataset_sha256,
                codec=codec,
            )
            try:
                with self._blobs.open(task.blob) as src, job.blob_path.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                result = self._pool.run(run_job, job)
            except (WorkerLost, RuntimeError) as exc:
                # RuntimeError: the pool was shut down before the job could be submitted.
                if self._stopping.is_set():
                    self._queue.release(task)
                    return Processed(Outcome.INTERRUPTED, "none")
                if isinstance(exc, RuntimeError):
                    raise
                return self._failed(task, f"archive worker process died: {exc}")
            except BlobNotFound:
                # The blob changed under us (a new revision, another replica's swap).
                self._queue.skip(task, "blob no longer stored")
                return Processed(Outcome.SKIPPED, "none")
            except (BlobStoreError, OSError) as exc:
                return self._failed(task, f"{type(exc).__name__}: {exc}")
            return self._settle(task, job, result)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _settle(self, task: ArchiveTask, job: ArchiveJob, result: ArchiveResult) -> Processed:
        if result.error is not None:
            return self._failed(task, result.error)
        if result.skip is not None:
            self._queue.skip(task, result.skip)
            return Processed(Outcome.SKIPPED, "none")
        if result.codec_id is None or result.codec_version is None:
            return self._failed(task, "archive job returned no codec")
        if result.size >= task.stored_size:
            self._queue.keep(task, size_after=result.size, codec_id=result.codec_id,
                             codec_version=result.codec_version)
            return Processed(Outcome.KEPT, result.codec_id)
        try:
            ref = self._blobs.put_file(job.out_path)
        except (BlobStoreError, OSError) as exc:
            return self._failed(task, f"cannot store the archive blob: {exc}")
        retire_after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self._settings.retired_grace_seconds)
        # Should the index fail here, the new blob is an orphan that the sweep removes.
        swapped = self._queue.swap(task, ref, codec_id=result.codec_id, codec_version=result.codec_version,
                                   retire_after=retire_after)
        if not swapped:
            self._blobs.delete(ref)
            return Processed(Outcome.SKIPPED, result.codec_id)
        log.debug("archive swap", extra={"fields": {"codec": result.codec_id, "before": task.stored_size,
                                                     "after": ref.size}})
        return Processed(Outcome.SWAPPED, result.codec_id, saved_bytes=task.stored_size - ref.size)

    def _failed(self, task: ArchiveTask, error: str) -> Processed:
        state = self._queue.fail(task, error, max_attempts=self._settings.max_attempts)
        log.warning("archive re-encoding failed", extra={"fields": {"error": error, "attempt": task.attempts,
                                                                     "final": state is WorkState.FAILED}})
        return Processed(Outcome.FAILED if state is WorkState.FAILED else Outcome.RETRY, "none")


def _clear(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
