"""Policy rules matched on the headers of real corpus files, and the configuration they come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from gateway.config import ConfigError, Settings, load_settings
from gateway.policy import HeaderFacts, PolicyRule, decide
from tests.conftest import CORPUS_DIR

MG = CORPUS_DIR / "mg" / "ge_senographe_mg_jpeg_lossless.dcm"
CR = CORPUS_DIR / "cr" / "wg04_rg1_cr_15bit_uncompressed.dcm"  # Philips, CHEST, MONOCHROME1, 15 bits, DERIVED
MR = CORPUS_DIR / "mr" / "barre_mr_heart_multiframe_8bit.dcm"  # Philips, ORIGINAL, 8 bits
J2K_LOSSY = CORPUS_DIR / "ct" / "wg04_ct1_j2k_lossy.dcm"
NEAR_LOSSLESS = CORPUS_DIR / "ct" / "wg04_ct2_jpegls_near_lossless.dcm"


def facts(path: Path) -> HeaderFacts:
    return HeaderFacts.of(pydicom.dcmread(path, stop_before_pixels=True))


def rule(name: str = "r", **fields: Any) -> PolicyRule:
    return PolicyRule(name=name, **fields)


def test_facts_come_from_the_header() -> None:
    cr = facts(CR)
    assert (cr.modality, cr.body_part, cr.photometric, cr.bits_stored, cr.image_type) == (
        "CR", "CHEST", "MONOCHROME1", 15, "DERIVED")
    assert cr.manufacturer == "Philips Medical Systems" and cr.sop_class_uid == "1.2.840.10008.5.1.4.1.1.1"
    assert not cr.lossy_compressed and cr.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert facts(J2K_LOSSY).lossy_compressed


@pytest.mark.parametrize(
    ("fields", "matched"),
    [
        ({"modality": ["CR"]}, True),
        ({"modality": ["CT", "MR"]}, False),
        ({"sop_class": ["1.2.840.10008.5.1.4.1.1.1"]}, True),
        ({"sop_class": ["1.2.840.10008.5.1.4.1.1.1.*"]}, False),
        ({"body_part": ["chest"]}, True),  # case does not matter
        ({"body_part": ["HEAD"]}, False),
        ({"calling_ae": ["CR_*"]}, True),
        ({"calling_ae": ["CT_*"]}, False),
        ({"photometric": ["MONOCHROME?"]}, True),
        ({"photometric": ["RGB"]}, False),
        ({"bits_stored": [12, 15]}, True),
        ({"bits_stored": [16]}, False),
        ({"image_type": ["derived"]}, True),
        ({"image_type": ["ORIGINAL"]}, False),
        ({"manufacturer": ["philips*"]}, True),
        ({"manufacturer": ["GE*"]}, False),
        ({"modality": ["CR"], "bits_stored": [15], "manufacturer": ["Philips*"]}, True),
        ({"modality": ["CR"], "bits_stored": [16]}, False),  # every field must match
    ],
)
def test_each_match_field(fields: dict[str, Any], matched: bool) -> None:
    decision = decide(facts(CR), "CR_ROOM1", (rule("x", mode="keep", **fields),))
    assert (decision.rule_name == "x") is matched


def test_missing_attribute_matches_no_pattern() -> None:
    assert facts(MR).body_part is None
    assert decide(facts(MR), "A", (rule("any-part", body_part=["*"]),)).rule_name == "builtin-default"


def test_first_matching_rule_wins() -> None:
    rules = (rule("first", modality=["CR"], mode="keep"), rule("second", modality=["CR"]), rule("all"))
    assert decide(facts(CR), "A", rules).rule_name == "first"
    assert decide(facts(MR), "A", rules).rule_name == "all"


def test_defaults_are_lossless() -> None:
    mg = decide(facts(MG), "A", ())
    assert (mg.rule_name, mg.mode, mg.ingest_budget) == ("builtin-mg", "lossless", "ingest")
    other = decide(facts(MR), "A", (rule("cr-only", modality=["CR"], mode="roi-hybrid"),))
    assert (other.rule_name, other.mode) == ("builtin-default", "lossless")


def test_rule_parameters_are_carried() -> None:
    hybrid = rule("cr", mode="roi-hybrid", ingest_budget="archive", archive_codec="jpegls",
                  roi={"max_error": 4, "roi_source": "rectangles", "rectangles": [[0, 0, 100, 200]]})
    decision = decide(facts(CR), "A", (hybrid,))
    assert (decision.mode, decision.ingest_budget, decision.archive_codec) == ("roi-hybrid", "archive", "jpegls")
    assert decision.roi is not None and decision.roi.max_error == 4 and decision.roi.rectangles == ((0, 0, 100, 200),)
    keep = decide(facts(CR), "A", (rule("keep", mode="keep"),))
    assert keep.ingest_budget is None and keep.roi is None and keep.reason is None


def test_lossy_input_is_never_compressed_lossily() -> None:
    hybrid = (rule("hybrid", mode="roi-hybrid"),)
    for path in (J2K_LOSSY, NEAR_LOSSLESS):  # lossy transfer syntaxes: the codestream is kept
        decision = decide(facts(path), "A", hybrid)
        assert (decision.rule_name, decision.rule_mode, decision.mode) == ("hybrid", "roi-hybrid", "keep")
        assert decision.reason == "input in a lossy transfer syntax" and decision.roi is None
    # Native pixels that were lossy once (Lossy Image Compression 01): coded losslessly.
    header = pydicom.dcmread(CR, stop_before_pixels=True)
    header.LossyImageCompression = "01"
    decision = decide(HeaderFacts.of(header), "A", hybrid)
    assert (decision.mode, decision.ingest_budget) == ("lossless", "ingest")
    assert decision.reason is not None and "Lossy Image Compression" in decision.reason
    # Palette indices: a bounded index error is an unbounded colour error.
    palette = decide(facts(CORPUS_DIR / "us" / "philips_palette_rle.dcm"), "A", hybrid)
    assert (palette.mode, palette.reason) == ("lossless", "palette colour indices")
    # Lossless and keep rules are not changed by lossy input.
    assert decide(facts(J2K_LOSSY), "A", (rule("l"),)).mode == "lossless"


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return load_settings(path)


def test_rules_from_toml(tmp_path: Path) -> None:
    settings = _load(tmp_path, """
