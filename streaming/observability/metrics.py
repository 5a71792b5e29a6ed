"""Prometheus metrics of the long-running processes, served on `--metrics-port` (0: off).

Every metric is defined here, once, so the names are spelt in one place (docs/operations.md
lists them; the Prometheus rules in streaming/stack/monitoring and the Grafana dashboards use
them). The hot paths update them per batch, never per message: a counter increment costs about
half a microsecond, a histogram observation about one.

`ot api --workers N` runs N processes: the parent then points `PROMETHEUS_MULTIPROC_DIR` at a
folder of its own before the workers start, and its metrics port sums what they write there.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from streaming.observability.logs import EventLog
from streaming.settings import ServiceUnavailable

# Default metrics ports, one per command, so the commands of one machine (`make run`) never
# share one. 0 turns the endpoint off.
METRICS_PORTS = {
    "api": 9400,
    "land": 9401,
    "state": 9402,
    "bridge-mqtt": 9403,
    "simulate": 9404,
}
# The Prometheus job of each command: the service names of docker-compose.yml.
SCRAPE_JOBS = {
    "api": "api",
    "land": "lander",
    "state": "state-writer",
    "bridge-mqtt": "mqtt-bridge",
    "simulate": "simulator",
}
DEFAULT_HOST = "127.0.0.1"

# Latency buckets (seconds) from 1 ms to 10 s.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- consumers (streaming/kafka/runtime.py): the lander and the state writer ----------------------
CONSUMED = Counter("ot_consumer_messages", "Messages consumed from the readings topic", ["group"])
BATCH_SECONDS = Histogram(
    "ot_consumer_batch_seconds",
    "Time from a consumed batch's arrival to its hand-over to the sink (decode, validate, "
    "dead-letter, write)",
    ["group"],
    buckets=_SECONDS,
)
LAG = Gauge(
    "ot_consumer_lag_messages",
    "Messages behind the partition's high watermark (from librdkafka statistics)",
    ["group", "partition"],
)
ASSIGNED = Gauge("ot_consumer_assigned_partitions", "Partitions assigned to this member", ["group"])
LAST_BATCH = Gauge(
    "ot_consumer_last_batch_timestamp_seconds", "Wall clock of the last consumed batch", ["group"]
)
REJOINS = Counter("ot_consumer_rejoins", "Fresh Kafka clients after a fatal error", ["group"])
SINK_UNAVAILABLE = Counter(
    "ot_consumer_sink_unavailable", "Times the sink's store could not be reached", ["group"]
)
# Every dead letter of the platform, by the stage that sent it and the contract's reason code.
DEAD_LETTERS = Counter(
    "ot_dead_letters", "Invalid readings sent to the dead-letter topic", ["stage", "reason"]
)

# -- lander ---------------------------------------------------------------------------------------
LANDED_ROWS = Counter("ot_lander_rows_landed", "Rows in landed Parquet files")
LANDED_FILES = Counter("ot_lander_files_landed", "Parquet files landed")
FLUSH_SECONDS = Histogram(
    "ot_lander_flush_seconds",
    "From a buffer's hand-over to its file's rename (encode, fsync, rename)",
    buckets=_SECONDS,
)
FENCED = Counter("ot_lander_fenced", "Buffers dropped because another lander landed them first")

# -- state writer ---------------------------------------------------------------------------------
STATE_APPLIED = Counter("ot_state_readings_applied", "Readings applied to the Redis live state")
STATE_INVALID = Counter(
    "ot_state_readings_invalid", "Invalid readings the state writer skipped", ["reason"]
)
STATE_ALERT_EVENTS = Counter("ot_state_alert_events", "Alert events raised (opened, cleared, ...)")
STATE_CONFLICTS = Counter(
    "ot_state_transaction_conflicts",
    "Redis MULTI/EXEC transactions not applied: the offsets hash changed under the WATCH or "
    "already held the batch (stale)",
    ["reason"],
)

# -- HTTP API -------------------------------------------------------------------------------------
HTTP_SECONDS = Histogram(
    "ot_http_request_duration_seconds",
    "HTTP requests by route template, method and status (its _count counts requests)",
    ["route", "method", "status"],
    buckets=_SECONDS,
)
WEBSOCKET_CLIENTS = Gauge(
    "ot_websocket_clients", "Open WebSocket connections", multiprocess_mode="livesum"
)
GATEWAY_READINGS = Counter(
    "ot_gateway_readings", "Readings posted to the webhook, by outcome", ["outcome"]
)

# -- MQTT bridge ----------------------------------------------------------------------------------
MQTT_MESSAGES = Counter(
    "ot_mqtt_messages",
    "MQTT messages handled by the bridge, by outcome (forwarded, dead_lettered, ignored)",
    ["outcome"],
)

# -- simulator ------------------------------------------------------------------------------------
SIM_READINGS = Counter("ot_simulator_readings", "Readings the simulator produced")
SIM_FAULTS = Counter("ot_simulator_faults", "Faults injected (ground truth)", ["fault_type"])


class _Off:
    """A metric that records nothing (`disabled`)."""

    def labels(self, *_: Any, **__: Any) -> _Off:
        return self

    def inc(self, *_: Any, **__: Any) -> None:
        pass

    dec = set = observe = remove = inc


ENABLED = True  # False inside `disabled()`: no metric updates, no librdkafka statistics


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Every metric of this module a no-op inside (for what is built inside: the runtime binds
    its labelled metrics when made). The benchmark's A/B of what the instrumentation costs."""
    global ENABLED
    saved = {
        name: metric for name, metric in globals().items() if isinstance(metric, MetricWrapperBase)
    }
    globals().update(dict.fromkeys(saved, _Off()))
    ENABLED = False
    try:
        yield
    finally:
        globals().update(saved)
        ENABLED = True


