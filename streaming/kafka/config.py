"""Kafka client settings: the one place they are defined (consumers, producers), and the lag the
consumers report.

Offsets are never auto-committed or auto-stored: each consumer commits only what its sink already
holds (the lake's files, the Redis offsets hash), and those sinks, not the group, decide where a
partition resumes. Static membership (`group.instance.id`) lets a process restarted after SIGKILL
take its partitions back at once instead of waiting for the dead member's session to expire.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streaming.observability.logs import kafka_logger
from streaming.settings import Settings

# The one size limit, end to end: the brokers accept records of up to this many bytes
# (`message.max.bytes` of the local stack's brokers and of docker-compose.yml), every producer may
# send that much (librdkafka's default is 1,000,000) and a consumer fetches that much from one
# partition at once.
MESSAGE_MAX_BYTES = 10 * 2**20
# A dead letter is the consumed message plus its headers: it must leave room for the record and
# batch overhead, and is cut to fit when it does not (`streaming.events.fit_dead_letter`).
DEAD_LETTER_MAX_BYTES = MESSAGE_MAX_BYTES - 16 * 1024


# How far a consumer reads ahead of what it processes, in MiB of message payload. librdkafka
# fetches into one local queue per client; what it holds costs about three times the payload in
# memory (its per-message headers and the fetch buffers they point into), so this bounds a
# catching-up consumer's memory. 32 MiB is ~500,000 readings ahead: consuming 20,000 per call
# never waits for a fetch, and the queue refills while the batch is processed.
PREFETCH_MB = 32


def prefetch_config(prefetch_mb: int) -> dict[str, Any]:
    """The read-ahead bound: the queue's size in bytes, a per-partition message floor, and fetch
    responses of at most the same size (a fetch is added whole, so the queue holds at most about
    twice the bound). Smaller fetches cost throughput: with 16 MiB fetches and a floor of 9,600
    messages per partition a bare loop read 230,000 readings/s, with 32 MiB and 200,000 it read
    555,000/s (1.5 M readings, one broker, quiet machine, 2026-12-07)."""
    if prefetch_mb < 1:
        raise ValueError("prefetch must be at least 1 MiB")
    return {
        "queued.max.messages.kbytes": prefetch_mb * 1024,
        "queued.min.messages": max(1_000, prefetch_mb * 6_250),
        "fetch.max.bytes": max(MESSAGE_MAX_BYTES, prefetch_mb * 2**20),
    }


def consumer_config(
    settings: Settings,
    group: str,
    *,
    instance_id: str | None = None,
    session_timeout_ms: int = 10_000,
    max_poll_interval_ms: int = 300_000,
    prefetch_mb: int = PREFETCH_MB,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(500, session_timeout_ms // 5),
        "max.poll.interval.ms": max_poll_interval_ms,
        # Eager rebalancing: a revoked partition is flushed before anyone else can get it.
        "partition.assignment.strategy": "range",
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 100,
        "max.partition.fetch.bytes": MESSAGE_MAX_BYTES,
        **prefetch_config(prefetch_mb),
        "logger": kafka_logger(),
    }
    if instance_id:
        config["group.instance.id"] = instance_id
    return config


def reader_config(bootstrap: str, purpose: str) -> dict[str, Any]:
    """A reader that assigns partitions itself (watermarks, whole-topic reads, probes): a group id
    of its own that never commits, so it neither joins nor disturbs the consumers' groups."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": f"ot-{purpose}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "max.partition.fetch.bytes": MESSAGE_MAX_BYTES,
        "logger": kafka_logger(),
    }


def admin_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """An admin client (topics, group descriptions, probes)."""
    return {"bootstrap.servers": bootstrap, "logger": kafka_logger(), **extra}


def _idempotent(bootstrap: str) -> dict[str, Any]:
    # No duplicates or reordering from retries, and a delivery is confirmed only once every
    # in-sync replica has it.
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "message.max.bytes": MESSAGE_MAX_BYTES,
        # librdkafka's own lines through the one log, rate-limited (not raw on stderr).
        "logger": kafka_logger(),
    }


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a confirmed dead letter or alert is really in the log."""
    config = _idempotent(settings.kafka_bootstrap_servers)
    config["linger.ms"] = 5
    config.update(extra)
    return config


def bulk_producer_config(
    bootstrap: str,
    compression: str = "lz4",
    client_id: str = "ot-simulate",
    queue_messages: int = 1_000_000,
) -> dict[str, Any]:
    """The simulator's producer: idempotent, large compressed batches, a local queue of
    `queue_messages` (deep for fast-forward; bounded in real time, where a full queue holds the
    generator back instead of growing), and delivery reports for failures only (a callback per
    delivered message would cost about a microsecond each)."""
    config = _idempotent(bootstrap)
    config.update(
        {
            "compression.type": compression,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "batch.num.messages": 100_000,
            "queue.buffering.max.messages": queue_messages,
            "queue.buffering.max.kbytes": 1_048_576,
            "delivery.report.only.error": True,
            "client.id": client_id,
        }
    )
    return config


def lag(consumer: Consumer, positions: dict[int, int], topic: str) -> int:
    """Messages behind the high watermark, summed over the given partitions (next offset each)."""
    behind = 0
    for partition, next_offset in positions.items():
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=5.0, cached=False
            )
        except Exception:
            continue
        if next_offset < 0:
            next_offset = 0
        behind += max(0, high - next_offset)
    return behind
