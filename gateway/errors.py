"""Domain errors and the DICOM status each one maps to, in one place.

Raise these deep down; the DIMSE edge turns them into a status and an Error Comment.
Status codes are PS3.4 Annex B (C-STORE) and PS3.7 Annex C; 0xC0xx codes below 0xC100 are our own
refinements of "Cannot understand" and are documented in README.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar


class Service(enum.StrEnum):
    C_ECHO = "c_echo"
    C_STORE = "c_store"
    C_FIND = "c_find"
    C_GET = "c_get"
    C_MOVE = "c_move"


class GatewayError(Exception):
    default_status: ClassVar[int] = 0xC000
    reason: ClassVar[str] = "cannot_understand"  # bounded metric label / log field


class OutOfResources(GatewayError):
    """Database, blob store or disk unavailable, or no codec worker free in time."""

    default_status = 0xA700
    reason = "out_of_resources"


class MatchesUnavailable(OutOfResources):
    """The index cannot say which instances a C-GET/C-MOVE identifier selects (database down)."""


class MoveDestinationUnknown(GatewayError):
    """The Move Destination AE title is not a configured destination."""

    default_status = 0xA801
    reason = "move_destination_unknown"


class DatasetDoesNotMatchSOPClass(GatewayError):
    """The dataset contradicts its command: other SOP Class / Instance UID."""

    default_status = 0xA900
    reason = "dataset_mismatch"


class InvalidIdentifier(GatewayError):
    """A C-FIND/GET/MOVE identifier breaks the query rules: no or unknown level, a missing unique
    key in a hierarchical query, a wildcard in a UID, a malformed range."""

    default_status = 0xA900
    reason = "invalid_identifier"


class CannotUnderstand(GatewayError):
    """The dataset cannot be parsed at all (garbage, truncated encoding)."""

    default_status = 0xC000
    reason = "cannot_understand"


class PixelDataInconsistent(GatewayError):
    """Pixel Data is shorter than the image description (rows, columns, frames, bits) requires."""

    default_status = 0xC001
    reason = "pixel_data_inconsistent"


class DuplicateRejected(GatewayError):
    """Different bytes for a stored SOP Instance UID while duplicates are configured as `reject`."""

    default_status = 0x0111
    reason = "duplicate_rejected"


_OVERRIDES: dict[tuple[type[GatewayError], Service], int] = {
    (OutOfResources, Service.C_GET): 0xA702,
    (OutOfResources, Service.C_MOVE): 0xA702,
    # PS3.4 C.4.2.1.5 and C.4.3.1.3.1: out of resources, unable to calculate number of matches.
    (MatchesUnavailable, Service.C_GET): 0xA701,
    (MatchesUnavailable, Service.C_MOVE): 0xA701,
}

ERROR_COMMENT_MAX = 64  # (0000,0902) is LO


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a DIMSE request ends with: a status, and an Error Comment on failure."""

    status: int
    comment: str = ""
    reason: str = "ok"

    @property
    def category(self) -> str:
        return status_category(self.status)


def to_outcome(error: GatewayError, service: Service) -> Outcome:
    status = _OVERRIDES.get((type(error), service), error.default_status)
    return Outcome(status, error_comment(str(error)), error.reason)


def error_comment(text: str) -> str:
    """An Error Comment value: printable ASCII, at most 64 characters (LO)."""
    clean = "".join(ch if " " <= ch <= "~" and ch != "\\" else " " for ch in text).strip()
    return clean[:ERROR_COMMENT_MAX]


def status_category(status: int) -> str:
    if status == 0x0000:
        return "success"
    if status == 0xFE00:
        return "cancel"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    if status in (0xFF00, 0xFF01):
        return "pending"
    return "failure"