[[policy.rules]]
name = "cr-chest"
modality = ["CR", "DX"]
body_part = ["CHEST"]
mode = "roi-hybrid"
archive_codec = "auto"
roi = { max_error = 3 }

[[policy.rules]]
name = "secondary-capture"
sop_class = ["1.2.840.10008.5.1.4.1.1.7*"]
mode = "keep"
""")
    assert [r.name for r in settings.policy.rules] == ["cr-chest", "secondary-capture"]
    assert decide(facts(CR), "A", settings.policy.rules).rule_name == "cr-chest"
    assert load_settings(None).policy.rules == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('mode = "lossy"', "policy.rules.0.mode"),
        ('ingest_budget = "fast"', "unknown codec budget"),
        ("roi = { max_error = 17 }", "policy.rules.0.roi.max_error"),
        ("roi = { max_error = 0 }", "policy.rules.0.roi.max_error"),
        ('roi = { roi_source = "rectangles" }', "needs at least one rectangle"),
        ('roi = { roi_source = "auto", rectangles = [[0, 0, 1, 1]] }', "only used with"),
        ('roi = { roi_source = "rectangles", rectangles = [[0, 0, 0, 1]] }', "policy.rules.0.roi.rectangles"),
        ('image_type = ["PRIMARY"]', "policy.rules.0.image_type"),
        ("bits_stored = [0]", "policy.rules.0.bits_stored"),
        ('modalty = ["CT"]', "policy.rules.0.modalty: unknown key"),
        ('archive_codec = "Not A Codec"', "policy.rules.0.archive_codec"),
    ],
)
def test_bad_rules_are_named(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, f'[[policy.rules]]\nname = "r"\n{body}\n')


def test_rule_names_are_unique_and_builtin_names_reserved(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="repeated or reserved for the built-in rules: a "):
        _load(tmp_path, '[[policy.rules]]\nname = "a"\n[[policy.rules]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="builtin-default"):
        _load(tmp_path, '[[policy.rules]]\nname = "builtin-default"\n')
    with pytest.raises(ConfigError, match="policy.rules.0.name"):
        _load(tmp_path, '[[policy.rules]]\nmode = "keep"\n')


def test_rules_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACSGW_POLICY__RULES", '[{"name": "env-keep", "modality": ["MR"], "mode": "keep"}]')
    rules = load_settings(None).policy.rules
    assert decide(facts(MR), "A", rules).rule_name == "env-keep"
