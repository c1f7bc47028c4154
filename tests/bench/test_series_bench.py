"""bench/series.py finds series in any folder of DICOM files and reports both codings, checked."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import CorpusFile

ROOT = Path(__file__).resolve().parents[2]


def test_the_series_benchmark_groups_orders_and_reports(corpus: list[CorpusFile], tmp_path: Path) -> None:
    source = tmp_path / "dicom"
    source.mkdir()
    slices = sorted((f for f in corpus if f.relpath.startswith("pt/tcga_thca_pet_coronal_series/")),
                    key=lambda f: f.relpath)[:6]
    assert len(slices) == 6
    # Names that say nothing of the series or the order: the benchmark goes by the attributes.
    names = [f"{n:03d}.dcm" for n in random.Random(5).sample(range(100), len(slices))]
    for corpus_file, name in zip(slices, names, strict=True):
        shutil.copy(corpus_file.path, source / name)
    cine = next(f for f in corpus if f.relpath == "mr/barre_mr_heart_multiframe_8bit.dcm")
    shutil.copy(cine.path, source / "cine.dcm")
    (source / "notes.txt").write_text("not DICOM")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "series.py"), "--input", str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("|")[1].strip(): line.split("|") for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| group")}
    assert set(rows) == {"PT thick", "MR thick", "overall"}
    assert rows["PT thick"][2].strip() == "1" and rows["PT thick"][3].strip() == "6"
    assert rows["MR thick"][3].strip() == "16"
    assert rows["overall"][3].strip() == "22"
    # A cine's frames are much alike: coding each against the previous one pays.
    assert float(rows["MR thick"][8].strip().rstrip("%")) < -2.0
