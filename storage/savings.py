"""What compression saved, summed by the database per modality, per modality and codec, or per
modality and compression policy rule."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from storage.db import unavailable_as
from storage.models import Instance, Series
from storage.records import StorageMode

# The value of Instance.compression_fallback when the coded pixels did not decode bit-exactly.
VERIFICATION_FAILED = "verification_failed"


class SavingsKey(enum.StrEnum):
    MODALITY = "modality"
    MODALITY_CODEC = "modality_codec"
    MODALITY_RULE = "modality_rule"


@dataclass(frozen=True, slots=True)
class SavingsGroup:
    """One group's totals, counted the way IndexCounts counts the whole index.

    `instances` counts current revisions; bytes, storage modes and fallbacks count every revision
    kept, since every one of them takes space in the blob store.
    """

    modality: str | None  # None when the series has no Modality
    codec: str | None  # set when grouped by codec too; None there means "not coded"
    storage_mode: StorageMode | None  # set when grouped by codec too
    instances: int
    revisions: int
    original_bytes: int
    stored_bytes: int
    compressed: int
    as_received: int
    no_pixels: int
    verification_failures: int  # coded data that did not rebuild the received bytes (kept as received)
    fallbacks: int  # compression planned but not used, for any reason (verification failures included)
    # Set when grouped by policy rule: the rule and what it did (None: stored before the policy existed).
    rule: str | None = None
    policy_mode: str | None = None


def _count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def savings(engine: Engine, by: SavingsKey) -> list[SavingsGroup]:
    """Per-group totals from one GROUP BY, in the order of the group keys (nulls last)."""
    figures = (
        _count_where(Instance.is_current.is_(True)),
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(Instance.original_size), 0),
        sa.func.coalesce(sa.func.sum(Instance.stored_size), 0),
        _count_where(Instance.storage_mode == StorageMode.COMPRESSED),
        _count_where(Instance.storage_mode == StorageMode.AS_RECEIVED),
        _count_where(Instance.storage_mode == StorageMode.NO_PIXELS),
        _count_where(Instance.compression_fallback == VERIFICATION_FAILED),
        _count_where(Instance.compression_fallback.is_not(None)),
    )
    keys: tuple[Any, ...] = (Series.modality,)
    if by is SavingsKey.MODALITY_CODEC:
        keys = (Series.modality, Instance.codec_id, Instance.storage_mode)
    elif by is SavingsKey.MODALITY_RULE:
        keys = (Series.modality, Instance.policy_rule, Instance.policy_mode)
    statement = (
        sa.select(*keys, *figures)
        .select_from(Instance)
        .join(Series, Instance.series_pk == Series.id)
        .group_by(*keys)
        .order_by(*(part for key in keys for part in (key.is_(None), key)))
    )
    with unavailable_as("savings report"), engine.connect() as connection:
        rows = connection.execute(statement).all()
    groups = []
    for row in rows:
        values: tuple[Any, ...] = tuple(row)
        modality, codec, mode, rule, policy_mode = values[0], None, None, None, None
        if by is SavingsKey.MODALITY_CODEC:
            codec, mode = values[1:3]
        elif by is SavingsKey.MODALITY_RULE:
            rule, policy_mode = values[1:3]
        instances, revisions, original, stored, compressed, as_received, no_pixels, failures, fallbacks = (
            int(value) for value in values[len(keys):]
        )
        groups.append(SavingsGroup(
            modality=modality,
            codec=codec,
            storage_mode=StorageMode(mode) if mode is not None else None,
            instances=instances,
            revisions=revisions,
            original_bytes=original,
            stored_bytes=stored,
            compressed=compressed,
            as_received=as_received,
            no_pixels=no_pixels,
            verification_failures=failures,
            fallbacks=fallbacks,
            rule=rule,
            policy_mode=policy_mode,
        ))
    return groups
