"""The C-GET and C-MOVE handlers: resolve, prepare ahead, and hand each dataset to pynetdicom.

pynetdicom runs the C-STORE sub-operations and counts them from what the handler yields: it
sends the pending responses (remaining, completed, failed, warning) and the final status, 0xB000
with the Failed SOP Instance UID List when some failed, 0xA702 when all did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from gateway.config import DestinationSettings
from gateway.dimse.handlers import AssociationTracker, refused, status_dataset
from gateway.dimse.preencoded import PreEncoded
from gateway.errors import MoveDestinationUnknown, Outcome, Service, status_category
from gateway.metrics import Metrics
from gateway.services.identifiers import InformationModel
from gateway.services.retrieve import (
    GET_MODELS,
    MOVE_MODELS,
    Prepared,
    RetrieveService,
    failed_placeholder,
    sop_classes,
)
from storage.records import StoredInstance

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
PENDING = 0xFF00
CANCEL = 0xFE00

# An association proposes at most 128 presentation contexts (PS3.8 9.3.2.2: odd ids 1-255).
MAX_CONTEXTS = 128

Response = tuple[int | Dataset, Dataset | None]


def _accepted_by_class(contexts: Iterable[PresentationContext]) -> dict[str, set[str]]:
    """Transfer syntaxes we may send each SOP class in, as the SCU of its storage context."""
    accepted: dict[str, set[str]] = {}
    for context in contexts:
        if context.as_scu and context.abstract_syntax:
            accepted.setdefault(str(context.abstract_syntax), set()).add(str(context.transfer_syntax[0]))
    return accepted


@dataclass
class _Run:
    """One request's sending: the prepared instances, what happened to them, and the metrics."""

    service: Service
    metrics: Metrics
    outcome: Outcome = field(default_factory=lambda: Outcome(0x0000))
    sent: int = 0
    failed: int = 0

    def send(self, event: Event, prepared: Iterator[Prepared]) -> Iterator[Response]:
        for item in prepared:
            if event.is_cancelled:
                self.outcome = Outcome(CANCEL)
                yield CANCEL, None
                return
            fields = {"sop_instance_uid": item.stored.sop_instance_uid, "transfer_syntax": item.syntax,
                      "mode": item.mode.value if item.mode else None,
                      "received_syntax": item.stored.transfer_syntax_uid}
            if item.data is None or item.syntax is None:
                self.failed += 1
                self._count(item, "failed")
                log.warning("retrieve sub-operation failed", extra={"fields": {
                    "reason": "unreadable", "detail": item.error}})
                log.debug("retrieve instance failed", extra={"fields": {**fields, "detail": item.error}})
                yield PENDING, failed_placeholder(item)
                continue
            self.sent += 1
            self._count(item, "sent")
            log.debug("retrieve instance", extra={"fields": fields})
            stored = item.stored
            yield PENDING, PreEncoded(item.data, item.syntax, stored.sop_class_uid, stored.sop_instance_uid)

    def _count(self, item: Prepared, status: str) -> None:
        self.metrics.retrieve_suboperations.labels(
            self.service.value, item.syntax or "none", item.mode.value if item.mode else "none", status
        ).inc()


class _Handler:
    service: Service

    def __init__(self, retrieve: RetrieveService, tracker: AssociationTracker, metrics: Metrics) -> None:
        self._retrieve, self._tracker, self._metrics = retrieve, tracker, metrics

    def _refused(self, exc: Exception) -> Outcome:
        return refused(exc, self.service)

    def _finish(self, observed: Any, outcome: Outcome, run: _Run | None, matches: int) -> None:
        log.info(f"{self.service.value} done", extra={"fields": {
            "matches": matches, "sent": run.sent if run else 0, "failed": run.failed if run else 0,
            "status": f"0x{outcome.status:04X}"}})
        observed.status, observed.category = outcome.status, status_category(outcome.status)
        if observed.category == "failure":
            self._metrics.dimse_failures.labels(self.service.value, outcome.reason).inc()

    def _resolve(self, event: Event, models: Mapping[str, InformationModel]) -> list[StoredInstance]:
        request = cast(C_GET | C_MOVE, event.request)
        model = models[str(request.AffectedSOPClassUID)]
        return self._retrieve.resolve(event.identifier, model)


