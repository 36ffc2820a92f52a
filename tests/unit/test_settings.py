"""runtime.settings: one frozen settings model, from ESP_* environment variables or explicit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from runtime.settings import EspSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Tests must not depend on ESP_* variables of whoever runs them."""
    for name in list(os.environ):
        if name.upper().startswith("ESP_"):
            monkeypatch.delenv(name)


def test_defaults():
    s = EspSettings()
    assert s.state_dir == Path(".esp")
    assert s.redis_url is None
    assert (s.redis_port, s.partitions, s.actors, s.http_host, s.http_port) == (6390, 64, 0, "127.0.0.1", 8000)
    assert s.auth is True
    assert s.max_body_bytes == 16 * 1024 * 1024
    assert s.idempotency_horizon_s == 7 * 24 * 3600


def test_every_field_is_described():
    undocumented = [name for name, field in EspSettings.model_fields.items() if not field.description]
    assert undocumented == []


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("ESP_PARTITIONS", "128")
    monkeypatch.setenv("ESP_AUTH", "false")
    monkeypatch.setenv("ESP_CHECKPOINT_INTERVAL_S", "2.5")
    monkeypatch.setenv("ESP_STATE_DIR", "/var/lib/esp")
    s = EspSettings()
    assert (s.partitions, s.auth, s.checkpoint_interval_s, s.state_dir) == (128, False, 2.5, Path("/var/lib/esp"))


def test_explicit_values_beat_the_environment(monkeypatch):
    monkeypatch.setenv("ESP_PARTITIONS", "128")
    assert EspSettings(partitions=16).partitions == 16


def test_bad_environment_value_is_refused(monkeypatch):
    monkeypatch.setenv("ESP_PARTITIONS", "lots")
    with pytest.raises(ValidationError, match="partitions"):
        EspSettings()


@pytest.mark.parametrize(
    "values",
    [
        {"partitions": 0},
        {"partitions": 4097},
        {"actors": -1},
        {"actor_num_cpus": 0},
        {"max_body_bytes": 1023},
        {"idempotency_horizon_s": 59},
        {"checkpoint_interval_s": 0},
        {"max_backlog_entries": 9},
    ],
)
def test_bounds(values):
    with pytest.raises(ValidationError, match=next(iter(values))):
        EspSettings(**values)


def test_unknown_setting_is_refused():
    with pytest.raises(ValidationError, match="partition_count"):
        EspSettings(partition_count=8)


def test_frozen():
    s = EspSettings()
    with pytest.raises(ValidationError):
        s.partitions = 8  # type: ignore[misc]
    assert s.partitions == 64


def test_redis_url_is_secret(monkeypatch):
    monkeypatch.setenv("ESP_REDIS_URL", "redis://:hunter2@redis.internal:6379/0")
    s = EspSettings()
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert s.effective_redis_url() == "redis://:hunter2@redis.internal:6379/0"


def test_embedded_redis_url_uses_the_port_and_the_generated_password(tmp_path):
    assert EspSettings(state_dir=tmp_path).effective_redis_url() == "redis://127.0.0.1:6390/0"  # not started yet
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "password").write_text("pw-from-first-start\n")
    url = EspSettings(state_dir=tmp_path, redis_port=7000).effective_redis_url()
    assert url == "redis://:pw-from-first-start@127.0.0.1:7000/0"


def test_checkpoint_location(tmp_path):
    assert EspSettings(state_dir=tmp_path).checkpoint_location == str(tmp_path / "checkpoints")
    assert EspSettings(checkpoint_uri="s3://bucket/esp").checkpoint_location == "s3://bucket/esp"


def test_default_checkpoint_location_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert EspSettings().checkpoint_location == str(tmp_path / ".esp" / "checkpoints")


def test_to_wire_rebuilds_the_same_settings_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = EspSettings(redis_url="redis://:pw@h:1/2", partitions=8, auth=False)
    wire = s.to_wire()
    assert wire["redis_url"] == "redis://:pw@h:1/2"  # secrets travel to actors
    assert wire["state_dir"] == str(tmp_path / ".esp")
    assert wire["checkpoint_uri"] == str(tmp_path / ".esp" / "checkpoints")

    monkeypatch.chdir("/")  # another process, another working directory
    rebuilt = EspSettings(**wire)
    assert rebuilt.effective_redis_url() == "redis://:pw@h:1/2"
    assert rebuilt.checkpoint_location == str(tmp_path / ".esp" / "checkpoints")
    assert (rebuilt.partitions, rebuilt.auth) == (8, False)
    assert rebuilt.server_secret() == wire["secret"]  # the generated one travels too
    same = {k: v for k, v in s.model_dump().items() if k not in ("redis_url", "state_dir", "checkpoint_uri", "secret")}
    assert {k: v for k, v in rebuilt.model_dump().items() if k in same} == same


def test_to_wire_of_embedded_redis_names_the_port(tmp_path):
    assert EspSettings(state_dir=tmp_path, redis_port=6401).to_wire()["redis_url"] == "redis://127.0.0.1:6401/0"
