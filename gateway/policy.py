"""The per-modality compression policy: configured rules, matched in order on header facts.

`decide` is a pure function of the header facts, the calling AE title and the rules, so the same
decision comes out in a codec worker at ingest and in `pacs-gateway policy explain`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydicom.dataset import Dataset

from gateway import syntaxes

Mode = Literal["lossless", "roi-hybrid", "keep"]
ImageKind = Literal["ORIGINAL", "DERIVED"]
Pattern = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
# A rectangle in pixel coordinates: first row, first column, rows, columns.
Rectangle = tuple[
    Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)], Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]
]

_BUDGETS = ("ingest", "archive")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoiParams(_Model):
    """ROI-hybrid: exact inside the region of interest, at most `max_error` off outside it."""

    max_error: Annotated[int, Field(ge=1, le=16)] = 2
    # An instance is only made lossy (new UID, DERIVED) when that saves at least this share of
    # its lossless JPEG-LS size; below it, the exact instance is worth more than the bytes.
    min_saving: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    roi_source: Literal["auto", "rectangles"] = "auto"
    rectangles: tuple[Rectangle, ...] = ()

    @model_validator(mode="after")
    def _rectangles_when_named(self) -> RoiParams:
        if self.roi_source == "rectangles" and not self.rectangles:
            raise ValueError('roi_source = "rectangles" needs at least one rectangle')
        if self.roi_source == "auto" and self.rectangles:
            raise ValueError('rectangles are only used with roi_source = "rectangles"')
        return self


class PolicyRule(_Model):
    """One rule. Every match field is optional; a rule with none matches every instance.

    Text fields hold glob patterns (`*`, `?`, `[...]`), compared without regard to case; a list
    matches when any of its patterns does. An instance without the attribute matches no pattern.
    """

    name: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")]
    modality: tuple[Pattern, ...] = ()
    sop_class: tuple[Pattern, ...] = ()  # SOP Class UIDs (patterns allowed)
    body_part: tuple[Pattern, ...] = ()  # Body Part Examined
    calling_ae: tuple[Pattern, ...] = ()
    photometric: tuple[Pattern, ...] = ()
    bits_stored: tuple[Annotated[int, Field(ge=1, le=32)], ...] = ()
    image_type: tuple[ImageKind, ...] = ()  # value 1 of Image Type
    manufacturer: tuple[Pattern, ...] = ()
    mode: Mode = "lossless"
    ingest_budget: str = "ingest"
    archive_codec: Annotated[str, StringConstraints(pattern=r"^(auto|[a-z0-9][a-z0-9_.-]{0,31})$")] = "auto"
    roi: RoiParams = RoiParams()

    @field_validator("ingest_budget")
    @classmethod
    def _known_budget(cls, value: str) -> str:
        if value not in _BUDGETS:
            raise ValueError(f"unknown codec budget {value!r}; known: {', '.join(_BUDGETS)}")
        return value

    @field_validator("image_type", mode="before")
    @classmethod
    def _upper_image_type(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(item.upper() if isinstance(item, str) else item for item in value)
        return value


class PolicySettings(_Model):
    rules: tuple[PolicyRule, ...] = ()

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, value: tuple[PolicyRule, ...]) -> tuple[PolicyRule, ...]:
        names = [rule.name for rule in value]
        repeated = sorted({name for name in names if names.count(name) > 1 or name in _BUILTIN_NAMES})
        if repeated:
            raise ValueError(f"rule name(s) repeated or reserved for the built-in rules: {', '.join(repeated)}")
        return value


# Conservative defaults after the configured rules: mammography and anything no rule names are lossless.
BUILTIN_RULES = (
    PolicyRule(name="builtin-mg", modality=("MG",), mode="lossless"),
    PolicyRule(name="builtin-default", mode="lossless"),
)
_BUILTIN_NAMES = frozenset(rule.name for rule in BUILTIN_RULES)


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """The header attributes rules match on, plus what says the pixels are already lossy."""

    modality: str | None
    sop_class_uid: str | None
    body_part: str | None
    photometric: str | None
    bits_stored: int | None
    image_type: str | None  # ORIGINAL or DERIVED (value 1), or None
    manufacturer: str | None
    lossy_compressed: bool  # Lossy Image Compression (0028,2110) is "01"
    transfer_syntax_uid: str | None

    @classmethod
    def of(cls, header: Dataset, transfer_syntax_uid: str | None = None) -> HeaderFacts:
        if transfer_syntax_uid is None and hasattr(header, "file_meta"):
            transfer_syntax_uid = _text(header.file_meta.get("TransferSyntaxUID"))
        # Dataset.get by keyword gives the value: a str, an int or a MultiValue.
        image_type = header.get("ImageType")
        if image_type is not None and not isinstance(image_type, str):  # value 1 is the kind
            image_type = image_type[0] if len(image_type) else None
        first = _text(image_type)
        bits = header.get("BitsStored")
        return cls(
            modality=_text(header.get("Modality")),
            sop_class_uid=_text(header.get("SOPClassUID")),
            body_part=_text(header.get("BodyPartExamined")),
            photometric=_text(header.get("PhotometricInterpretation")),
            bits_stored=int(bits) if isinstance(bits, int) else None,
            image_type=first.upper() if first else None,
            manufacturer=_text(header.get("Manufacturer")),
            lossy_compressed=_text(header.get("LossyImageCompression")) == "01",
            transfer_syntax_uid=transfer_syntax_uid,
        )


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    rule_name: str
    mode: Mode  # what is done; differs from the rule's mode when `reason` says why
    rule_mode: Mode
    ingest_budget: str | None  # None: no codec runs (keep)
    archive_codec: str
    roi: RoiParams | None  # for roi-hybrid only
    reason: str | None = None


def matches(rule: PolicyRule, facts: HeaderFacts, calling_ae: str) -> bool:
    return (
        _any(rule.modality, facts.modality)
        and _any(rule.sop_class, facts.sop_class_uid)
        and _any(rule.body_part, facts.body_part)
        and _any(rule.calling_ae, calling_ae.strip() or None)
        and _any(rule.photometric, facts.photometric)
        and (not rule.bits_stored or facts.bits_stored in rule.bits_stored)
        and (not rule.image_type or facts.image_type in rule.image_type)
        and _any(rule.manufacturer, facts.manufacturer)
    )


def _any(patterns: tuple[str, ...], value: str | None) -> bool:
    if not patterns:
        return True
    if value is None:
        return False
    folded = value.upper()
    return any(fnmatch.fnmatchcase(folded, pattern.upper()) for pattern in patterns)


def decide(facts: HeaderFacts, calling_ae: str, rules: tuple[PolicyRule, ...]) -> PolicyDecision:
    """The first configured rule that matches, else the built-in rules; lossy input stays as it is."""
    rule = next(rule for rule in (*rules, *BUILTIN_RULES) if matches(rule, facts, calling_ae))
    mode: Mode = rule.mode
    reason: str | None = None
    lossy_syntax = facts.transfer_syntax_uid is not None and syntaxes.is_lossy(facts.transfer_syntax_uid)
    if mode == "roi-hybrid" and lossy_syntax:
        # The received codestream is kept: decoding and re-coding lossy data loses more again.
        mode, reason = "keep", "input in a lossy transfer syntax"
    elif mode == "roi-hybrid" and facts.lossy_compressed:
        mode, reason = "lossless", "input already lossy (Lossy Image Compression 01)"
    elif mode == "roi-hybrid" and (facts.photometric or "").upper() == "PALETTE COLOR":
        # An error bound on palette indices bounds nothing on the colours they look up.
        mode, reason = "lossless", "palette colour indices"
    return PolicyDecision(
        rule_name=rule.name,
        mode=mode,
        rule_mode=rule.mode,
        ingest_budget=None if mode == "keep" else rule.ingest_budget,
        archive_codec=rule.archive_codec,
        roi=rule.roi if mode == "roi-hybrid" else None,
        reason=reason,
    )
