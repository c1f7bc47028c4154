"""The codec pool survives a crashing native codec and applies backpressure."""

from __future__ import annotations

import os
import threading
import time

import pytest

from gateway.errors import OutOfResources
from gateway.services.pool import CodecPool, WorkerLost


def crash(_: int) -> int:
    os.abort()  # what a native codec does when it hits an assertion: the whole process dies


def square(x: int) -> int:
    return x * x


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_crashing_worker_is_replaced() -> None:
    restarts: list[int] = []
    pool = CodecPool(workers=1, queue_limit=2, queue_timeout=10, on_restart=lambda: restarts.append(1))
    try:
        assert pool.run(square, 7) == 49
        with pytest.raises(WorkerLost):
            pool.run(crash, 0)
        assert restarts == [1]
        assert pool.run(square, 8) == 64
    finally:
        pool.shutdown()


def test_a_full_queue_refuses_instead_of_growing() -> None:
    depths: list[int] = []
    pool = CodecPool(workers=1, queue_limit=1, queue_timeout=0.3, on_depth=depths.append)
    try:
        pool.warm()
        busy = threading.Thread(target=pool.run, args=(slow, 1.5))
        busy.start()
        time.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(OutOfResources, match="saturated"):
            pool.run(square, 2)
        assert time.monotonic() - started < 1.0
        busy.join()
        assert max(depths) == 1 and depths[-1] == 0
        assert pool.run(square, 3) == 9
    finally:
        pool.shutdown()


def threads_after_a_fit(size: int) -> int:
    """The worker's own thread count after a least-squares fit, as the kernel sees it."""
    import numpy as np

    samples = np.random.default_rng(1).normal(size=(20_000, size))
    normal = samples.T @ samples
    np.linalg.solve(normal + np.eye(size), samples.T @ samples[:, 0])
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_a_worker_codes_on_one_thread() -> None:
    """Native thread pools are held to one thread: the pool's workers are the parallelism."""
    pool = CodecPool(workers=1, queue_limit=1, queue_timeout=10)
    try:
        assert pool.run(threads_after_a_fit, 32) == 1
    finally:
        pool.shutdown()
