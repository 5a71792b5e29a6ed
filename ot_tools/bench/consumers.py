"""Consumers benchmark: lander and state writer rates as ratios to a plain consume loop that only
reads the same messages, in one run, each with and without its Prometheus metrics (A/B); then
event -> Redis latency at a fixed produced rate."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import redis
from confluent_kafka import Consumer

from ot_tools import drills
from streaming.consumers import lander as lander_
from streaming.consumers import state_writer
from streaming.consumers.lander import Lander
from streaming.consumers.state_writer import StateWriter
from streaming.events import encode_avro_many, event_id_for
from streaming.kafka.config import consumer_config, producer_config
from streaming.kafka.lifecycle import Bounds, JsonLog, StopFlag
from streaming.observability import metrics
from streaming.observability.logs import log_context
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings, Topics
from streaming.stack.topics import create_topics, delete_topics

CHUNK = 200_000
MACHINES = 500


def _topics(tag: str) -> Topics:
    suffix = f"{tag}-{uuid.uuid4().hex[:8]}"
    return Topics(
        readings=f"bench-readings-{suffix}",
        dlq=f"bench-readings-{suffix}.dlq",
        alerts=f"bench-alerts-{suffix}",
        faults=f"bench-faults-{suffix}",
    )


def _raw_rate(settings: Settings, n: int) -> float:
    """The ceiling: a confluent-kafka loop that only reads every message's value."""
    consumer = Consumer(consumer_config(settings, f"bench-raw-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([settings.topics.readings])
    seen, nbytes, first = 0, 0, None
    while seen < n:
        messages = consumer.consume(num_messages=20_000, timeout=1.0)
        if messages and first is None:
            first = time.monotonic()
        for m in messages:
            if m.error() is None:
                value = m.value()
                nbytes += len(value) if value else 0
                seen += 1
    rate = n / (time.monotonic() - (first or time.monotonic()))
    consumer.close()
    return rate


def _rate(stats: Any) -> float:
    return float(stats.consumed / (stats.finished_at - stats.first_batch_at))


def _latency(settings: Settings, seconds: float, per_second: int) -> dict[str, float]:
    """Produce at `per_second` with ts = produce time; measure when the state writer applied it."""
    from confluent_kafka import Producer

    writer = StateWriter(
        settings,
        replace(state_writer.MEMBERSHIP, group=f"bench-latency-{uuid.uuid4().hex[:8]}"),
        measure_latency=True,
        log=JsonLog("state-writer", open("/dev/null", "w")),  # noqa: SIM115
    )
    runner = threading.Thread(
        target=writer.run, args=(Bounds(duration=seconds + 6), StopFlag()), daemon=True
    )
    runner.start()
    time.sleep(4)  # joined and idle before the clock starts
    producer = Producer(producer_config(settings, **{"linger.ms": 1}))
    template = drills.readings(per_second // 20, machines=MACHINES)
    started = time.monotonic()
    seq = 0
    while time.monotonic() - started < seconds:
        now_ms = int(time.time() * 1000)
        records = []
        for i in range(len(template)):
            machine = f"m{i % MACHINES:03d}"
            records.append(
                {
                    "event_id": event_id_for(machine, seq),
                    "machine_id": machine,
                    "machine_type": "MOTOR",
                    "line_id": "line-0",
                    "metric": "temperature",
                    "unit": "°C",
                    "value": 60.0,
                    "ts": now_ms,
                    "seq": seq,
                    "status_code": 0,
                    "quality": "GOOD",
                }
            )
            seq += 1
        for r, value in zip(records, encode_avro_many(records), strict=True):
            producer.produce(
                settings.topics.readings, value=value, key=str(r["machine_id"]).encode()
            )
        producer.poll(0)
        tick_end = started + (seq / (per_second // 20 * 20)) * 1.0
        delay = tick_end - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    produced_rate = seq / (time.monotonic() - started)
    producer.flush(30)
    runner.join(timeout=seconds + 30)
    lat = np.concatenate(writer.latencies) if writer.latencies else np.array([np.nan])
    return {
        "latency_rate_produced": round(produced_rate),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 1),
        "latency_samples": int(lat.size),
    }


def _run_lander(
    settings: Settings, n: int, log: JsonLog, instrumented: bool
) -> tuple[float, dict[str, Any]]:
    """One lander over the topic, in a group of its own: (messages/s, its summary)."""
    joining = replace(lander_.MEMBERSHIP, group=f"bench-lander-{uuid.uuid4().hex[:8]}")
    with contextlib.nullcontext() if instrumented else metrics.disabled():
        lander = Lander(settings, joining, log=log)
        summary = lander.run(Bounds(max_messages=n), StopFlag())
    return _rate(lander.runtime.stats), summary


def _run_state_writer(
    settings: Settings, n: int, log: JsonLog, instrumented: bool
) -> tuple[float, dict[str, Any]]:
    joining = replace(state_writer.MEMBERSHIP, group=f"bench-state-{uuid.uuid4().hex[:8]}")
    with contextlib.nullcontext() if instrumented else metrics.disabled():
        writer = StateWriter(settings, joining, log=log)
        summary = writer.run(Bounds(max_messages=n), StopFlag())
    return _rate(writer.runtime.stats), summary


AB_ORDER = (False, True, True, False, False, True, True, False)  # False: metrics off (A)


def _runs(rates: dict[bool, list[float]]) -> str:
    """Each run's rate in order, e.g. 'A 101k B 99k ...', so the noise shows beside the median."""
    taken = {k: iter(v) for k, v in rates.items()}
    return " ".join(f"{'B' if on else 'A'} {next(taken[on]) / 1000:.0f}k" for on in AB_ORDER)


def _instrumentation_us_per_batch(batches: int = 100_000) -> float:
    """What the metrics cost one batch, measured alone: every update a lander and a state writer
    batch makes (consumer counters, batch histogram, last-batch gauge, log context, landed rows,
    files and flush time, applied readings, a dead-letter reason), summed, in microseconds."""
    consumed = metrics.CONSUMED.labels("bench")
    batch = metrics.BATCH_SECONDS.labels("bench")
    last = metrics.LAST_BATCH.labels("bench")
    started = time.perf_counter()
    for i in range(batches):
        with log_context(batch=i):
            consumed.inc(20_000)
        batch.observe(0.05)
        last.set(time.time())
        metrics.LANDED_FILES.inc()
        metrics.LANDED_ROWS.inc(20_000)
        metrics.FLUSH_SECONDS.observe(0.01)
        metrics.STATE_APPLIED.inc(20_000)
        metrics.DEAD_LETTERS.labels("bench", "OUT_OF_RANGE").inc(3)
    return (time.perf_counter() - started) / batches * 1e6


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    n = 200_000 if quick else 2_000_000
    topics = _topics("consumers")
    lake = Path(tempfile.mkdtemp(prefix="ot-bench-lake-"))
    prefix = f"ot-bench-{uuid.uuid4().hex[:8]}:"
    bench = replace(settings, topics=topics, lake_dir=lake, redis_prefix=prefix)
    create_topics(settings.kafka_bootstrap_servers, topics, readings_partitions=6)
    quiet = JsonLog("bench", open("/dev/null", "w"))  # noqa: SIM115
    try:
        for start in range(0, n, CHUNK):
            size = min(CHUNK, n - start)
            drills.produce(
                bench, topics.readings, drills.readings(size, machines=MACHINES, seed=start)
            )
        raw = _raw_rate(bench, n)
        # The metrics' cost as an A/B in this run: each consumer without instrumentation (A)
        # and with it (B), alternating A B B A A B B A over a quarter of the topic each, so that
        # drift in the machine's load cancels; the median of each arm.
        part = n // 4
        land_rates: dict[bool, list[float]] = {False: [], True: []}
        state_rates: dict[bool, list[float]] = {False: [], True: []}
        for i, instrumented in enumerate(AB_ORDER):
            rate, land_summary = _run_lander(
                replace(bench, lake_dir=lake / f"run{i}"), part, quiet, instrumented
            )
            land_rates[instrumented].append(rate)
        for i, instrumented in enumerate(AB_ORDER):
            rate, state_summary = _run_state_writer(
                replace(bench, redis_prefix=f"{prefix}run{i}:"), part, quiet, instrumented
            )
            state_rates[instrumented].append(rate)
        land, land_off = (float(np.median(land_rates[k])) for k in (True, False))
        state, state_off = (float(np.median(state_rates[k])) for k in (True, False))
        lat_topics = _topics("latency")
        create_topics(settings.kafka_bootstrap_servers, lat_topics, readings_partitions=6)
        try:
            latency = _latency(
                replace(bench, topics=lat_topics, redis_prefix=prefix + "lat:"),
                seconds=5 if quick else 15,
                per_second=20_000,
            )
        finally:
            delete_topics(settings.kafka_bootstrap_servers, lat_topics.all())
        return {
            "messages": n,
            "raw_consume_per_s": round(raw),
            "lander_per_s": round(land),
            "lander_ratio": round(land / raw, 3),
            "lander_files": land_summary["files"],
            "lander_per_s_without_metrics": round(land_off),
            "lander_metrics_ratio": round(land / land_off, 3),
            "lander_ab_runs_per_s": _runs(land_rates),
            "state_writer_per_s": round(state),
            "state_writer_ratio": round(state / raw, 3),
            "state_writer_per_s_without_metrics": round(state_off),
            "state_writer_metrics_ratio": round(state / state_off, 3),
            "state_writer_ab_runs_per_s": _runs(state_rates),
            "metrics_us_per_batch": round(_instrumentation_us_per_batch(), 2),
            "state_batches": state_summary["batches"],
            "state_batch_ms_p50": state_summary["batch_ms_p50"],
            **latency,
        }
    finally:
        delete_topics(settings.kafka_bootstrap_servers, topics.all())
        client = redis.Redis.from_url(settings.redis_url)
        for key in client.scan_iter(RedisKeys(prefix).scan_all):
            client.delete(key)
        shutil.rmtree(lake, ignore_errors=True)
