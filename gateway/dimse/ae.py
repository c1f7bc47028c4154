"""The Application Entity: presentation contexts, limits and the handlers bound to events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from gateway import syntaxes
from gateway.config import DicomSettings
from gateway.dimse import preencoded, reactor

Handler = tuple[Any, Callable[..., Any]]

VERIFICATION = "1.2.840.10008.1.1"

# Patient Root and Study Root Query/Retrieve - FIND.
QUERY_FIND = ("1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1")
# Patient Root and Study Root Query/Retrieve - GET and - MOVE.
QUERY_RETRIEVE = (
    "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.3",
    "1.2.840.10008.5.1.4.1.2.1.2",
    "1.2.840.10008.5.1.4.1.2.2.2",
)


def build_ae(settings: DicomSettings) -> AE:
    # Retrieved instances go out as the bytes the codec workers made (see preencoded).
    preencoded.install()
    # Requests are read and answered as they arrive, not at pynetdicom's next 1 ms poll.
    reactor.install()
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.maximum_pdu_size
    ae.dimse_timeout = settings.dimse_timeout_seconds
    ae.network_timeout = settings.network_timeout_seconds
    ae.acse_timeout = settings.acse_timeout_seconds
    if settings.allowed_calling_aets:
        ae.require_calling_aet = list(settings.allowed_calling_aets)
    accepted = list(syntaxes.ACCEPTED)
    ae.add_supported_context(VERIFICATION, [*syntaxes.NATIVE])
    for sop_class in (*QUERY_FIND, *QUERY_RETRIEVE):
        ae.add_supported_context(sop_class, [*syntaxes.NATIVE])
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            # Both roles, so a C-GET SCU that proposes the SCP role for storage gets it (we send
            # the sub-operations) while modalities that propose no roles store as before.
            ae.add_supported_context(context.abstract_syntax, accepted, scu_role=True, scp_role=True)
    return ae


def event_handlers(
    *,
    on_conn_open: Callable[..., Any],
    on_accepted: Callable[..., Any],
    on_rejected: Callable[..., Any],
    on_released: Callable[..., Any],
    on_aborted: Callable[..., Any],
    on_echo: Callable[..., Any],
    on_store: Callable[..., Any],
    on_find: Callable[..., Any] | None = None,
    on_sop_extended: Callable[..., Any] | None = None,
    on_get: Callable[..., Any] | None = None,
    on_move: Callable[..., Any] | None = None,
) -> Sequence[Handler]:
    optional = [(evt.EVT_C_FIND, on_find), (evt.EVT_SOP_EXTENDED, on_sop_extended),
                (evt.EVT_C_GET, on_get), (evt.EVT_C_MOVE, on_move)]
    return [
        (evt.EVT_CONN_OPEN, on_conn_open),
        (evt.EVT_ACCEPTED, on_accepted),
        (evt.EVT_REJECTED, on_rejected),
        (evt.EVT_RELEASED, on_released),
        (evt.EVT_ABORTED, on_aborted),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store),
        *((event, handler) for event, handler in optional if handler is not None),
    ]
