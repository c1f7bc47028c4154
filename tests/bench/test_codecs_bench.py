"""bench/codecs.py runs on any folder of DICOM files and reports every coder, checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import CorpusFile

ROOT = Path(__file__).resolve().parents[2]
PICKS = ("ct/pancreas_ct_philips_series/slice_001.dcm", "mr/gdcm_siemens_overlays_private.dcm",
         "us/gdcm_logiqbook_private_tags.dcm")


def test_the_codec_benchmark_runs_on_a_folder(corpus: list[CorpusFile], tmp_path: Path) -> None:
    source = tmp_path / "dicom"
    source.mkdir()
    for f in corpus:
        if f.relpath in PICKS:
            shutil.copy(f.path, source / f.path.name)
    (source / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "codecs.py"), "--input", str(source),
                             "--frames", "1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 objects, 3 frames" in result.stdout
    for coder in ("JPEG-LS", "JPEG 2000", "HTJ2K", "JPEG-XL e1", "JPEG-XL e3", "JPEG-XL e7", "pred", "decide: ingest",
                  "decide: archive"):
        assert f"| {coder} |" in result.stdout
    assert "round-trip or codec failures: 0" in result.stdout
    assert "Series: none" in result.stdout  # three single images of three series
    assert "images where archive > 1.005 x min(JPEG-LS, JPEG-XL e3): 0" in result.stdout
    markdown = (out / "codecs.md").read_text()
    assert "| **overall** | 3 |" in markdown
    assert (out / "codecs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