class GetHandler(_Handler):
    service = Service.C_GET

    def __call__(self, event: Event) -> Iterator[int | Response]:
        self._tracker.bind(event)
        with self._metrics.dimse(self.service.value) as observed:
            try:
                instances = self._resolve(event, GET_MODELS)
            except Exception as exc:
                outcome = self._refused(exc)
                self._finish(observed, outcome, None, 0)
                # A final status needs one announced sub-operation: with 0, pynetdicom answers success.
                yield 1
                yield status_dataset(outcome), None
                return
            run = _Run(self.service, self._metrics)
            yield len(instances)
            accepted = _accepted_by_class(event.assoc.accepted_contexts)
            prepared = self._retrieve.prepared(instances, lambda sop_class: accepted.get(sop_class, ()))
            try:
                yield from run.send(event, prepared)
            finally:
                prepared.close()
            self._finish(observed, run.outcome, run, len(instances))


class MoveHandler(_Handler):
    service = Service.C_MOVE

    def __init__(self, retrieve: RetrieveService, tracker: AssociationTracker, metrics: Metrics,
                 destinations: Iterable[DestinationSettings]) -> None:
        super().__init__(retrieve, tracker, metrics)
        self._destinations = {d.ae_title: d for d in destinations}

    def __call__(self, event: Event) -> Iterator[Any]:
        self._tracker.bind(event)
        request = cast(C_MOVE, event.request)
        with self._metrics.dimse(self.service.value) as observed:
            title = str(request.MoveDestination or "").strip()
            destination = self._destinations.get(title)
            if destination is None:
                self._finish(observed, self._refused(MoveDestinationUnknown(
                    f"unknown move destination {title[:16]!r}")), None, 0)
                yield None, None  # pynetdicom answers 0xA801
                return
            try:
                instances = self._resolve(event, MOVE_MODELS)
            except Exception as exc:
                outcome = self._refused(exc)
                self._finish(observed, outcome, None, 0)
                # pynetdicom takes a final status only after one announced sub-operation and
                # the store association; Verification is enough for that association.
                yield destination.host, destination.port, {"contexts": [build_context(VERIFICATION)]}
                yield 1
                yield status_dataset(outcome), None
                return
            store = _StoreAssociation()
            yield destination.host, destination.port, {
                "contexts": self._contexts(instances, destination),
                # TCP_NODELAY on this socket too, or each sub-operation waits for a delayed ACK.
                "evt_handlers": [(evt.EVT_CONN_OPEN, self._tracker.on_conn_open),
                                 (evt.EVT_ACCEPTED, store.on_accepted)],
            }
            yield len(instances)
            # pynetdicom has associated with the destination by now (or answered 0xA801).
            accepted = _accepted_by_class(store.contexts())
            run = _Run(self.service, self._metrics)
            prepared = self._retrieve.prepared(instances, lambda sop_class: accepted.get(sop_class, ()))
            try:
                yield from run.send(event, prepared)
            finally:
                prepared.close()
            self._finish(observed, run.outcome, run, len(instances))

    def _contexts(self, instances: list[StoredInstance], destination: DestinationSettings) -> list[PresentationContext]:
        """One context per SOP class and transfer syntax, so that the destination accepts each
        syntax it can take rather than choosing one for us; fewer when that is over 128."""
        allowed = set(destination.transfer_syntaxes)
        wanted: dict[str, dict[str, None]] = {sop_class: {} for sop_class in sop_classes(instances)}
        for stored in instances:
            for syntax in self._retrieve.wanted_syntaxes(stored):
                if not allowed or syntax in allowed:
                    wanted[stored.sop_class_uid][syntax] = None
        pairs = [(sop_class, syntax) for sop_class, found in wanted.items() for syntax in found]
        if len(pairs) <= MAX_CONTEXTS:
            return [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
        log.warning("too many presentation contexts for one association: proposing one per SOP class")
        return [build_context(sop_class, list(found)) for sop_class, found in wanted.items() if found][:MAX_CONTEXTS]


class _StoreAssociation:
    """Catches the store association pynetdicom opens for a C-MOVE, to read what it accepted."""

    def __init__(self) -> None:
        self._assoc: Association | None = None

    def on_accepted(self, event: Event) -> None:
        self._assoc = event.assoc

    def contexts(self) -> list[PresentationContext]:
        return list(self._assoc.accepted_contexts) if self._assoc is not None else []

