"""Settings: YAML defaults, ${VAR:default} interpolation, env overrides, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_default() -> None:
    settings = load_settings(environ={})
    assert settings.embedded_database and settings.embedded_nats
    assert settings.api.max_upload_bytes == 50 * 1024 * 1024
    assert settings.data_dir == Path("./kf-data")


def test_interpolation_reads_the_environment_with_typed_defaults() -> None:
    settings = load_settings(
        environ={
            "KF_PORT": "9100",
            "KF_DATABASE_URL": "postgresql://db/kf",
            "KF_MODEL_CACHE_DIR": "/opt/kf-models",
        }
    )
    assert settings.search.model_cache_dir == "/opt/kf-models"
    assert settings.api.port == 9100
    assert settings.database.url == "postgresql://db/kf"
    assert not settings.embedded_database


def test_environment_overrides_nested_keys() -> None:
    settings = load_settings(environ={"KF__INGEST__CHUNK_TOKENS": "120", "KF__NATS__STREAM": "X"})
    assert settings.ingest.chunk_tokens == 120
    assert settings.nats.stream == "X"


def test_a_config_file_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "kf.yaml"
    config.write_text("api:\n  port: ${MY_PORT:7000}\ningest:\n  workers: 3\n")
    settings = load_settings(config, environ={})
    assert settings.api.port == 7000 and settings.ingest.workers == 3


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"KF__API__PORT": "99999"}, "api.port"),
        ({"KF__INGEST__CHUNK_TOKENS": "300"}, "ingest.chunk_tokens"),
        ({"KF__INGEST__OVERLAP_TOKENS": "150"}, "ingest.overlap_tokens"),
        ({"KF__API__NO_SUCH_KEY": "1"}, "api.no_such_key"),
        ({"KF_MODE": "staging"}, "mode"),
    ],
)
def test_invalid_settings_fail_naming_the_key(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
        load_settings(environ=environ)


def test_unreadable_or_invalid_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("api: [unclosed")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(broken, environ={})
