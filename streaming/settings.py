"""One settings object, built from the environment.

Every default points at the local stack (`ot stack up`). Bad configuration fails at start-up with
one line that names the variable, the value and what was expected (`SettingsError`). An endpoint
variable (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, OT_PG_DSN, MQTT_URL) that is set but empty is bad
configuration too, not the default: unset it to mean the local stack.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from streaming.api.keys import ApiKey, KeyEntryError, parse_entries

# Non-default loopback ports, so the local stack never clashes with other servers.
DEFAULT_KAFKA_PORT = 19092
DEFAULT_REDIS_PORT = 16379
DEFAULT_PG_PORT = 15432
DEFAULT_MQTT_PORT = 11883


class SettingsError(ValueError):
    """Bad configuration; the message is one line meant for the operator."""


class ServiceUnavailable(RuntimeError):
    """A server or folder a command needs cannot be reached or used at start-up (no Kafka broker
    answers, Redis refuses, the lake is not writable). The message is one line meant for the
    operator, naming the service, the setting and what to do; `ot` prints it and exits 1."""


_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _endpoint(env: Mapping[str, str], name: str, default: str) -> str:
    """Where to connect: unset means the local stack's default, but set and empty is an error
    (an unfilled deployment variable must not silently reach the local stack)."""
    if name in env and not env[name].strip():
        raise SettingsError(f"{name} is set but empty: unset it for the local stack ({default})")
    return _get(env, name, default)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _mqtt_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or parts.scheme != "mqtt" or not parts.hostname or port is None:
        raise SettingsError(f"MQTT_URL={url!r} must be mqtt://[user:password@]host:port")
    return url


def _mqtt_topic_root(root: str) -> str:
    levels = root.split("/")
    if root.startswith("$") or any(not lv or "+" in lv or "#" in lv for lv in levels):
        raise SettingsError(
            f"OT_MQTT_TOPIC_ROOT={root!r} must be topic levels without wildcards, e.g. factory"
        )
    return root


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, str(default).lower())
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} must be true or false")


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?$")


def _cors_origins(value: str) -> tuple[str, ...]:
    """Comma-separated origins (`scheme://host[:port]`, no path) or `*`; empty: no CORS."""
    origins = tuple(o.strip() for o in value.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise SettingsError(
                f"OT_API_CORS_ORIGINS={value!r}: {origin!r} must be * or scheme://host[:port]"
            )
    return origins


def _pg_schema(name: str) -> str:
    if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", name):
        raise SettingsError(f"OT_PG_SCHEMA={name!r} must be a lower-case SQL identifier")
    return name


@dataclass(frozen=True)
class Topics:
    readings: str = "sensor-readings"
    dlq: str = "sensor-readings.dlq"
    alerts: str = "alerts"
    faults: str = "sim.faults"

    def all(self) -> list[str]:
        return [self.readings, self.dlq, self.alerts, self.faults]


@dataclass(frozen=True)
class ApiLimits:
    """Settings of `ot api`: the webhook gateway's limits (rates per API key, 0 = no limit) and
    the operator API's access (anonymous reads, CORS origins)."""

    max_body_bytes: int = 4 * 2**20
    max_readings: int = 10_000
    requests_per_second: float = 1_000.0
    readings_per_second: float = 100_000.0
    # Bucket size = rate x burst (the readings bucket holds at least one full request).
    burst_seconds: float = 2.0
    # How long a request waits for Kafka to acknowledge its readings before answering 503.
    kafka_timeout_seconds: float = 10.0
    # Operator API: GETs (and the stream) without a key, e.g. a wall display on a trusted network.
    anonymous_read: bool = False
    # Browser origins allowed to call the API (CORS); empty: none, `*`: any.
    cors_origins: tuple[str, ...] = ()
    # The dashboard's link to the pipeline's UI (`make run` starts `dagster dev` there).
    dagster_url: str = "http://127.0.0.1:3000"
    # The built dashboard `ot api` serves at `/` (None: dashboard/dist of the repository).
    dashboard_dir: Path | None = None


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    redis_url: str = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
    pg_dsn: str = f"postgresql://ot:ot@127.0.0.1:{DEFAULT_PG_PORT}/ot"
    # The MQTT broker devices publish to (`ot bridge mqtt` subscribes there).
    mqtt_url: str = f"mqtt://127.0.0.1:{DEFAULT_MQTT_PORT}"
    # Plain topics are {root}/{line_id}/{machine_id}/{metric} (docs/mqtt.md).
    mqtt_topic_root: str = "factory"
    lake_dir: Path = Path("lake")
    dagster_home: Path = Path(".dagster")
    api_keys: tuple[ApiKey, ...] = ()
    api: ApiLimits = field(default_factory=ApiLimits)
    topics: Topics = field(default_factory=Topics)
    readings_partitions: int = 6
    # Validation: event time may be at most this far ahead of ingest time ...
    max_future_seconds: float = 300.0
    # ... and at most this old (fast-forward history for backfills stays inside it).
    max_event_age_hours: float = 24.0 * 30
    offline_after_seconds: float = 30.0
    # An alert left unacknowledged this long rises one severity (again after as long); 0: never.
    alert_escalate_after_seconds: float = 900.0
    # Entries kept in the change feed (a Redis Stream, trimmed approximately): how far back a
    # reconnecting WebSocket client can resume.
    change_feed_maxlen: int = 100_000
    landing_retention_days: int = 7
    # Namespaces inside the shared servers (tests use their own; production keeps the defaults).
    redis_prefix: str = "ot:"
    pg_schema: str = "ot"

    @property
    def max_future_ms(self) -> int:
        """Validation window, in the milliseconds `decode_batch` takes."""
        return int(self.max_future_seconds * 1000)

    @property
    def max_age_ms(self) -> int:
        return int(self.max_event_age_hours * 3_600_000)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        bootstrap = _endpoint(env, "KAFKA_BOOTSTRAP_SERVERS", cls.kafka_bootstrap_servers)
        for server in bootstrap.split(","):
            if not _HOSTPORT.match(server.strip()):
                raise SettingsError(
                    f"KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} must be host:port[,host:port...]"
                )
        redis_url = _endpoint(env, "REDIS_URL", cls.redis_url)
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"REDIS_URL={redis_url!r} must start with redis:// or rediss://")
        pg_dsn = _endpoint(env, "OT_PG_DSN", cls.pg_dsn)
        if not pg_dsn.startswith(("postgresql://", "postgres://")) and "=" not in pg_dsn:
            raise SettingsError(
                f"OT_PG_DSN={pg_dsn!r} must be a postgresql:// URL or a key=value DSN"
            )
        mqtt_url = _mqtt_url(_endpoint(env, "MQTT_URL", cls.mqtt_url))
        try:
            api_keys = parse_entries(env.get("OT_API_KEYS", ""))
        except KeyEntryError as exc:
            raise SettingsError(f"OT_API_KEYS: {exc}") from None
        api = ApiLimits(
            max_body_bytes=_int(env, "OT_API_MAX_BODY_BYTES", ApiLimits.max_body_bytes, 1024),
            max_readings=_int(env, "OT_API_MAX_READINGS", ApiLimits.max_readings, 1),
            requests_per_second=_float(env, "OT_API_RATE_REQUESTS", ApiLimits.requests_per_second),
            readings_per_second=_float(env, "OT_API_RATE_READINGS", ApiLimits.readings_per_second),
            burst_seconds=_float(env, "OT_API_RATE_BURST_SECONDS", ApiLimits.burst_seconds, 0.001),
            kafka_timeout_seconds=_float(
                env, "OT_API_KAFKA_TIMEOUT_SECONDS", ApiLimits.kafka_timeout_seconds, 1.0
            ),
            anonymous_read=_bool(env, "OT_API_ANONYMOUS_READ", False),
            cors_origins=_cors_origins(env.get("OT_API_CORS_ORIGINS", "")),
            dagster_url=_get(env, "OT_DAGSTER_URL", ApiLimits.dagster_url),
            dashboard_dir=Path(env["OT_DASHBOARD_DIR"]) if env.get("OT_DASHBOARD_DIR") else None,
        )
        topics = Topics(
            readings=_get(env, "OT_TOPIC_READINGS", Topics.readings),
            dlq=_get(env, "OT_TOPIC_DLQ", Topics.dlq),
            alerts=_get(env, "OT_TOPIC_ALERTS", Topics.alerts),
            faults=_get(env, "OT_TOPIC_FAULTS", Topics.faults),
        )
        return cls(
            kafka_bootstrap_servers=bootstrap,
            redis_url=redis_url,
            pg_dsn=pg_dsn,
            mqtt_url=mqtt_url,
            mqtt_topic_root=_mqtt_topic_root(_get(env, "OT_MQTT_TOPIC_ROOT", "factory")),
            lake_dir=Path(_get(env, "OT_LAKE_DIR", str(cls.lake_dir))),
            dagster_home=Path(_get(env, "DAGSTER_HOME", str(cls.dagster_home))),
            api_keys=api_keys,
            api=api,
            topics=topics,
            readings_partitions=_int(env, "OT_READINGS_PARTITIONS", 6, minimum=1),
            max_future_seconds=_float(env, "OT_MAX_FUTURE_SECONDS", 300.0),
            max_event_age_hours=_float(env, "OT_MAX_EVENT_AGE_HOURS", 24.0 * 30, minimum=1.0),
            offline_after_seconds=_float(env, "OT_OFFLINE_AFTER_SECONDS", 30.0, minimum=1.0),
            alert_escalate_after_seconds=_float(env, "OT_ALERT_ESCALATE_AFTER_SECONDS", 900.0),
            change_feed_maxlen=_int(env, "OT_CHANGE_FEED_MAXLEN", 100_000, minimum=1000),
            landing_retention_days=_int(env, "OT_LANDING_RETENTION_DAYS", 7, minimum=1),
            redis_prefix=_get(env, "OT_REDIS_PREFIX", "ot:"),
            pg_schema=_pg_schema(_get(env, "OT_PG_SCHEMA", "ot")),
        )
