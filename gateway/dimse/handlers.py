"""Thin pynetdicom event handlers: unpack the event, call one service, map the outcome to a status."""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
import weakref
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from gateway.errors import GatewayError, Outcome, Service, error_comment, status_category, to_outcome
from gateway.logs import bind_association
from gateway.metrics import Metrics, modality_label
from gateway.services.ingest import IngestService, StoreRequest

log = logging.getLogger(__name__)


def status_dataset(outcome: Outcome) -> Dataset:
    status = Dataset()
    status.Status = outcome.status
    if outcome.comment and outcome.category == "failure":
        status.ErrorComment = outcome.comment
    return status


def refused(exc: Exception, service: Service, **fields: Any) -> Outcome:
    """The outcome of a request that raised `exc`, logged: a GatewayError is a refusal with its
    status, anything else an internal error (0xC000), so no exception reaches pynetdicom."""
    if isinstance(exc, GatewayError):
        outcome = to_outcome(exc, service)
        log.warning(f"{service.value} refused", extra={"fields": {
            "status": f"0x{outcome.status:04X}", "reason": outcome.reason, "detail": str(exc), **fields}})
        return outcome
    log.exception(f"{service.value} failed unexpectedly")
    return Outcome(0xC000, error_comment(f"internal error: {type(exc).__name__}"), "internal")


class AssociationTracker:
    """Per-association ids for the logs, TCP_NODELAY, and the association metrics."""

    def __init__(self, metrics: Metrics, allowed_calling_aets: frozenset[str]) -> None:
        self._metrics = metrics
        self._allowed = allowed_calling_aets
        self._ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        # Established associations and when they were accepted.
        self._established: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def association_id(self, assoc: Any) -> str:
        with self._lock:
            if assoc not in self._ids:
                self._ids[assoc] = f"a{next(self._counter):06d}"
            return self._ids[assoc]

    def bind(self, event: Event) -> None:
        assoc = event.assoc
        bind_association(self.association_id(assoc), _calling_aet(event))

    def on_conn_open(self, event: Event) -> None:
        # Peers that leave Nagle on (DCMTK, Orthanc) otherwise wait ~40 ms on every response.
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def on_accepted(self, event: Event) -> None:
        self.bind(event)
        with self._lock:
            self._established[event.assoc] = time.monotonic()
        self._metrics.associations.labels("accepted").inc()
        self._metrics.associations_active.inc()
        log.info("association accepted", extra={"fields": _peer(event)})

    def on_rejected(self, event: Event) -> None:
        self.bind(event)
        calling = _calling_aet(event)
        reason = "calling_ae_not_allowed" if self._allowed and calling not in self._allowed else "other"
        self._metrics.associations.labels("rejected").inc()
        self._metrics.associations_rejected.labels(reason).inc()
        log.warning("association rejected", extra={"fields": {"reason": reason, **_peer(event)}})

    def on_released(self, event: Event) -> None:
        self._end(event, "released")

    def on_aborted(self, event: Event) -> None:
        self._end(event, "aborted")

    def _end(self, event: Event, result: str) -> None:
        with self._lock:
            accepted_at = self._established.pop(event.assoc, None)
        if accepted_at is None:
            return  # never accepted: counted as rejected already, or dropped in negotiation
        self.bind(event)
        self._metrics.associations.labels(result).inc()
        self._metrics.associations_active.dec()
        log.info(f"association {result}", extra={"fields": {
            "result": result, "duration_seconds": round(time.monotonic() - accepted_at, 3)}})


def _calling_aet(event: Event) -> str:
    return str(event.assoc.requestor.ae_title or "").strip()


def _peer(event: Event) -> dict[str, Any]:
    requestor = event.assoc.requestor
    return {"peer_ae": _calling_aet(event), "peer": f"{requestor.address}:{requestor.port}"}


class EchoHandler:
    def __init__(self, tracker: AssociationTracker, metrics: Metrics) -> None:
        self._tracker, self._metrics = tracker, metrics

    def __call__(self, event: Event) -> int:
        self._tracker.bind(event)
        with self._metrics.dimse(Service.C_ECHO.value):
            return 0x0000


class StoreHandler:
    def __init__(self, ingest: IngestService, tracker: AssociationTracker, metrics: Metrics) -> None:
        self._ingest, self._tracker, self._metrics = ingest, tracker, metrics

    def __call__(self, event: Event) -> Dataset:
        self._tracker.bind(event)
        request = cast(C_STORE, event.request)
        sop_uid = str(request.AffectedSOPInstanceUID)
        started = time.perf_counter()
        with self._metrics.dimse(Service.C_STORE.value) as observed:
            try:
                result = self._ingest.store(
                    StoreRequest(
                        spool_path=event.dataset_path,
                        sop_class_uid=str(request.AffectedSOPClassUID),
                        sop_instance_uid=sop_uid,
                        calling_ae_title=_calling_aet(event),
                    )
                )
                outcome = Outcome(0x0000)
                prepared = result.prepared
                log.info(
                    "instance stored",
                    extra={"fields": {
                        "status": "0x0000",
                        "duration_seconds": round(time.perf_counter() - started, 4),
                        "result": result.outcome.result.value,
                        "modality": modality_label(prepared.attrs.series.modality),
                        "transfer_syntax": prepared.transfer_syntax_uid,
                        "pixel_mode": prepared.pixel_mode.value,
                        "codec": prepared.codec_id,
                        "received_bytes": prepared.original_size,
                        "stored_bytes": prepared.blob_size,
                        "fallback": prepared.fallback.value if prepared.fallback else None,
                    }},
                )
            except Exception as exc:  # the last net too: never crash the association thread
                outcome = refused(exc, Service.C_STORE, duration_seconds=round(time.perf_counter() - started, 4))
            log.debug("c-store instance", extra={"fields": {"sop_instance_uid": sop_uid,
                                                            "status": f"0x{outcome.status:04X}"}})
            observed.status, observed.category = outcome.status, status_category(outcome.status)
            if observed.category == "failure":
                self._metrics.dimse_failures.labels(Service.C_STORE.value, outcome.reason).inc()
        return status_dataset(outcome)
