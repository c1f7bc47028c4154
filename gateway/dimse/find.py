"""The C-FIND handler and SOP Class Extended Negotiation for the Query/Retrieve FIND SOP classes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event

from gateway.dimse.handlers import AssociationTracker, refused, status_dataset
from gateway.errors import Outcome, Service, status_category
from gateway.metrics import Metrics
from gateway.services.identifiers import InformationModel, Negotiated
from gateway.services.query import QueryService

log = logging.getLogger(__name__)

FIND_SOP_CLASSES = tuple(model.value for model in InformationModel)

PENDING = 0xFF00
CANCEL = 0xFE00

FindResponse = tuple[int | Dataset, Dataset | None]


def accept_extended_negotiation(event: Event) -> dict[str, bytes]:
    """Agree to relational queries and combined date-time matching when the SCU asks for them.

    The FIND handler reads the same request back from the association (what we agree to is a
    function of what was asked), so no per-association state is kept here.
    """
    agreed: dict[str, bytes] = {}
    for sop_class, app_info in cast(dict[str, bytes], getattr(event, "app_info")).items():
        if str(sop_class) in FIND_SOP_CLASSES:
            agreed[str(sop_class)] = bytes(b if b == 1 else 0 for b in (app_info or b"")[:2])
    return agreed


class FindHandler:
    def __init__(self, query: QueryService, tracker: AssociationTracker, metrics: Metrics) -> None:
        self._query, self._tracker, self._metrics = query, tracker, metrics

    def __call__(self, event: Event) -> Iterator[FindResponse]:
        self._tracker.bind(event)
        request = cast(C_FIND, event.request)
        sop_class = str(request.AffectedSOPClassUID)
        with self._metrics.dimse(Service.C_FIND.value) as observed:
            outcome = Outcome(0x0000)
            matched = 0
            try:
                model = InformationModel(sop_class)
                app_info = event.assoc.requestor.sop_class_extended.get(UID(sop_class))
                for response in self._query.find(event.identifier, model, Negotiated.from_app_info(app_info)):
                    if event.is_cancelled:
                        outcome = Outcome(CANCEL)
                        break
                    matched += 1
                    yield PENDING, response
            except Exception as exc:  # the last net too: never crash the association thread
                outcome = refused(exc, Service.C_FIND)
            log.info("c-find done", extra={"fields": {"matches": matched, "status": f"0x{outcome.status:04X}"}})
            observed.status, observed.category = outcome.status, status_category(outcome.status)
            if observed.category == "failure":
                self._metrics.dimse_failures.labels(Service.C_FIND.value, outcome.reason).inc()
        yield status_dataset(outcome), None
