"""Structured logs: one JSON line per event, with the association id and calling AE bound.

Patient names and IDs are never logged; UIDs only at DEBUG.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from typing import Any

_association: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "pacsgw_association", default=None
)


def bind_association(association_id: str, calling_ae: str) -> None:
    """Bind the association to this thread's log lines (pynetdicom runs one thread per association)."""
    _association.set((association_id, calling_ae))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        bound = _association.get()
        if bound is not None:
            line["assoc"], line["calling_ae"] = bound
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        bound = _association.get()
        prefix = f"[{bound[0]} {bound[1]}] " if bound else ""
        fields = getattr(record, "fields", None)
        extra = " " + " ".join(f"{k}={v}" for k, v in fields.items()) if isinstance(fields, dict) else ""
        text = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {prefix}{record.getMessage()}{extra}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class DemoteDatasetWarnings(logging.Filter):
    """pydicom's log records and warnings quote element values (a patient's name among them):
    DEBUG lines only.

    They describe the sender's data, not a fault of the gateway (which reports its own errors
    without the values), and reach us both through pydicom's logger and the warnings module.
    """

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self._debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings" or record.name == "pydicom" or record.name.startswith("pydicom."):
            if not self._debug:
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def configure(level: str, fmt: str) -> None:
    """Route every log record and warning of this process to one JSON (or text) stream on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(DemoteDatasetWarnings(logging.getLevelName(level) <= logging.DEBUG))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    # pynetdicom logs identifiers and UIDs at INFO; keep its chatter to warnings.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))
