"""DICOM attribute matching (PS3.4 C.2.2.2) as SQL expressions, and the same rules in Python.

Values arrive as decoded text, one DICOM value string per key (multiple values separated by
backslashes). `parse` turns such a string into a Matcher for the key's VR, refusing what the
standard does not allow (a wildcard in a UID, a malformed range); `to_sql` turns a Matcher into
a WHERE clause for PostgreSQL or SQLite; `matches` evaluates it on a value read from a header.

Case: person names (PN) match case-insensitively, as Orthanc does by default (PS3.4 C.2.2.2.1
leaves PN case to the implementation); every other VR matches case-sensitively, as the standard
requires. PN columns therefore hold a folded copy (`fold_person_name`) next to the original.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
NUMBER_VRS = frozenset({"IS", "SS", "US", "SL", "UL", "SV", "UV"})

_DA = re.compile(r"^(\d{4})[.\-/]?(\d{2})[.\-/]?(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


class InvalidMatchingValue(ValueError):
    """A key's value breaks the matching rules (a wildcard in a UID, a malformed range, ...)."""


@dataclass(frozen=True, slots=True)
class Universal:
    """An empty value (or a lone `*`): every entity matches, with or without a value."""


@dataclass(frozen=True, slots=True)
class Single:
    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    pattern: str  # DICOM pattern: `*` any run, `?` any one character, everything else literal


@dataclass(frozen=True, slots=True)
class AnyOf:
    """List of values (UIDs, or several values of a multi-valued key): one of them matches."""

    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds in the index's normalised form (YYYYMMDD, HHMMSS.ffffff); None is open."""

    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class Number:
    value: int


@dataclass(frozen=True, slots=True)
class PersonName:
    """A folded PN value or pattern; without `=` it may match any one of the component groups."""

    pattern: str


Matcher = Universal | Single | Wildcard | AnyOf | Range | Number | PersonName

Column = ColumnElement[Any] | QueryableAttribute[Any]


def fold_person_name(value: str | None) -> str | None:
    """The form PN columns are searched in: stripped and case-folded (Unicode-aware)."""
    if value is None:
        return None
    folded = value.strip().casefold()
    return folded or None


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def parse(value: str, vr: str) -> Matcher:
    """The matcher for one key's value string; InvalidMatchingValue when the rules forbid it."""
    text = value.strip(" ") if vr != "PN" else value.strip()
    if text in ("", "*"):
        return Universal()
    if vr == "UI":
        uids = tuple(uid.strip() for uid in text.split("\\"))
        if any(_has_wildcard(uid) for uid in uids):
            raise InvalidMatchingValue("wildcards are not allowed in a UID")
        if any(not uid for uid in uids):
            raise InvalidMatchingValue("empty UID in a list of UIDs")
        return Single(uids[0]) if len(uids) == 1 else AnyOf(uids)
    if vr in RANGE_VRS:
        return _parse_range(text, vr)
    if vr in NUMBER_VRS:
        try:
            return Number(int(text))
        except ValueError:
            raise InvalidMatchingValue(f"{text!r} is not an integer") from None
    if vr == "PN":
        return PersonName(fold_person_name(text) or "")
    values = tuple(part.strip(" ") for part in text.split("\\"))
    if len(values) > 1:
        if any(_has_wildcard(part) for part in values):
            raise InvalidMatchingValue("wildcards are not allowed in a list of values")
        return AnyOf(values)
    if _has_wildcard(text) and vr in WILDCARD_VRS:
        return Wildcard(text)
    return Single(text)


