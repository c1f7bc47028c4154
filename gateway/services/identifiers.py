"""A C-FIND identifier, checked against its information model and split into what answers each key.

Every requested key is one of: matched and returned from the index (INDEXED_KEYS), computed by
the index (counts, modalities, SOP classes), answered by the gateway itself (Retrieve AE Title,
Instance Availability), or read from a stored header (everything else, sequences included; a
non-empty value then filters the matches on that header).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from gateway.errors import CannotUnderstand, InvalidIdentifier
from storage.matching import (
    InvalidMatchingValue,
    Matcher,
    Range,
    Universal,
    combine_date_time,
    parse,
)
from storage.query import COMPUTED_KEYS, INDEXED_KEYS, MATCHABLE_COMPUTED, Level, LevelQuery


class InformationModel(enum.StrEnum):
    PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"  # Patient Root Query/Retrieve - FIND
    STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve - FIND

    @property
    def top(self) -> Level:
        return Level.PATIENT if self is InformationModel.PATIENT_ROOT else Level.STUDY


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What SOP Class Extended Negotiation agreed for the FIND SOP class (PS3.4 C.5.1)."""

    relational: bool = False
    combined_datetime: bool = False

    @classmethod
    def from_app_info(cls, app_info: bytes | None) -> Negotiated:
        info = app_info or b""
        return cls(relational=info[:1] == b"\x01", combined_datetime=info[1:2] == b"\x01")


UNIQUE_KEYS: Mapping[Level, str] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

# Answered by the gateway rather than the index or a header.
GATEWAY_KEYS = frozenset({"RetrieveAETitle", "InstanceAvailability"})

# Part of the request's framing, not keys to match or return as such.
_FRAMING = frozenset({0x00080005, 0x00080052})


class KeySource(enum.Enum):
    INDEX = "index"
    COMPUTED = "computed"
    GATEWAY = "gateway"
    HEADER = "header"
    NONE = "none"  # a key of a level below the query level: returned empty


@dataclass(frozen=True, slots=True)
class RequestedKey:
    tag: int
    keyword: str
    vr: str
    source: KeySource
    item_keys: tuple[int, ...] = ()  # for a sequence: the keys asked for in its item


@dataclass(frozen=True, slots=True)
class FindRequest:
    model: InformationModel
    level: Level
    keys: tuple[RequestedKey, ...]
    index_query: LevelQuery
    # Keys matched on the stored header: tag -> matcher (sequences: item tag -> matcher).
    header_filters: Mapping[int, Matcher]
    sequence_filters: Mapping[int, Mapping[int, Matcher]]
    specific_character_set: tuple[str, ...]

    @property
    def needs_header(self) -> bool:
        return self.index_query.with_header


def _text(element: DataElement) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        raise InvalidIdentifier(f"{element.keyword or element.tag} has a binary value")
    return str(value)


def _parse(element: DataElement, vr: str) -> Matcher:
    try:
        return parse(_text(element), vr)
    except InvalidMatchingValue as exc:
        raise InvalidIdentifier(f"{element.keyword}: {exc}") from exc


def _level(identifier: Dataset, model: InformationModel) -> Level:
    raw = identifier.get("QueryRetrieveLevel")
    if raw is None or not str(raw).strip():
        raise InvalidIdentifier("Query/Retrieve Level (0008,0052) missing")
    try:
        level = Level(str(raw).strip().upper())
    except ValueError:
        raise InvalidIdentifier(f"unknown Query/Retrieve Level {str(raw)[:16]!r}") from None
    if level.depth < model.top.depth:
        raise InvalidIdentifier(f"no {level.value} level in the Study Root model")
    return level


def _charset(identifier: Dataset) -> tuple[str, ...]:
    value = identifier.get("SpecificCharacterSet")
    if value is None:
        return ()
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    return tuple(str(v) for v in values)


def parse_identifier(identifier: Dataset, model: InformationModel, negotiated: Negotiated) -> FindRequest:
    """Check and split an identifier; InvalidIdentifier (0xA900) for anything the rules refuse."""
    try:
        return _parse_identifier(identifier, model, negotiated)
    except (InvalidIdentifier, CannotUnderstand):
        raise
    except (ValueError, TypeError, KeyError, LookupError) as exc:
        # pydicom decodes elements lazily: a garbled value surfaces here.
        raise CannotUnderstand(f"identifier cannot be decoded: {type(exc).__name__}") from exc


