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
