"""`pacs-gateway policy explain` on corpus files, run as the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import CORPUS_DIR

CONFIG = """
[logging]
format = "text"
level = "WARNING"

[[policy.rules]]
name = "mr-keep"
modality = ["MR"]
mode = "keep"

[[policy.rules]]
name = "ct-hybrid"
modality = ["CT"]
calling_ae = ["CT_*"]
mode = "roi-hybrid"
roi = { max_error = 3 }

[[policy.rules]]
name = "cr-rectangle"
modality = ["CR"]
mode = "roi-hybrid"
roi = { max_error = 2, roi_source = "rectangles", rectangles = [[0, 0, 64, 64]] }
"""

CT = CORPUS_DIR / "ct" / "tcia_lctsc_ct_slice.dcm"  # native 512 x 512, body inside air
CT_LOSSY = CORPUS_DIR / "ct" / "wg04_ct1_j2k_lossy.dcm"
CR = CORPUS_DIR / "cr" / "gdcm_cr_mono1_10bit_chest.dcm"  # native 440 x 440
MR = CORPUS_DIR / "mr" / "barre_mr_heart_multiframe_8bit.dcm"
MG = CORPUS_DIR / "mg" / "ge_senographe_mg_jpeg_lossless.dcm"


def _explain(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "policy.toml"
    config.write_text(CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "policy", "explain", *args],
        capture_output=True, text=True, timeout=300,
    )


def test_json_names_the_rule_and_measures_each_option(tmp_path: Path) -> None:
    result = _explain(tmp_path, "--json", "--calling-ae", "CT_ROOM1", str(CT), str(CT_LOSSY), str(CR), str(MR), str(MG))
    assert result.returncode == 0, result.stderr
    rows: dict[str, dict[str, Any]] = {Path(row["path"]).name: row for row in json.loads(result.stdout)}

    ct = rows[CT.name]
    assert (ct["rule"], ct["mode"], ct["ingest_budget"]) == ("ct-hybrid", "roi-hybrid", "ingest")
    assert ct["pixel_bytes"] == 512 * 512 * 2
    assert 0 < ct["lossless_bytes"] < ct["received_bytes"] and ct["lossless_codec"]
    roi = ct["roi_hybrid"]
    assert roi["max_error"] == 3 and roi["max_error_outside"] <= 3
    assert 0 < roi["roi_fraction"] < 1 and roi["psnr_db"] > 60
    assert roi["bytes"] < ct["lossless_bytes"]  # air coded within the bound costs less

    lossy = rows[CT_LOSSY.name]
    assert (lossy["rule"], lossy["rule_mode"], lossy["mode"]) == ("ct-hybrid", "roi-hybrid", "keep")
    assert lossy["reason"] == "input in a lossy transfer syntax" and lossy["roi_hybrid"] is None

    cr = rows[CR.name]
    assert (cr["rule"], cr["mode"]) == ("cr-rectangle", "roi-hybrid")
    assert cr["roi_hybrid"]["max_error_outside"] <= 2
    assert cr["roi_hybrid"]["roi_fraction"] == 64 * 64 / (440 * 440)  # the rectangle alone, no margin

    assert (rows[MR.name]["rule"], rows[MR.name]["mode"]) == ("mr-keep", "keep")
    assert rows[MR.name]["lossless_bytes"] > 0  # what the default budget would store
    assert (rows[MG.name]["rule"], rows[MG.name]["mode"]) == ("builtin-mg", "lossless")


def test_table_and_other_calling_ae(tmp_path: Path) -> None:
    result = _explain(tmp_path, "--calling-ae", "MR_ROOM1", str(CT), str(CT_LOSSY))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["file", "rule", "mode"]
    # Without a CT_* calling AE title the CT rule does not apply: the built-in default does.
    assert [line.split()[:3] for line in lines[1:]] == [
        [CT.name, "builtin-default", "lossless"], [CT_LOSSY.name, "builtin-default", "lossless"]]


def test_unreadable_file_is_reported_and_fails(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    result = _explain(tmp_path, "--json", str(junk), str(MG))
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    assert rows[0]["rule"] is None and "File Meta" in rows[0]["note"]
    assert rows[1]["rule"] == "builtin-mg"


def test_encapsulated_lossless_input_is_decoded_for_the_roi_figures(tmp_path: Path) -> None:
    jpeg_lossless = CORPUS_DIR / "cr" / "wg04_rg2_cr_jpeg_lossless.dcm"
    palette = CORPUS_DIR / "us" / "philips_palette_rle.dcm"
    config = tmp_path / "all.toml"
    config.write_text('[logging]\nformat = "text"\n[[policy.rules]]\nname = "all"\nmode = "roi-hybrid"\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "policy", "explain", "--json",
         str(jpeg_lossless), str(palette)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    cr, us = json.loads(result.stdout)
    roi = cr["roi_hybrid"]
    assert roi is not None and roi["max_error"] == 2 and roi["max_error_outside"] <= 2
    assert roi["bytes"] < cr["pixel_bytes"] and 0 < roi["roi_fraction"] < 1
    assert (us["mode"], us["reason"], us["roi_hybrid"]) == ("lossless", "palette colour indices", None)
