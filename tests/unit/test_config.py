from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings, masked_dump
from gateway.errors import OutOfResources, Service, error_comment, to_outcome

REPO = Path(__file__).resolve().parents[2]


def test_example_file_is_valid_and_matches_the_defaults() -> None:
    assert load_settings(REPO / "gateway.example.toml") == load_settings(None)


def test_unknown_key_and_bad_value_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[dicom]\nport = "eleven"\naetitle = "X"\n[blobs]\nbackend = "s4"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert "dicom.port" in message and "dicom.aetitle: unknown key" in message and "blobs.backend" in message


def test_ae_title_longer_than_16_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.toml"
    path.write_text('[dicom]\nae_title = "A_VERY_LONG_AE_TITLE"\n')
    with pytest.raises(ConfigError, match="dicom.ae_title"):
        load_settings(path)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[dicom]\nport = 104\nae_title = "FROMFILE"\n')
    monkeypatch.setenv("PACSGW_DICOM__PORT", "4242")
    settings = load_settings(path)
    assert settings.dicom.port == 4242 and settings.dicom.ae_title == "FROMFILE"


def test_password_is_masked() -> None:
    from gateway.config import Settings

    settings = Settings(database={"url": "postgresql+psycopg://pacs:s3cret@db:5432/pacs"})
    dump = masked_dump(settings)
    assert "s3cret" not in dump and "pacs:***@db:5432/pacs" in dump


def test_statuses_are_mapped_per_service() -> None:
    assert to_outcome(OutOfResources("disk full"), Service.C_STORE).status == 0xA700
    assert to_outcome(OutOfResources("disk full"), Service.C_MOVE).status == 0xA702
    assert len(error_comment("x" * 100)) == 64
    assert error_comment("bad\\value\n") == "bad value"
