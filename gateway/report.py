"""`pacs-gateway report`: what compression saved, from the index: per modality, per modality and
codec, and per modality and the compression policy rule that decided (with what it did)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from storage.savings import SavingsGroup, SavingsKey, savings

SCOPE = "instances: current revisions; bytes, storage modes and failures: every revision kept"
_NO_KEY = "(none)"


class PlotUnavailable(Exception):
    """--plot was asked for but matplotlib is not installed."""


@dataclass(frozen=True, slots=True)
class Report:
    by_modality: Sequence[SavingsGroup]
    by_codec: Sequence[SavingsGroup]  # per modality, codec and storage mode
    by_rule: Sequence[SavingsGroup] = ()  # per modality, policy rule and policy mode

    @property
    def total(self) -> SavingsGroup:
        groups = self.by_modality
        return SavingsGroup(
            modality=None,
            codec=None,
            storage_mode=None,
            instances=sum(g.instances for g in groups),
            revisions=sum(g.revisions for g in groups),
            original_bytes=sum(g.original_bytes for g in groups),
            stored_bytes=sum(g.stored_bytes for g in groups),
            compressed=sum(g.compressed for g in groups),
            as_received=sum(g.as_received for g in groups),
            no_pixels=sum(g.no_pixels for g in groups),
            verification_failures=sum(g.verification_failures for g in groups),
            fallbacks=sum(g.fallbacks for g in groups),
        )


def build_report(engine: Engine) -> Report:
    return Report(savings(engine, SavingsKey.MODALITY), savings(engine, SavingsKey.MODALITY_CODEC),
                  savings(engine, SavingsKey.MODALITY_RULE))


def ratio(group: SavingsGroup) -> float | None:
    """Original over stored bytes; None for a group that stores nothing."""
    return group.original_bytes / group.stored_bytes if group.stored_bytes else None


def saved_fraction(group: SavingsGroup) -> float | None:
    return 1 - group.stored_bytes / group.original_bytes if group.original_bytes else None


def _figures(group: SavingsGroup) -> dict[str, Any]:
    return {
        "instances": group.instances,
        "revisions": group.revisions,
        "original_bytes": group.original_bytes,
        "stored_bytes": group.stored_bytes,
        "ratio": ratio(group),
        "saved_fraction": saved_fraction(group),
        "storage_modes": {
            "compressed": group.compressed,
            "as_received": group.as_received,
            "no_pixels": group.no_pixels,
        },
        "verification_failures": group.verification_failures,
        "fallbacks": group.fallbacks,
    }


def as_json(report: Report) -> str:
    document = {
        "scope": SCOPE,
        "by_modality": [{"modality": g.modality, **_figures(g)} for g in report.by_modality],
        "by_codec": [
            {
                "modality": g.modality,
                "codec": g.codec,
                "storage_mode": g.storage_mode.value if g.storage_mode else None,
                **_figures(g),
            }
            for g in report.by_codec
        ],
        "by_rule": [
            {"modality": g.modality, "rule": g.rule, "policy_mode": g.policy_mode, **_figures(g)}
            for g in report.by_rule
        ],
        "total": _figures(report.total),
    }
    return json.dumps(document, indent=2) + "\n"


def _size(count: int) -> str:
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


def _figure_cells(group: SavingsGroup) -> list[str]:
    r, saved = ratio(group), saved_fraction(group)
    return [
        str(group.instances),
        _size(group.original_bytes),
        _size(group.stored_bytes),
        "-" if r is None else f"{r:.3f}",
        "-" if saved is None else f"{100 * saved:.1f}%",
        str(group.compressed),
        str(group.as_received),
        str(group.no_pixels),
        str(group.verification_failures),
    ]


_FIGURE_HEADER = ["instances", "original", "stored", "ratio", "saved", "compressed", "as_received", "no_pixels",
                  "verify_failed"]


def _table(header: list[str], rows: list[list[str]], *, text_columns: int) -> list[str]:
    """Aligned columns: the first `text_columns` to the left, the figures to the right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), *(line(row) for row in rows)]


def as_table(report: Report) -> str:
    modality_rows = [[g.modality or _NO_KEY, *_figure_cells(g)] for g in report.by_modality]
    modality_rows.append(["total", *_figure_cells(report.total)])
    codec_rows = [
        [g.modality or _NO_KEY, g.codec or _NO_KEY, g.storage_mode.value if g.storage_mode else "",
         *_figure_cells(g)]
        for g in report.by_codec
    ]
    lines = [f"By modality ({SCOPE})"]
    lines += _table(["modality", *_FIGURE_HEADER], modality_rows, text_columns=1)
    lines += ["", "By modality and codec"]
    lines += _table(["modality", "codec", "mode", *_FIGURE_HEADER], codec_rows, text_columns=3)
    rule_rows = [
        [g.modality or _NO_KEY, g.rule or _NO_KEY, g.policy_mode or "", *_figure_cells(g)]
        for g in report.by_rule
    ]
    lines += ["", "By modality and policy rule (mode: what the rule did)"]
    lines += _table(["modality", "rule", "mode", *_FIGURE_HEADER], rule_rows, text_columns=3)
    return "\n".join(lines) + "\n"


def plot_savings(report: Report, path: Path) -> None:
    """A bar per modality: the share of received bytes that storage saved, with the ratio on top."""
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'pacs-gateway[plot]'"
        ) from exc
    groups = [g for g in report.by_modality if g.original_bytes]
    labels = [g.modality or _NO_KEY for g in groups]
    percents = [100 * (saved_fraction(g) or 0.0) for g in groups]
    figure = Figure(figsize=(max(4.0, 0.8 * len(groups) + 2), 4), layout="constrained")
    axes = figure.add_subplot()
    bars = axes.bar(labels, percents, color="tab:blue")
    axes.bar_label(bars, labels=[f"{ratio(g) or 0:.2f}x" for g in groups], padding=2)
    axes.set_ylabel("storage saved (% of received bytes)")
    axes.set_xlabel("modality")
    # Headroom above 100 % for the ratio labels of the best-compressed modalities.
    axes.set_ylim(min(0.0, *percents) if percents else 0.0, 112)
    axes.set_yticks(range(0, 101, 20))
    axes.set_title("pacs-gateway: storage saved per modality")
    figure.savefig(path, format="png", dpi=100)
