"""Readiness: whether the database and the blob store are usable, checked on demand and periodically.

The periodic check feeds `pacsgw_dependency_up`, so an unreachable dependency shows (and alerts)
even while no modality sends anything and nobody asks /readyz.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], None]  # raises when the dependency is not usable
CheckObserver = Callable[[str, bool, float], None]  # dependency, up, seconds


class Readiness:
    def __init__(self, checks: Mapping[str, ReadinessCheck], observe: CheckObserver) -> None:
        self._checks = dict(checks)
        self._observe = observe
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def check(self) -> dict[str, str]:
        """Run every check now; the failures by dependency name (empty when ready)."""
        failures: dict[str, str] = {}
        for name, check in self._checks.items():
            started = time.perf_counter()
            try:
                check()
            except Exception as exc:
                failures[name] = str(exc)[:200]
            self._observe(name, name not in failures, time.perf_counter() - started)
        self._log_changes(failures)
        return failures

    def _log_changes(self, failures: dict[str, str]) -> None:
        with self._lock:
            went_down = set(failures) - self._down
            came_back = self._down - set(failures)
            self._down = set(failures)
        for name in sorted(went_down):
            log.error("dependency unavailable", extra={"fields": {"dependency": name, "error": failures[name]}})
        for name in sorted(came_back):
            log.info("dependency available again", extra={"fields": {"dependency": name}})

    def start(self, interval_seconds: float) -> None:
        self.check()
        self._thread = threading.Thread(target=self._loop, args=(interval_seconds,), name="readiness",
                                        daemon=True)
        self._thread.start()

    def _loop(self, interval_seconds: float) -> None:
        while not self._stopping.wait(interval_seconds):
            try:
                self.check()
            except Exception:
                log.exception("readiness check failed unexpectedly")

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
