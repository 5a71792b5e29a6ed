"""Healthchecks of the long-running `ot` workers in docker-compose.yml (exit 0 = healthy).

The simulator, lander and state writer have no HTTP port, and "the process is alive" says
nothing about a consumer that is stuck. So each probe measures the worker's own progress counter
and the backlog waiting for it, and compares with the previous probe (a small state file in the
container): a worker is healthy while it is caught up or still moving forward.

- simulator: progress = messages in `sensor-readings` (sum of high watermarks); it must grow.
- lander: progress = offsets landed in the lake (the file names are the source of truth).
- state-writer: progress = offsets applied to Redis (`{prefix}offsets:{group}` hashes).
- mqtt-bridge: progress = MQTT messages acknowledged, backlog = received but not yet
  acknowledged, from the heartbeat the bridge writes (`--status-file`); a heartbeat older than
  a minute, or one that says the bridge is not connected to the broker, is unhealthy.

Configuration is the project's own: `Settings.from_env()` (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL,
OT_LAKE_DIR, OT_TOPIC_READINGS, OT_REDIS_PREFIX).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streaming.settings import Settings

# A consumer this close to the end of the topic is caught up, even if it did not move since the
# last probe (there was simply nothing new, or less than one micro-batch).
MAX_CAUGHT_UP_LAG = 10_000
STATE_DIR = Path("/tmp")


@dataclass(frozen=True)
class Probe:
    progress: int  # monotonic counter of work done (messages produced / landed / applied)
    backlog: int  # messages waiting for the worker (0 for the simulator)


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reason: str


def judge(previous: Probe | None, current: Probe, *, needs_growth: bool, max_lag: int) -> Verdict:
    """Pure decision. A producer must keep producing; a consumer must be caught up or advancing.
    The first probe has nothing to compare with and only proves the dependencies answer."""
    if previous is None:
        return Verdict(True, f"first probe: progress={current.progress}")
    moved = current.progress - previous.progress
    if needs_growth:
        ok = moved > 0
        return Verdict(ok, f"produced {moved} messages since the last probe")
    if current.backlog <= max_lag:
        return Verdict(True, f"caught up: backlog={current.backlog} <= {max_lag}")
    return Verdict(moved > 0, f"backlog={current.backlog}, advanced {moved} since the last probe")


def _watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    from confluent_kafka import Consumer, TopicPartition

    from streaming.kafka.config import reader_config

    consumer = Consumer(reader_config(bootstrap, "healthcheck"))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = meta.topics[topic].partitions
        if not partitions:
            raise RuntimeError(f"topic {topic!r} has no partitions")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in sorted(partitions)
        }
    finally:
        consumer.close()


def _consumer_probe(marks: dict[int, tuple[int, int]], done: dict[int, int]) -> Probe:
    """`done[p]` = next offset the worker will read in partition p (missing = nothing yet)."""
    position = {p: max(done.get(p, low), low) for p, (low, _high) in marks.items()}
    backlog = sum(max(high - position[p], 0) for p, (_low, high) in marks.items())
    return Probe(progress=sum(position.values()), backlog=backlog)


SERVICES = ("simulator", "lander", "state-writer", "mqtt-bridge")
BRIDGE_STATUS_FILE = Path("/tmp/ot-bridge-status.json")  # `ot bridge mqtt --status-file`
BRIDGE_STALE_AFTER_S = 60.0


def bridge_probe(status: dict[str, Any], now: float) -> Probe:
    """The bridge's heartbeat -> a probe; raises when it is stale or disconnected."""
    age = now - float(status["ts"])
    if age > BRIDGE_STALE_AFTER_S:
        raise RuntimeError(f"heartbeat is {age:.0f} s old")
    if not status.get("connected"):
        raise RuntimeError("not connected to the MQTT broker")
    return Probe(progress=int(status["acknowledged"]), backlog=int(status["unacked"]))


def measure(service: str, settings: Settings) -> Probe:
    if service not in SERVICES:
        raise SystemExit(f"usage: healthcheck.py {'|'.join(SERVICES)} (got {service!r})")
    if service == "mqtt-bridge":
        import time

        return bridge_probe(json.loads(BRIDGE_STATUS_FILE.read_text()), time.time())
    marks = _watermarks(settings.kafka_bootstrap_servers, settings.topics.readings)
    if service == "simulator":
        return Probe(progress=sum(high for _low, high in marks.values()), backlog=0)
    if service == "lander":
        from streaming.lake import Lake

        lake = Lake(settings.lake_dir)
        landed = {p: lake.next_offset(p) for p in marks}
        return _consumer_probe(marks, {p: o for p, o in landed.items() if o is not None})
    if service == "state-writer":
        import redis

        from streaming.redis_keys import RedisKeys

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        applied: dict[int, int] = {}
        for key in client.scan_iter(match=RedisKeys(settings.redis_prefix).scan_offsets):
            for field, value in client.hgetall(key).items():
                partition, offset = int(field), int(value) + 1  # stored: last applied offset
                applied[partition] = max(applied.get(partition, 0), offset)
        return _consumer_probe(marks, applied)
    raise AssertionError(service)


def main(argv: list[str]) -> int:
    service = argv[0] if argv else ""
    state_file = STATE_DIR / f"ot-health-{service}.json"
    try:
        from streaming.settings import Settings

        current = measure(service, Settings.from_env())
    except Exception as exc:  # any failure to measure is unhealthy, with the reason in the log
        print(f"{service}: unhealthy: {type(exc).__name__}: {exc}")
        return 1
    previous = None
    if state_file.exists():
        previous = Probe(**json.loads(state_file.read_text()))
    verdict = judge(
        previous, current, needs_growth=service == "simulator", max_lag=MAX_CAUGHT_UP_LAG
    )
    state_file.write_text(json.dumps(current.__dict__))
    print(f"{service}: {'healthy' if verdict.healthy else 'unhealthy'}: {verdict.reason}")
    return 0 if verdict.healthy else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
