"""Simulator benchmark: readings/s that one `ot simulate` process produces into the local broker.

Fast-forward, 1,000 machines at 1 s, `default` chaos, Avro-encoded, idempotent acks=all producer,
into a fresh 6-partition topic that is deleted afterwards. For comparison the same process also
measures generation alone and generation + encoding alone (no Kafka), so the share of each stage
shows in one run on a noisy shared machine.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from streaming.settings import Settings, Topics
from streaming.simulator.fleet import build_fleet
from streaming.simulator.generator import VALID, iter_delivered, make_simulator
from streaming.simulator.runner import Options, Simulation
from streaming.simulator.wire import AvroBlockEncoder
from streaming.stack.topics import create_topics, delete_topics

MACHINES = 1000


def _hours_for(readings: int) -> float:
    per_tick = int(build_fleet(MACHINES, 1).n_metrics.sum())
    return readings / per_tick / 3600.0


def _offline_rates(hours: float, start: datetime) -> dict[str, float]:
    sim = make_simulator(MACHINES, start, hours, 1.0, 1, "default")
    encoder = AvroBlockEncoder(sim.fleet)
    t0 = time.perf_counter()
    n = 0
    blocks = []
    for block, _ in iter_delivered(sim, 100_000 // int(sim.fleet.n_metrics.sum())):
        n += len(block)
        blocks.append(block)
    t1 = time.perf_counter()
    for block in blocks:
        encoder.encode(block.take(np.nonzero(block.malformed == VALID)[0]))
    t2 = time.perf_counter()
    return {
        "generate_only_per_s": round(n / (t1 - t0)),
        "encode_only_per_s": round(n / (t2 - t1)),
        "generate_and_encode_per_s": round(n / (t2 - t0)),
    }


def _produce(settings: Settings, hours: float, start: datetime, compression: str) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        readings=f"bench-sim-{suffix}",
        dlq=f"bench-sim-{suffix}.dlq",
        alerts=f"bench-sim-alerts-{suffix}",
        faults=f"bench-sim-faults-{suffix}",
    )
    create_topics(settings.kafka_bootstrap_servers, topics, readings_partitions=6)
    try:
        options = Options(
            machines=MACHINES,
            seed=1,
            chaos="default",
            interval_s=1.0,
            hours=hours,
            start=start,
            compression=compression,
            progress_every_s=1e9,
        )
        return Simulation(
            replace(settings, topics=topics), options, log=lambda *_, **__: None
        ).run()
    finally:
        delete_topics(settings.kafka_bootstrap_servers, topics.all())


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    readings = 200_000 if quick else 2_000_000
    hours = _hours_for(readings)
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    figures: dict[str, Any] = {"machines": MACHINES, "chaos": "default", "partitions": 6}
    summary = _produce(settings, hours, start, "lz4")
    figures.update(
        {
            "readings": summary["readings"],
            "produced_messages": summary["messages_sent"],
            "delivery_failures": summary["delivery_failures"],
            "seconds": summary["elapsed_s"],
            "readings_per_s": summary["readings_per_s"],
            "compression": "lz4",
        }
    )
    if not quick:
        zstd = _produce(settings, hours / 2, start, "zstd")
        figures["zstd_readings_per_s"] = zstd["readings_per_s"]
    figures.update(_offline_rates(hours / (1 if quick else 4), start))
    figures["target_per_s"] = 150_000
    return figures
