"""Is the Kafka cluster there? A short metadata request before a command starts its real work.

Without it, a command pointed at a broker that is not running waits for its clients' own
timeouts (30 s and more) while librdkafka prints a line per reconnect attempt. The probe asks for
the cluster's metadata once, with its own logging silenced, and turns "no answer" into one line
for the operator (`ServiceUnavailable`).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streaming.kafka.config import admin_config
from streaming.settings import ServiceUnavailable

PROBE_TIMEOUT_S = 5.0


def _quiet(err: KafkaError) -> None:
    """Connection errors while probing are the probe's answer, not news for stderr."""


def require_kafka(bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """Raise `ServiceUnavailable` unless a broker at `bootstrap` answers a metadata request
    within `timeout_s`; returns how many brokers the cluster lists."""
    config = admin_config(bootstrap)
    config.update(
        {
            "log_level": 0,  # librdkafka's own lines (FAIL per reconnect) stay out of stderr
            "error_cb": _quiet,
            "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
        }
    )
    try:
        metadata = AdminClient(config).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc
        raise ServiceUnavailable(
            f"kafka: no broker answered at {bootstrap} within {timeout_s:g} s ({reason}); "
            "start the local stack with `ot stack up` (or `make up`), or set "
            "KAFKA_BOOTSTRAP_SERVERS to a running cluster"
        ) from None
    return len(metadata.brokers)
