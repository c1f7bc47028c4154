"""`pacs-gateway policy explain`: which rule applies to a file, what it does, and measured sizes.

The lossless size is what ingest would store: the same `prepare` the codec workers run, at the
rule's ingest budget. The ROI-hybrid figures come from the same coding ingest runs
(`gateway.services.roi_ingest`), with ingest's verdict on whether the saving is worth a lossy
instance.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.policy import HeaderFacts, PolicyDecision, PolicyRule, decide
from gateway.received import ReceivedDataset, open_received
from gateway.services.prepare import IngestJob, prepare
from gateway.services.roi_ingest import NotCoded, code_frames, native_source
from pixcodec.decide import budget_named


@dataclass(frozen=True, slots=True)
class RoiMeasurement:
    max_error: int
    bytes: int  # the coded frames
    instance_bytes: int  # the received dataset with its Pixel Data value replaced by the coded frames
    roi_fraction: float
    psnr_db: float
    psnr_outside_db: float
    max_error_outside: int


@dataclass(frozen=True, slots=True)
class Explanation:
    path: str
    rule: str | None
    rule_mode: str | None
    mode: str | None
    reason: str | None
    ingest_budget: str | None
    archive_codec: str | None
    received_bytes: int | None  # the dataset as a C-STORE carries it
    pixel_bytes: int | None  # the Pixel Data value as received
    lossless_bytes: int | None  # the stored instance blob, coded at the rule's ingest budget
    lossless_codec: str | None
    roi_hybrid: RoiMeasurement | None
    note: str | None = None  # why a figure is missing


def explain(path: Path, rules: tuple[PolicyRule, ...], calling_ae: str) -> Explanation:
    try:
        received = open_received(path)
    except GatewayError as exc:
        return _unreadable(path, str(exc))
    decision = decide(HeaderFacts.of(received.header, str(received.transfer_syntax)), calling_ae, rules)
    pixel_bytes = received.pixel.value_length if received.pixel is not None else None
    note: str | None = None
    lossless_bytes = lossless_codec = None
    roi: RoiMeasurement | None = None
    try:
        lossless_bytes, lossless_codec = _lossless(received, decision)
        if decision.roi is not None:
            roi, note = _roi_hybrid(received, decision)
    except NotCoded as exc:
        note = f"ROI-hybrid not measured: {exc}"
    except GatewayError as exc:
        note = str(exc)
    return Explanation(
        path=str(path), rule=decision.rule_name, rule_mode=decision.rule_mode, mode=decision.mode,
        reason=decision.reason, ingest_budget=decision.ingest_budget, archive_codec=decision.archive_codec,
        received_bytes=received.dataset_length, pixel_bytes=pixel_bytes, lossless_bytes=lossless_bytes,
        lossless_codec=lossless_codec, roi_hybrid=roi, note=note,
    )


def _unreadable(path: Path, why: str) -> Explanation:
    return Explanation(str(path), None, None, None, None, None, None, None, None, None, None, None, note=why)


def _lossless(received: ReceivedDataset, decision: PolicyDecision) -> tuple[int, str | None]:
    """The blob ingest stores; for a `keep` rule, what the default ingest budget would have made."""
    header = received.header
    with tempfile.TemporaryDirectory(prefix="pacsgw-explain-") as scratch:
        job = IngestJob(
            spool_path=received.path,
            blob_path=Path(scratch) / "explain.blob",
            sop_class_uid=str(header.get("SOPClassUID", "")),
            sop_instance_uid=str(header.get("SOPInstanceUID", "")),
            budget=decision.ingest_budget or "ingest",
        )
        prepared = prepare(job)
    return prepared.blob_size, prepared.codec_id


def _roi_hybrid(received: ReceivedDataset, decision: PolicyDecision) -> tuple[RoiMeasurement, str | None]:
    """The ROI-hybrid figures by the code ingest runs (same masks, same decoding of compressed
    input), and why ingest would store the instance exactly instead, if it would."""
    assert decision.roi is not None
    with tempfile.TemporaryDirectory(prefix="pacsgw-explain-") as scratch:
        with native_source(received, Path(scratch) / "native.dcm") as native:
            frames = code_frames(native, decision.roi, budget_named(decision.ingest_budget or "ingest"))
            native_pixel = native.pixel
            assert native_pixel is not None
            instance = native.dataset_length - native_pixel.value_length + frames.figures.compressed_bytes
    total = frames.figures
    measured = RoiMeasurement(decision.roi.max_error, total.compressed_bytes, instance, total.roi_fraction,
                              total.psnr_db, total.psnr_outside_db, total.max_error_outside)
    why_not = frames.verdict(decision.roi)
    return measured, f"ingest stores it losslessly: {why_not}" if why_not else None


def as_json(rows: list[Explanation]) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isinf(value):
            return None  # identical: JSON has no infinity
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return json.dumps([clean(asdict(row)) for row in rows], indent=2) + "\n"


def as_table(rows: list[Explanation]) -> str:
    # Sizes are of whole instances, so that they compare: as received, stored lossless, ROI-hybrid.
    head = ("file", "rule", "mode", "pixel data", "received", "lossless", "roi-hybrid", "roi %", "psnr dB", "note")
    lines = [head]
    for row in rows:
        roi = row.roi_hybrid
        mode = row.mode or "-"
        if row.mode != row.rule_mode and row.rule_mode is not None:
            mode = f"{row.mode} (rule: {row.rule_mode})"
        lines.append((
            Path(row.path).name,
            row.rule or "-",
            mode,
            _num(row.pixel_bytes),
            _num(row.received_bytes),
            _num(row.lossless_bytes) + (f" {row.lossless_codec}" if row.lossless_codec else ""),
            f"{_num(roi.instance_bytes)} e<={roi.max_error}" if roi else "-",
            f"{100 * roi.roi_fraction:.1f}" if roi else "-",
            ("inf" if math.isinf(roi.psnr_db) else f"{roi.psnr_db:.1f}") if roi else "-",
            "; ".join(part for part in (row.reason, row.note) if part) or "",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() + "\n" for line in lines)


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


__all__ = ["Explanation", "RoiMeasurement", "as_json", "as_table", "explain"]