def _parse_identifier(identifier: Dataset, model: InformationModel, negotiated: Negotiated) -> FindRequest:
    level = _level(identifier, model)
    keys: list[RequestedKey] = []
    conditions: dict[str, Matcher] = {}
    computed: set[str] = set()
    header_filters: dict[int, Matcher] = {}
    sequence_filters: dict[int, dict[int, Matcher]] = {}
    for element in identifier:
        tag = int(element.tag)
        if tag in _FRAMING or element.tag.is_private or element.tag.element == 0:
            continue
        keyword = element.keyword or ""
        indexed = INDEXED_KEYS.get(keyword)
        if indexed is not None:
            if indexed.level.depth > level.depth:
                keys.append(RequestedKey(tag, keyword, element.VR, KeySource.NONE))
                continue
            conditions[keyword] = _parse(element, indexed.vr)
            keys.append(RequestedKey(tag, keyword, element.VR, KeySource.INDEX))
        elif keyword in COMPUTED_KEYS:
            if COMPUTED_KEYS[keyword] is not level:
                keys.append(RequestedKey(tag, keyword, element.VR, KeySource.NONE))
                continue
            if keyword in MATCHABLE_COMPUTED:
                conditions[keyword] = _parse(element, MATCHABLE_COMPUTED[keyword])
            computed.add(keyword)
            keys.append(RequestedKey(tag, keyword, element.VR, KeySource.COMPUTED))
        elif keyword in GATEWAY_KEYS:
            keys.append(RequestedKey(tag, keyword, element.VR, KeySource.GATEWAY))
        elif element.VR == "SQ":
            item_keys, filters = _sequence_key(element)
            if filters:
                sequence_filters[tag] = filters
            keys.append(RequestedKey(tag, keyword, "SQ", KeySource.HEADER, item_keys))
        else:
            matcher = _parse(element, element.VR)
            if not isinstance(matcher, Universal):
                header_filters[tag] = matcher
            keys.append(RequestedKey(tag, keyword, element.VR, KeySource.HEADER))
    if not negotiated.relational:
        _check_hierarchy(model, level, conditions)
    study_datetime: Range | None = None
    if negotiated.combined_datetime and "StudyDate" in conditions and "StudyTime" in conditions:
        study_datetime = combine_date_time(conditions["StudyDate"], conditions["StudyTime"])
    needs_header = bool(header_filters or sequence_filters) or any(
        key.source is KeySource.HEADER for key in keys
    )
    return FindRequest(
        model=model,
        level=level,
        keys=tuple(keys),
        index_query=LevelQuery(level, conditions, study_datetime, frozenset(computed), needs_header),
        header_filters=header_filters,
        sequence_filters=sequence_filters,
        specific_character_set=_charset(identifier),
    )


def _sequence_key(element: DataElement) -> tuple[tuple[int, ...], dict[int, Matcher]]:
    """The item keys asked for, and those with a value to match (the common one-item case)."""
    items = element.value if isinstance(element.value, Sequence) else []
    if len(items) > 1:
        raise InvalidIdentifier(f"{element.keyword}: a sequence key has at most one item")
    if not items:
        return (), {}
    filters: dict[int, Matcher] = {}
    item_keys: list[int] = []
    for inner in items[0]:
        if inner.VR == "SQ":
            raise InvalidIdentifier(f"{element.keyword}: nested sequence keys are not supported")
        item_keys.append(int(inner.tag))
        matcher = _parse(inner, inner.VR)
        if not isinstance(matcher, Universal):
            filters[int(inner.tag)] = matcher
    return tuple(item_keys), filters


def _check_hierarchy(model: InformationModel, level: Level, conditions: Mapping[str, Matcher]) -> None:
    """Baseline (hierarchical) query: each level above the query level is pinned by its unique key."""
    for above in Level:
        if above.depth < model.top.depth or above.depth >= level.depth:
            continue
        keyword = UNIQUE_KEYS[above]
        matcher = conditions.get(keyword)
        if matcher is None or isinstance(matcher, Universal):
            raise InvalidIdentifier(
                f"{keyword} required for a {level.value} level query without relational queries"
            )