def _parse_range(text: str, vr: str) -> Range:
    if text.count("-") > 1 and vr != "DT":
        raise InvalidMatchingValue(f"{text!r} is not a {vr} range")
    if vr == "DT":
        low_text, high_text, is_range = _split_dt_range(text)
    else:
        low_text, sep, high_text = text.partition("-")
        is_range = bool(sep)
    if not is_range:
        return Range(_bound(low_text, vr, ceil=False), _bound(low_text, vr, ceil=True))
    if not low_text and not high_text:
        raise InvalidMatchingValue("a range needs at least one bound")
    low = _bound(low_text, vr, ceil=False) if low_text else None
    high = _bound(high_text, vr, ceil=True) if high_text else None
    if low is not None and high is not None and low > high:
        raise InvalidMatchingValue(f"range {text!r} ends before it starts")
    return Range(low, high)


def _split_dt_range(text: str) -> tuple[str, str, bool]:
    """DT values may carry a -HHMM offset, so the range separator is the `-` after a full value."""
    for index, char in enumerate(text):
        if char == "-" and (index == 0 or _DT.match(text[:index])) and (
            index == len(text) - 1 or _DT.match(text[index + 1 :])
        ):
            return text[:index], text[index + 1 :], True
    return text, "", False


def _bound(text: str, vr: str, *, ceil: bool) -> str:
    """A bound in the normalised form; a reduced-precision value covers all it implies."""
    if vr == "DA":
        match = _DA.match(text)
        if not match:
            raise InvalidMatchingValue(f"{text!r} is not a date (YYYYMMDD)")
        year, month, day = match.groups()
        if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
            raise InvalidMatchingValue(f"{text!r} is not a date")
        return f"{year}{month}{day}"
    if vr == "TM":
        return _time_bound(text, ceil=ceil)
    match = _DT.match(text)
    if not match:
        raise InvalidMatchingValue(f"{text!r} is not a date-time (YYYYMMDDHHMMSS)")
    year, month, day, hours, minutes, seconds, fraction, _offset = match.groups()
    date = year + (month or ("12" if ceil else "01")) + (day or ("31" if ceil else "01"))
    time = _time_bound(
        (hours or "") + (minutes or "") + (seconds or "") + (fraction or ""), ceil=ceil
    ) if hours else ("235959.999999" if ceil else "000000")
    return date + time


def _time_bound(text: str, *, ceil: bool) -> str:
    match = _TM.match(text)
    if not match:
        raise InvalidMatchingValue(f"{text!r} is not a time (HHMMSS)")
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        raise InvalidMatchingValue(f"{text!r} is not a time")
    fill = "59" if ceil else "00"
    value = f"{hours}{minutes or fill}{seconds or fill}"
    if fraction:
        return value + (fraction.ljust(7, "9") if ceil else fraction)
    return value + (".999999" if ceil else "")


# --- SQL -----------------------------------------------------------------------------------------


class _DicomPattern(sa.TypeDecorator[str]):
    """A DICOM wildcard pattern, bound in the syntax of the database's pattern operator."""

    impl = sa.String()
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> str | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return "".join("[[]" if ch == "[" else ch for ch in value)
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return escaped.replace("*", "%").replace("?", "_")


class _PatternMatch(ColumnElement[bool]):
    """`column` matches a DICOM wildcard pattern, case-sensitively on both databases.

    PostgreSQL's LIKE is case-sensitive; SQLite's is not (for ASCII), so SQLite uses GLOB. Each
    gets the pattern in its own syntax with every other character literal, `%` and `_` included.
    """

    inherit_cache = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("pattern", InternalTraversal.dp_clauseelement),
    ]
    type = sa.Boolean()

    def __init__(self, column: Column, pattern: str) -> None:
        self.column = column if isinstance(column, ColumnElement) else column.expression
        self.pattern = sa.bindparam(None, pattern, type_=_DicomPattern())


