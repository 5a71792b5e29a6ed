"""Settings: one object from the environment; bad configuration is one clear line at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streaming.settings import Settings, SettingsError


def test_settings_default_to_the_local_stack():
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.redis_url == "redis://127.0.0.1:16379/0"
    assert settings.pg_dsn == "postgresql://ot:ot@127.0.0.1:15432/ot"
    assert settings.mqtt_url == "mqtt://127.0.0.1:11883"
    assert settings.topics.readings == "sensor-readings"
    assert settings.readings_partitions == 6


def test_settings_read_every_variable():
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "REDIS_URL": "redis://r:6379/1",
            "OT_PG_DSN": "postgresql://u:p@db:5432/x",
            "MQTT_URL": "mqtt://bridge:secret@broker:1883",
            "OT_LAKE_DIR": "/data/lake",
            "DAGSTER_HOME": "/data/dagster",
            "OT_API_KEYS": f"a:ingest:sha256:{'0' * 64}, b:read:sha256:{'1' * 64}",
            "OT_OFFLINE_AFTER_SECONDS": "12.5",
            "OT_API_ANONYMOUS_READ": "TRUE",
            "OT_API_CORS_ORIGINS": "http://wall.local:3000, https://ops.example.com",
        }
    )
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert str(settings.lake_dir) == "/data/lake"
    assert settings.mqtt_url == "mqtt://bridge:secret@broker:1883"
    assert [(k.name, k.role) for k in settings.api_keys] == [("a", "ingest"), ("b", "read")]
    assert settings.offline_after_seconds == 12.5
    assert settings.api.anonymous_read is True
    assert settings.api.cors_origins == ("http://wall.local:3000", "https://ops.example.com")
    assert Settings.from_env({}).api.anonymous_read is False
    assert Settings.from_env({}).api.cors_origins == ()
    assert Settings.from_env({"OT_API_CORS_ORIGINS": "*"}).api.cors_origins == ("*",)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "host:port"),
        ("REDIS_URL", "http://x", "redis://"),
        ("OT_PG_DSN", "mysql://x", "postgresql://"),
        ("MQTT_URL", "tcp://broker:1883", "mqtt://"),
        ("MQTT_URL", "mqtt://broker", "host:port"),
        ("MQTT_URL", "mqtt://broker:99999", "host:port"),
        ("OT_MQTT_TOPIC_ROOT", "factory/#", "wildcards"),
        ("OT_MQTT_TOPIC_ROOT", "factory/", "wildcards"),
        ("OT_OFFLINE_AFTER_SECONDS", "soon", "not a number"),
        ("OT_LANDING_RETENTION_DAYS", "0", "at least 1"),
        ("OT_PG_SCHEMA", "Drop Table", "identifier"),
        ("OT_API_ANONYMOUS_READ", "maybe", "true or false"),
        ("OT_API_CORS_ORIGINS", "wall.local:3000", "scheme://host[:port]"),
        ("OT_API_CORS_ORIGINS", "http://a.example/path", "scheme://host[:port]"),
        ("OT_PARTITIONS_START", "last week", "a day (2026-11-22) or an hour"),
        ("OT_PARTITIONS_START", "2026-13-01", "a day (2026-11-22) or an hour"),
    ],
)
def test_bad_configuration_names_the_variable_in_one_line(name, value, fragment):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message and fragment in message and "\n" not in message


@pytest.mark.parametrize("name", ["KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "OT_PG_DSN", "MQTT_URL"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_endpoint_set_but_empty_is_an_error_not_the_local_default(name, value):
    """An unfilled deployment variable must not silently connect to the local stack."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert message.startswith(f"{name} is set but empty: unset it for the local stack (")
    assert "\n" not in message
    Settings.from_env({})  # unset: the local stack's default


def test_partitions_start_is_a_day_or_an_hour_in_utc_and_unset_means_the_lake():
    from datetime import UTC, datetime

    assert Settings.from_env({}).partitions_start is None
    day = Settings.from_env({"OT_PARTITIONS_START": "2026-11-22"}).partitions_start
    assert day == datetime(2026, 11, 22, tzinfo=UTC)
    for hour in ("2026-11-22-13:00", "2026-11-22T13", "2026-11-22T13:45Z"):
        start = Settings.from_env({"OT_PARTITIONS_START": hour}).partitions_start
        assert start == datetime(2026, 11, 22, 13, tzinfo=UTC)


def test_cli_reports_bad_configuration_as_one_line_and_exit_code_2():
    result = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "bench", "--quick", "events"],
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "http://nope"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ot bench: configuration error: REDIS_URL='http://nope' must start with redis:// or rediss://"
    ]
