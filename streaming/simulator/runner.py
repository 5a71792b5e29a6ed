"""`ot simulate` run loop: generate blocks, hold back late messages, encode, produce, report.

Two clocks. Fast-forward (`--hours`): event time runs from `--start` as fast as the broker takes
it, and "now" for the delivery queue is the newest event time generated. Real time: ticks are
generated when the wall clock reaches them (event time = now), paced by `--rate`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from streaming.observability import metrics
from streaming.observability.logs import EventLog
from streaming.settings import Settings
from streaming.simulator.chaos import FAULT_TYPES, MALFORMED_KINDS, Fault, chaos_rates
from streaming.simulator.fleet import build_fleet
from streaming.simulator.generator import (
    VALID,
    DeliveryQueue,
    FleetSimulator,
    ReadingBlock,
    align_ms,
    malformed_fault,
)
from streaming.simulator.mqtt import SimulatorMqtt
from streaming.simulator.producer import SimulatorProducer
from streaming.simulator.wire import AvroBlockEncoder, MqttBlockEncoder

HOUR_MS = 3_600_000
BLOCK_READINGS = 100_000  # readings generated per block in fast-forward
# Real time: at most this many messages wait in the producer's queue (two blocks); when the
# brokers or the CPU cannot keep up, the generator waits instead of the queue growing (a deep
# queue held 2 GB at 100,000 readings/s). Fast-forward keeps librdkafka's deep queue.
REAL_TIME_QUEUE_MESSAGES = 2 * BLOCK_READINGS


@dataclass
class Options:
    machines: int = 10
    seed: int = 42
    chaos: str = "default"
    rates: dict[str, float] = field(default_factory=dict)
    interval_s: float = 1.0
    rate: float | None = None  # real time: readings/s across the fleet (sets the interval)
    duration_s: float = 60.0  # real time: 0 = until interrupted
    start: datetime | None = None  # fast-forward start (aligned to the hour when defaulted)
    hours: float | None = None  # set = fast-forward mode
    compression: str = "lz4"
    progress_every_s: float = 2.0
    sink: str = "kafka"  # or "mqtt": readings published to the broker, ground truth to Kafka
    early_faults: int = 3  # real time: faults in the first two minutes (0 = off)

    @property
    def fast_forward(self) -> bool:
        return self.hours is not None


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunStats:
    """Counts for the summary line; every message sent is counted in exactly one bucket."""

    readings: int = 0  # valid readings produced, duplicates included
    duplicates: int = 0
    late_after_hour: int = 0  # readings delivered after their event hour was over
    malformed: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    machine_records: int = 0
    first_ts: int | None = None
    last_ts: int | None = None

    def add_block(self, block: ReadingBlock) -> None:
        valid = block.malformed == VALID
        self.readings += int(valid.sum())
        self.duplicates += int((block.duplicate & valid).sum())
        self.late_after_hour += int(
            ((block.deliver_ms // HOUR_MS > block.ts // HOUR_MS) & valid).sum()
        )
        for kind, n in zip(*np.unique(block.malformed[~valid], return_counts=True), strict=True):
            self.malformed[MALFORMED_KINDS[int(kind)]] += int(n)
        if len(block):
            lo, hi = int(block.ts.min()), int(block.ts.max())
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)


class Simulation:
    """One run: a simulator, its delivery queue, an encoder and a producer."""

    def __init__(
        self,
        settings: Settings,
        options: Options,
        producer: SimulatorProducer | None = None,
        log: Callable[..., None] | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.fleet = build_fleet(options.machines, options.seed)
        per_tick = int(self.fleet.n_metrics.sum())
        if options.fast_forward:
            interval_ms = max(1, round(options.interval_s * 1000))
            if options.start is None:
                start = (now_ms() - round(options.hours * HOUR_MS)) // HOUR_MS * HOUR_MS  # type: ignore[operator]
            else:
                s = options.start if options.start.tzinfo else options.start.replace(tzinfo=UTC)
                start = int(s.timestamp() * 1000)
            start = align_ms(start, interval_ms)
            end: int | None = start + round(options.hours * HOUR_MS)  # type: ignore[operator]
        else:
            if options.rate is not None:
                if options.rate <= 0:
                    raise ValueError("--rate must be positive")
                interval_ms = max(1, round(1000 * per_tick / options.rate))
            else:
                interval_ms = max(1, round(options.interval_s * 1000))
            start = align_ms(now_ms(), interval_ms)
            end = start + round(options.duration_s * 1000) if options.duration_s > 0 else None
        self.sim = FleetSimulator(
            fleet=self.fleet,
            start_ms=start,
            interval_ms=interval_ms,
            rates=chaos_rates(options.chaos, options.rates),
            end_ms=end,
            # a live run shows what the platform finds at once; history keeps its plain rates
            early_faults=0 if options.fast_forward else options.early_faults,
        )
        self.per_tick = per_tick
        self.queue = DeliveryQueue()
        self.encoder = AvroBlockEncoder(self.fleet)
        self.producer = producer or SimulatorProducer(
            settings.kafka_bootstrap_servers,
            options.compression,
            queue_messages=1_000_000 if options.fast_forward else REAL_TIME_QUEUE_MESSAGES,
        )
        self.mqtt: SimulatorMqtt | None = None
        self.mqtt_encoder: MqttBlockEncoder | None = None
        if options.sink == "mqtt":
            self.mqtt = SimulatorMqtt(settings.mqtt_url)
            self.mqtt_encoder = MqttBlockEncoder(self.fleet, settings.mqtt_topic_root)
        self.stats = RunStats()
        self.log = log or EventLog("simulator")  # log(event, **fields)
        self._started = time.perf_counter()
        self._last_progress = self._started

    # -- sending -----------------------------------------------------------------------------
    def _send_faults(self, faults: list[Fault]) -> None:
        topic = self.settings.topics.faults
        for fault in faults:
            self.producer.send_json(topic, fault.machine_id, fault.record())
            self.stats.faults[fault.fault_type] += 1
            metrics.SIM_FAULTS.labels(fault.fault_type).inc()

    def _send_block(self, block: ReadingBlock) -> None:
        if not len(block):
            return
        topic = self.settings.topics.readings
        valid = block.malformed == VALID
        if self.mqtt is not None and self.mqtt_encoder is not None:
            if not valid.all():
                bad = block.take(np.nonzero(~valid)[0])
                self._send_faults([malformed_fault(self.fleet, bad, i) for i in range(len(bad))])
            self.mqtt.send(self.mqtt_encoder.messages(block))
            self._count(block)
            return
        if valid.all():
            values = self.encoder.encode(block)
        else:
            good_rows, bad_rows = np.nonzero(valid)[0], np.nonzero(~valid)[0]
            payloads = np.empty(len(block), dtype=object)
            payloads[good_rows] = self.encoder.encode(block.take(good_rows))
            bad = block.take(bad_rows)
            payloads[bad_rows] = self.encoder.malformed(bad)
            values = payloads.tolist()
            self._send_faults([malformed_fault(self.fleet, bad, i) for i in range(len(bad))])
        self.producer.send_many(topic, self.encoder.key_list(block), values)
        self._count(block)

    def _count(self, block: ReadingBlock) -> None:
        before = self.stats.readings
        self.stats.add_block(block)
        metrics.SIM_READINGS.inc(self.stats.readings - before)

    def _progress(self, force: bool = False) -> None:
        t = time.perf_counter()
        if not force and t - self._last_progress < self.options.progress_every_s:
            return
        self._last_progress = t
        elapsed = t - self._started
        s = self.stats
        event = (
            datetime.fromtimestamp(s.last_ts / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if s.last_ts is not None
            else "-"
        )
        self.log(
            "progress",
            readings=s.readings,
            rate=round(s.readings / max(elapsed, 1e-9)),
            event_time=event,
            faults=sum(s.faults.values()),
            malformed=sum(s.malformed.values()),
            delivery_failures=self.producer.failed,
        )

    # -- the two clocks ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        for record in self.fleet.records():
            self.producer.send_json(self.settings.topics.faults, record["machine_id"], record)
            self.stats.machine_records += 1
        interrupted = False
        try:
            if self.options.fast_forward:
                self._fast_forward()
            else:
                self._real_time()
        except KeyboardInterrupt:
            interrupted = True
        self._send_block(self.queue.release(None))  # whatever is still held back
        mqtt_missing = self.mqtt.flush(60.0) if self.mqtt is not None else 0
        remaining = self.producer.flush(60.0)
        self._progress(force=True)
        summary = self.summary(remaining, interrupted)
        if self.mqtt is not None:
            summary.update(
                mqtt_published=self.mqtt.published,
                mqtt_acknowledged=self.mqtt.acknowledged,
                mqtt_rejected=self.mqtt.rejected,
                mqtt_unacknowledged_at_exit=mqtt_missing,
                mqtt_errors=self.mqtt.errors,
            )
        return summary

    def _fast_forward(self) -> None:
        sim = self.sim
        total = sim.total_ticks or 0
        block_ticks = max(1, BLOCK_READINGS // self.per_tick)
        for first in range(0, total, block_ticks):
            n = min(block_ticks, total - first)
            block, faults = sim.block(first, n)
            self._send_faults(faults)
            self.queue.push(block)
            self._send_block(self.queue.release(sim.start_ms + (first + n - 1) * sim.interval_ms))
            self._progress()

    def _real_time(self) -> None:
        sim = self.sim
        total = sim.total_ticks
        max_block = max(1, BLOCK_READINGS // self.per_tick)
        tick = 0
        while total is None or tick < total:
            now = now_ms()
            due = (now - sim.start_ms) // sim.interval_ms + 1
            if total is not None:
                due = min(due, total)
            while tick < due:
                n = min(max_block, due - tick)
                block, faults = sim.block(tick, n)
                self._send_faults(faults)
                self.queue.push(block)
                tick += n
                # Send each block as it is made: behind real time (starved of CPU, or a broker
                # holding the producer back) the backlog of due ticks would otherwise be built
                # whole in memory first (3.6 GB in the overload drill at 121,511 readings/s).
                self._send_block(self.queue.release(now_ms()))
            self._send_block(self.queue.release(now_ms()))
            self.producer.poll()
            if self.mqtt is not None:
                self.mqtt.poll()
            self._progress()
            next_tick_ms = sim.start_ms + tick * sim.interval_ms
            time.sleep(max(0.0, min(0.1, (next_tick_ms - now_ms()) / 1000)))

    def summary(self, remaining: int, interrupted: bool) -> dict[str, Any]:
        elapsed = time.perf_counter() - self._started
        s, p = self.stats, self.producer
        malformed_total = sum(s.malformed.values())

        def iso(ms: int | None) -> str | None:
            if ms is None:
                return None
            return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")

        return {
            "mode": "fast-forward" if self.options.fast_forward else "real-time",
            "sink": self.options.sink,
            "machines": self.fleet.size,
            "seed": self.options.seed,
            "chaos": self.options.chaos,
            "interval_s": self.sim.interval_ms / 1000,
            "start": iso(self.sim.start_ms),
            "end": iso(self.sim.end_ms),
            "first_event_ts": iso(s.first_ts),
            "last_event_ts": iso(s.last_ts),
            "produced": s.readings + malformed_total,
            "readings": s.readings,
            "duplicates": s.duplicates,
            "lost_packet_loss": self.sim.lost_total,
            "late_after_hour": s.late_after_hour,
            "malformed": {
                **dict.fromkeys(MALFORMED_KINDS, 0),
                **s.malformed,
                "total": malformed_total,
            },
            "faults": {t: s.faults.get(t, 0) for t in FAULT_TYPES},
            "fault_records": sum(s.faults.values()),
            "machine_records": s.machine_records,
            "messages_sent": p.produced,
            "delivered": p.produced - p.failed - remaining,
            "delivery_failures": p.failed,
            "delivery_failure_reasons": dict(p.failure_reasons),
            "undelivered_at_exit": remaining,
            "interrupted": interrupted,
            "elapsed_s": round(elapsed, 3),
            "readings_per_s": round(s.readings / max(elapsed, 1e-9), 1),
        }
