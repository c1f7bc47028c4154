"""Codec pool saturation as the metrics show it, on a real process pool held busy by a slow job."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import OutOfResources
from gateway.metrics import Metrics
from gateway.services.pool import CodecPool
from tests.unit.test_pool import slow, square


def test_waiting_and_refused_requests_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="0")
    waiting_seen: list[float] = []

    def on_waiting(count: int) -> None:
        metrics.pool_waiting.set(count)
        waiting_seen.append(count)

    pool = CodecPool(workers=1, queue_limit=1, queue_timeout=0.3, on_depth=metrics.queue_depth.set,
                     on_waiting=on_waiting, on_wait=metrics.pool_wait.observe,
                     on_rejected=metrics.pool_rejections.inc)
    try:
        pool.warm()
        busy = threading.Thread(target=pool.run, args=(slow, 1.5))
        busy.start()
        time.sleep(0.3)
        assert registry.get_sample_value("pacsgw_compression_queue_depth") == 1
        with pytest.raises(OutOfResources):
            pool.run(square, 2)
        busy.join()
        assert pool.run(square, 3) == 9
    finally:
        pool.shutdown()

    assert waiting_seen == [1, 0]
    assert registry.get_sample_value("pacsgw_codec_pool_waiting") == 0
    assert registry.get_sample_value("pacsgw_codec_pool_rejections_total") == 1
    # Three requests: the busy one and the last did not wait, the refused one waited its timeout.
    assert registry.get_sample_value("pacsgw_codec_pool_wait_seconds_count") == 3
    assert registry.get_sample_value("pacsgw_codec_pool_wait_seconds_bucket", {"le": "0.1"}) == 2
    assert registry.get_sample_value("pacsgw_codec_pool_wait_seconds_sum") >= 0.3
    assert registry.get_sample_value("pacsgw_compression_queue_depth") == 0