@compiles(_PatternMatch, "postgresql")
def _compile_like(element: _PatternMatch, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern = compiler.process(element.column, **kw), compiler.process(element.pattern, **kw)
    return f"({column} LIKE {pattern} ESCAPE '\\')"


@compiles(_PatternMatch, "sqlite")
def _compile_glob(element: _PatternMatch, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern = compiler.process(element.column, **kw), compiler.process(element.pattern, **kw)
    return f"({column} GLOB {pattern})"


def pattern_match(column: Column, pattern: str) -> ColumnElement[bool]:
    return _PatternMatch(column, pattern)


def to_sql(column: Column, matcher: Matcher) -> ColumnElement[bool] | None:
    """The WHERE clause for `column`; None for universal matching (no condition at all)."""
    if isinstance(matcher, Universal):
        return None
    if isinstance(matcher, Single):
        return column == matcher.value
    if isinstance(matcher, Number):
        return column == matcher.value
    if isinstance(matcher, AnyOf):
        return column.in_(matcher.values)
    if isinstance(matcher, Wildcard):
        return pattern_match(column, matcher.pattern)
    if isinstance(matcher, Range):
        clauses = []
        if matcher.low is not None:
            clauses.append(column >= matcher.low)
        if matcher.high is not None:
            clauses.append(column <= matcher.high)
        return sa.and_(*clauses)
    return _person_name_sql(column, matcher.pattern)


def _person_name_sql(column: Column, pattern: str) -> ColumnElement[bool]:
    if "=" in pattern:
        return pattern_match(column, pattern)
    # The value is alphabetic[=ideographic[=phonetic]]: a query without `=` may match any group.
    # A `*` inside the pattern may still run across a group boundary (documented in README).
    return sa.or_(
        pattern_match(column, pattern),
        pattern_match(column, pattern + "=*"),
        pattern_match(column, "*=" + pattern),
        pattern_match(column, "*=" + pattern + "=*"),
    )


def datetime_range_sql(
    date_column: Column, time_column: Column, bounds: Range
) -> ColumnElement[bool] | None:
    """Combined date-time matching (PS3.4 C.2.2.2.5): `bounds` are DT bounds (normalised)."""
    time = sa.func.coalesce(time_column, "")
    clauses = []
    if bounds.low is not None:
        date, clock = bounds.low[:8], bounds.low[8:]
        clauses.append(sa.or_(date_column > date, sa.and_(date_column == date, time >= clock)))
    if bounds.high is not None:
        date, clock = bounds.high[:8], bounds.high[8:]
        clauses.append(sa.or_(date_column < date, sa.and_(date_column == date, time <= clock)))
    return sa.and_(*clauses) if clauses else None


def combine_date_time(date: Matcher, time: Matcher) -> Range | None:
    """The DT range a Study Date + Study Time pair stands for; None when not both given."""
    if not isinstance(date, Range) or not isinstance(time, Range):
        return None
    low = None if date.low is None else date.low + (time.low or "000000")
    high = None if date.high is None else date.high + (time.high or "235959.999999")
    return Range(low, high)


# --- Python (values read from a stored header) ---------------------------------------------------


def _regex(pattern: str, *, flags: int = 0) -> re.Pattern[str]:
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), flags | re.DOTALL)


def matches(matcher: Matcher, values: Sequence[str]) -> bool:
    """Whether a header value (its values, as text) matches; ranges compare normalised text."""
    if isinstance(matcher, Universal):
        return True
    present = [value.strip(" ") for value in values if value.strip(" ")]
    if isinstance(matcher, Single):
        return matcher.value in present
    if isinstance(matcher, AnyOf):
        return any(value in matcher.values for value in present)
    if isinstance(matcher, Number):
        return any(value.strip().lstrip("+").isdigit() and int(value) == matcher.value
                   for value in present)
    if isinstance(matcher, Wildcard):
        regex = _regex(matcher.pattern)
        return any(regex.fullmatch(value) for value in present)
    if isinstance(matcher, PersonName):
        regex = _regex(matcher.pattern)
        for value in present:
            folded = fold_person_name(value) or ""
            groups = [folded] if "=" in matcher.pattern else [folded, *folded.split("=")]
            if any(regex.fullmatch(group) for group in groups):
                return True
        return False
    return any(
        (matcher.low is None or value >= matcher.low) and (matcher.high is None or value <= matcher.high)
        for value in present
    )
