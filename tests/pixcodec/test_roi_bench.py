"""bench/roi.py runs and reports what the ROI-hybrid codec does on a corpus slice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_reports_a_ct_slice(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "roi.py"), "--match", "pancreas_ct_philips_series/slice_020",
         "--bounds", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((tmp_path / "roi.json").read_text())
    assert [(r["group"], r["bound"], r["frames"]) for r in rows] == [("CT", 2, 1)]
    row = rows[0]
    assert row["max_error_outside"] == 2
    assert 0.2 < row["roi_fraction"] < 0.6
    assert row["vs_lossless"] < 0.8 and row["whole_near_vs_lossless"] < row["vs_lossless"]
    assert row["psnr_outside_db"] < row["psnr_db"]
    # The best lossless coding is at most the JPEG-LS size, so the ratio against it is no smaller.
    assert row["vs_lossless"] <= row["vs_best_lossless"] < 1
    # The exact region alone is a floor no coding of the outside goes below.
    assert 0.2 < row["roi_alone_vs_lossless"] < row["vs_lossless"]
    assert "| CT | 2 | 1 |" in (tmp_path / "roi.md").read_text()
