"""`pacs-gateway report` against an index filled through a real association."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.report import PlotUnavailable, Report, plot_savings
from storage.db import create_engine_for, upgrade_to_head
from storage.index import SqlIndex
from storage.records import DuplicatePolicy, StorageMode
from storage.savings import SavingsGroup
from tests.conftest import CorpusFile
from tests.storage.conftest import build_blob, build_meta
from tests.integration.conftest import GatewayFactory, dataset_bytes, needs_new_meta, send_files

CLI = str(Path(sys.executable).parent / "pacs-gateway")


def _mixed_files(corpus: list[CorpusFile]) -> list[CorpusFile]:
    """A few instances of several modalities: native pixels (coded) and lossy input (kept as received)."""
    sendable = [f for f in corpus if not f.needs_force and not needs_new_meta(f.path)]
    picked = [f for f in sendable if f.entry["series"] == "ct/pancreas_ct_philips_series"][:3]
    picked += [f for f in sendable if f.entry["series"] == "mr/brain_tumor_progression_t1post_siemens_series"][:2]
    for modality in ("PT", "US"):
        picked.append(next(f for f in sendable if f.entry["modality"] == modality and not f.entry["encapsulated"]))
    picked.append(next(f for f in sendable if f.entry["ts_lossy"] and f not in picked))
    return picked


def _run_report(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "report.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n')
    return subprocess.run([CLI, "report", "--config", str(config), *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


def _index_by_modality(database_url: str) -> dict[str | None, tuple[int, int, int]]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT s.modality, SUM(CASE WHEN i.is_current THEN 1 ELSE 0 END), "
                "SUM(i.original_size), SUM(i.stored_size) "
                "FROM instances i JOIN series s ON s.id = i.series_pk GROUP BY s.modality"
            )).all()
    finally:
        engine.dispose()
    return {modality: (int(count), int(original), int(stored)) for modality, count, original, stored in rows}


def test_report_sums_what_the_index_holds_per_modality_and_codec(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    files = _mixed_files(corpus)
    gateway = make_gateway(database_url=db_url)
    assert set(send_files(gateway.dicom_port, [f.path for f in files]).values()) == {0x0000}
    database_url = gateway.settings.database_url

    result = _run_report(tmp_path, database_url, "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)

    by_modality = {row["modality"]: row for row in report["by_modality"]}
    held = _index_by_modality(database_url)
    assert set(by_modality) == set(held)
    for modality, (count, original, stored) in held.items():
        row = by_modality[modality]
        assert (row["instances"], row["original_bytes"], row["stored_bytes"]) == (count, original, stored)
        assert row["ratio"] == pytest.approx(original / stored)
        assert row["saved_fraction"] == pytest.approx(1 - stored / original)
        assert row["verification_failures"] == 0 and row["fallbacks"] == 0

    # Independently of the index: what was sent, per modality, in count and dataset bytes.
    sent_count = Counter(str(f.entry["modality"]) for f in files)
    sent_bytes: dict[str, int] = defaultdict(int)
    for f in files:
        sent_bytes[str(f.entry["modality"])] += len(dataset_bytes(f.path))
    assert {m: r["instances"] for m, r in by_modality.items()} == dict(sent_count)
    assert {m: r["original_bytes"] for m, r in by_modality.items()} == dict(sent_bytes)

    # The totals are the index's running totals, which /metrics exports.
    counts = gateway.index.counts()
    total = report["total"]
    assert (total["instances"], total["original_bytes"], total["stored_bytes"]) == (
        counts.instances, counts.original_bytes, counts.stored_bytes)
    assert total["storage_modes"]["compressed"] >= 5  # CT and MR native pixels are coded
    assert total["storage_modes"]["as_received"] >= 1  # the lossy instance is kept as sent

    by_codec = report["by_codec"]
    assert sum(row["instances"] for row in by_codec) == counts.instances
    assert sum(row["stored_bytes"] for row in by_codec) == counts.stored_bytes
    for row in by_codec:
        assert (row["codec"] is None) == (row["storage_mode"] != StorageMode.COMPRESSED.value)
    for modality, row in by_modality.items():
        parts = [r for r in by_codec if r["modality"] == modality]
        assert sum(r["original_bytes"] for r in parts) == row["original_bytes"]


def test_report_groups_savings_by_policy_rule(
    make_gateway: GatewayFactory, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    files = _mixed_files(corpus)
    rules = [
        {"name": "ct-body", "modality": ["CT"], "mode": "roi-hybrid", "roi": {"max_error": 4}},
        {"name": "mr-keep", "modality": ["MR"], "mode": "keep"},
    ]
    gateway = make_gateway(policy={"rules": rules})
    assert set(send_files(gateway.dicom_port, [f.path for f in files]).values()) == {0x0000}
    result = _run_report(tmp_path, gateway.settings.database_url, "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)

    by_rule = {(row["modality"], row["rule"], row["policy_mode"]): row for row in report["by_rule"]}
    ct = by_rule[("CT", "ct-body", "roi-hybrid")]
    assert ct["instances"] == 3 and ct["storage_modes"]["compressed"] == 3
    assert by_rule[("MR", "mr-keep", "keep")]["storage_modes"]["as_received"] == 2
    assert {rule for _, rule, _ in by_rule} == {"ct-body", "mr-keep", "builtin-default"}
    by_modality = {row["modality"]: row for row in report["by_modality"]}
    for modality, row in by_modality.items():
        parts = [r for (m, _, _), r in by_rule.items() if m == modality]
        assert sum(r["stored_bytes"] for r in parts) == row["stored_bytes"]
        assert sum(r["instances"] for r in parts) == row["instances"]

    table = _run_report(tmp_path, gateway.settings.database_url)
    assert table.returncode == 0, table.stderr
    assert "By modality and policy rule" in table.stdout
    assert any(line.split()[:3] == ["CT", "ct-body", "roi-hybrid"] for line in table.stdout.splitlines())


def test_report_prints_an_aligned_table_and_draws_a_plot(
    make_gateway: GatewayFactory, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    gateway = make_gateway()
    files = [f.path for f in _mixed_files(corpus)]
    assert set(send_files(gateway.dicom_port, files).values()) == {0x0000}

    plot = tmp_path / "savings.png"
    result = _run_report(tmp_path, gateway.settings.database_url, "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[1]
    assert header.split() == ["modality", "instances", "original", "stored", "ratio", "saved", "compressed",
                              "as_received", "no_pixels", "verify_failed"]
    table = lines[1 : lines.index("")]
    assert {line.split()[0] for line in table[1:]} == {"CT", "MR", "PT", "US", "total"} | {
        str(next(f for f in _mixed_files(corpus) if f.entry["ts_lossy"]).entry["modality"])}
    # Right-aligned figures: every row's ratio ends in the same column as the header's.
    ratio_end = header.index("ratio") + len("ratio")
    assert all(line[ratio_end - 1] != " " and line[ratio_end] == " " for line in table[1:])
    assert "By modality and codec" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_a_database_without_schema_says_what_to_run(tmp_path: Path) -> None:
    result = _run_report(tmp_path, f"sqlite:///{tmp_path / 'empty.sqlite'}")
    assert result.returncode == 1
    assert "pacs-gateway db upgrade" in result.stderr


def test_plot_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    group = SavingsGroup(modality="CT", codec=None, storage_mode=None, instances=1, revisions=1,
                         original_bytes=10, stored_bytes=4, compressed=1, as_received=0, no_pixels=0,
                         verification_failures=0, fallbacks=0)
    with pytest.raises(PlotUnavailable, match=r"pacs-gateway\[plot\]"):
        plot_savings(Report([group], [group]), tmp_path / "x.png")


def test_report_counts_verification_failures_and_fallbacks_per_modality(db_url: str, tmp_path: Path) -> None:
    """Instances whose compression fell back, recorded in a real index, and the report's counts of them."""
    engine = create_engine_for(db_url)
    try:
        upgrade_to_head(engine)
        index = SqlIndex(engine)
        as_received = {"storage_mode": StorageMode.AS_RECEIVED, "codec_id": None, "codec_version": None}
        rows = [
            ("1.2.3.4.1", "CT", {}),
            ("1.2.3.4.2", "CT", {**as_received, "compression_fallback": "verification_failed"}),
            ("1.2.3.4.3", "CT", {**as_received, "compression_fallback": "verification_failed"}),
            ("1.2.3.5.1", "MR", {**as_received, "compression_fallback": "codec_error"}),
        ]
        for sop_uid, modality, changes in rows:
            meta = build_meta(sop_uid, series_uid=sop_uid.rsplit(".", 1)[0], modality=modality)
            meta = replace(meta, instance=replace(meta.instance, **changes))
            index.record_instance(meta, build_blob(sop_uid.replace(".", "") + "0" * 24), DuplicatePolicy.KEEP_REVISIONS)
    finally:
        engine.dispose()

    result = _run_report(tmp_path, db_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_modality = {row["modality"]: row for row in report["by_modality"]}
    assert (by_modality["CT"]["verification_failures"], by_modality["CT"]["fallbacks"]) == (2, 2)
    assert (by_modality["MR"]["verification_failures"], by_modality["MR"]["fallbacks"]) == (0, 1)
    assert (report["total"]["verification_failures"], report["total"]["fallbacks"]) == (2, 3)
    ct_as_received = next(r for r in report["by_codec"] if r["modality"] == "CT" and r["codec"] is None)
    assert (ct_as_received["instances"], ct_as_received["verification_failures"]) == (2, 2)

    table = _run_report(tmp_path, db_url).stdout.splitlines()
    ct_line = next(line for line in table if line.startswith("CT "))
    assert ct_line.split()[-1] == "2"
