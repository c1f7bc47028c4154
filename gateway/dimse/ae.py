"""The Application Entity: presentation contexts, limits and the handlers bound to events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from gateway import syntaxes
from gateway.config import DicomSettings

Handler = tuple[Any, Callable[..., Any]]

VERIFICATION = "1.2.840.10008.1.1"


def build_ae(settings: DicomSettings) -> AE:
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
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, accepted)
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
) -> Sequence[Handler]:
    return [
        (evt.EVT_CONN_OPEN, on_conn_open),
        (evt.EVT_ACCEPTED, on_accepted),
        (evt.EVT_REJECTED, on_rejected),
        (evt.EVT_RELEASED, on_released),
        (evt.EVT_ABORTED, on_aborted),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store),
    ]