def add_metrics_options(parser: argparse.ArgumentParser, command: str) -> None:
    """`--metrics-port` (default per command, 0: off) and `--metrics-host`."""
    default = METRICS_PORTS[command]
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"serve Prometheus metrics at http://HOST:PORT/metrics (default {default}; 0: off)",
    )
    parser.add_argument(
        "--metrics-host",
        default=DEFAULT_HOST,
        help="address of the metrics endpoint (default %(default)s; 0.0.0.0 in containers)",
    )
    parser.set_defaults(metrics_command=command)


def serve_metrics(
    args: argparse.Namespace, log: EventLog, registry: CollectorRegistry | None = None
) -> int | None:
    """Start the metrics endpoint the options ask for; returns its port (None: off).

    A port given on the command line that is taken is an error (one line, exit 1); the default
    port taken (a second process of the same command on this machine) only loses the metrics,
    with a warning, so tests and ad-hoc runs beside `make run` keep working."""
    explicit = args.metrics_port is not None
    port = args.metrics_port if explicit else METRICS_PORTS[args.metrics_command]
    if port == 0:
        return None
    kwargs: dict[str, Any] = {"addr": args.metrics_host}
    if registry is not None:
        kwargs["registry"] = registry
    try:
        start_http_server(port, **kwargs)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or explicit:
            raise ServiceUnavailable(
                f"metrics: cannot serve on {args.metrics_host}:{port} ({exc.strerror or exc}); "
                "pass another --metrics-port, or 0 to turn the endpoint off"
            ) from None
        log.warning(
            "metrics_off",
            port=port,
            reason="port in use (another process of this command?); pass --metrics-port",
        )
        return None
    log("metrics", url=f"http://{args.metrics_host}:{port}/metrics")
    return port


def multiprocess_registry(env: Mapping[str, str] | None = None) -> tuple[CollectorRegistry, str]:
    """For a server with several worker processes: a fresh `PROMETHEUS_MULTIPROC_DIR` (set in
    this process's environment, so the workers it starts inherit it) and a registry that sums
    what the workers write there. Returns the registry and the folder (remove it at exit)."""
    from prometheus_client import multiprocess

    folder = tempfile.mkdtemp(prefix="ot-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    return registry, folder


def remove_multiprocess_folder(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
