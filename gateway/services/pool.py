"""A bounded pool of codec worker processes.

Native codecs run in child processes: if one crashes (segfault, abort) the pool is rebuilt and the
instance is stored as received, and the service lives on. A semaphore bounds the instances in
flight, so a burst of associations waits for a slot (backpressure) instead of queueing without limit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from gateway.errors import OutOfResources

log = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")


_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class WorkerLost(Exception):
    """The worker process running the job died."""


def _warm_up() -> None:
    # Import the codec stack once per worker, so the first C-STORE does not pay for it.
    import gateway.services.prepare  # noqa: F401
    import pixcodec

    pixcodec.default_registry()


def _start_worker(logging_setup: tuple[str, str] | None, niceness: int = 0) -> None:
    # A worker starts from the fork server, not from the configured main process: without this its
    # warnings would reach stderr as plain text, outside the JSON stream and its PHI rules.
    if logging_setup is not None:
        from gateway import logs

        logs.configure(*logging_setup)
    if niceness > 0:
        # A background pool (archive recompression) yields the CPU to ingest and retrieval.
        os.nice(niceness)
    _warm_up()


class CodecPool:
    def __init__(
        self,
        workers: int,
        queue_limit: int,
        queue_timeout: float,
        on_depth: Callable[[int], None] = lambda _depth: None,
        on_restart: Callable[[], None] = lambda: None,
        on_waiting: Callable[[int], None] = lambda _waiting: None,
        on_wait: Callable[[float], None] = lambda _seconds: None,
        on_rejected: Callable[[], None] = lambda: None,
        worker_logging: tuple[str, str] | None = None,
        niceness: int = 0,
    ) -> None:
        """`worker_logging`: (level, format) for logs.configure in each worker process;
        `niceness`: added to the workers' nice value (0 for the ingest pool)."""
        self._workers = workers
        self._slots = threading.BoundedSemaphore(queue_limit)
        self._timeout = queue_timeout
        self._lock = threading.Lock()
        self._depth = 0
        self._waiting = 0
        self._on_depth, self._on_restart = on_depth, on_restart
        self._on_waiting, self._on_wait, self._on_rejected = on_waiting, on_wait, on_rejected
        self._worker_logging = worker_logging
        self._niceness = niceness
        # Each worker is one core's worth of work: the pool is the parallelism. Native thread pools
        # (OpenBLAS under the least-squares fits) would add threads that spin on the other cores.
        # The fork server reads these when it starts and imports numpy, so they are set first.
        for variable in _ONE_THREAD:
            os.environ.setdefault(variable, "1")
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(
            ["gateway.services.prepare", "gateway.services.retrieve_job", "pixcodec"])
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self._worker_logging, self._niceness),
        )

    def _track(self, delta: int) -> None:
        with self._lock:
            self._depth += delta
            depth = self._depth
        self._on_depth(depth)

    def _track_waiting(self, delta: int) -> None:
        with self._lock:
            self._waiting += delta
            waiting = self._waiting
        self._on_waiting(waiting)

    def _acquire(self) -> bool:
        if self._slots.acquire(blocking=False):
            self._on_wait(0.0)
            return True
        # Only a request that really waits counts as waiting: that is what saturation means.
        started = time.perf_counter()
        self._track_waiting(+1)
        try:
            acquired = self._slots.acquire(timeout=self._timeout)
        finally:
            self._track_waiting(-1)
        self._on_wait(time.perf_counter() - started)
        return acquired

    def run(self, fn: Callable[[A], T], arg: A) -> T:
        """Run fn(arg) in a worker; OutOfResources when no slot frees in time, WorkerLost on a crash."""
        if not self._acquire():
            self._on_rejected()
            raise OutOfResources("codec workers saturated")
        self._track(+1)
        try:
            executor = self._executor
            try:
                future: Future[T] = executor.submit(fn, arg)
                return future.result()
            except BrokenProcessPool as exc:
                self._replace(executor)
                raise WorkerLost(str(exc) or "codec worker process died") from exc
        finally:
            self._track(-1)
            self._slots.release()

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken:
                return  # another thread already replaced it
            log.error("codec worker process died; restarting the pool")
            self._executor = self._new_executor()
        self._on_restart()
        broken.shutdown(wait=False, cancel_futures=True)

    def warm(self) -> None:
        """Start every worker now rather than on the first request."""
        futures = [self._executor.submit(_warm_up) for _ in range(self._workers)]
        for future in futures:
            future.result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)

    def terminate(self) -> None:
        """Stop now: kill the workers and their running jobs (whose callers get WorkerLost).

        For background work recorded elsewhere (archive recompression), which a restart redoes;
        shutdown() would wait for a slow encode to finish.
        """
        executor = self._executor
        # ProcessPoolExecutor has no public way to stop running jobs before Python 3.14.
        processes = dict(getattr(executor, "_processes", None) or {})
        for process in processes.values():
            if process.is_alive():
                process.kill()
        executor.shutdown(wait=True, cancel_futures=True)
