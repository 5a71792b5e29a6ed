"""`ot state`: keep the live machine state and the streaming alerts in Redis, exactly once.

Each consumed batch becomes one MULTI/EXEC: the coalesced machine hashes, the per-day counters,
the alert state and the offsets hash `{prefix}offsets:{group}` (last applied offset per partition)
change together or not at all. The transaction WATCHes the offsets hash and applies only if every
partition's stored offset is below the batch, and on assignment a partition resumes one past its
stored offset: a crash can neither apply a batch twice nor lose one. Alert events go into a
per-partition outbox in the same transaction and are published to the `alerts` topic afterwards:
at least once, with ids that let consumers dedupe.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from streaming.consumers.alerting import (
    DEFAULT_RULES,
    KEY,
    STATE_SCHEMA,
    AlertStep,
    ReadingRule,
    clear_offline,
    empty_state,
    evaluate,
    load_rules,
    machine_status,
    open_offline,
    rules_frame,
)
from streaming.consumers.kafka_clients import consumer_config, lag, producer_config
from streaming.consumers.lifecycle import (
    Bounds,
    JsonLog,
    Progress,
    StopFlag,
    consumer_parser,
    run_bounded,
)
from streaming.consumers.live_state import machine_fields, summarise
from streaming.events import decode_batch
from streaming.settings import Settings

GROUP = "state-writer"
ALERT_LOG_CAP = 10_000
COUNTER_TTL_S = 40 * 86_400


class RedisKeys:
    """The Redis key layout, under the configurable prefix (default `ot:`)."""

    def __init__(self, prefix: str, group: str) -> None:
        self.p = prefix
        self.group = group
        self.machines = f"{prefix}machines"
        self.offsets = f"{prefix}offsets:{group}"
        self.alerts_active = f"{prefix}alerts:active"
        self.alerts_log = f"{prefix}alerts:log"
        self.alerts_state = f"{prefix}alerts:state"
        self.metrics = f"{prefix}metrics:{group}"

    def machine(self, machine_id: str) -> str:
        return f"{self.p}machine:{machine_id}"

    def day(self, day: str) -> str:
        return f"{self.p}count:{day}"

    def day_machines(self, day: str) -> str:
        return f"{self.p}count:{day}:machines"

    def outbox(self, partition: int) -> str:
        return f"{self.p}alerts:outbox:{partition}"


@dataclass
class WriterStats:
    consumed: int = 0
    applied: int = 0
    invalid: int = 0
    batches: int = 0
    alerts: int = 0
    stale: int = 0
    batch_ms: list[float] = field(default_factory=list)
    first_batch_at: float | None = None  # for rates that leave the group join out
    finished_at: float | None = None


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _state_field(row: dict[str, Any]) -> str:
    return f"{row['machine_id']}|{row['metric']}|{row['rule']}"


class StateWriter:
    def __init__(
        self,
        settings: Settings,
        *,
        group: str = GROUP,
        instance_id: str | None = None,
        rules: tuple[ReadingRule, ...] = DEFAULT_RULES,
        batch_size: int = 20_000,
        poll_timeout: float = 0.1,
        sweep_every_s: float = 1.0,
        expire_after_s: int = 86_400,
        session_timeout_ms: int = 10_000,
        log: JsonLog | None = None,
        measure_latency: bool = False,
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.readings
        self.keys = RedisKeys(settings.redis_prefix, group)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.rules = rules_frame(rules)
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.sweep_every_s = sweep_every_s
        self.expire_after_s = expire_after_s
        self.offline_after_ms = int(settings.offline_after_seconds * 1000)
        self.log = log or JsonLog("state-writer")
        self.stats = WriterStats()
        self.applied: dict[int, int] = {}  # assigned partition -> last applied offset (-1: none)
        self.state = empty_state()
        self.latencies: list[np.ndarray] = []
        self.measure_latency = measure_latency
        self._last_sweep = 0.0
        self._backlog = False
        self.consumer = Consumer(
            consumer_config(
                settings, group, instance_id=instance_id, session_timeout_ms=session_timeout_ms
            )
        )
        self.producer = Producer(producer_config(settings))
        self.consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    # -- assignment: Redis, not the group, says where each partition resumes -------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.redis.hmget(self.keys.offsets, [str(tp.partition) for tp in partitions])
        for tp, raw in zip(partitions, stored, strict=True):
            last = int(raw) if raw is not None else -1
            self.applied[tp.partition] = last
            tp.offset = last + 1 if last >= 0 else OFFSET_BEGINNING
        self._load_alert_state()
        for tp in partitions:
            self._publish_outbox(tp.partition)
        consumer.assign(partitions)
        self.log("assigned", partitions={tp.partition: tp.offset for tp in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is applied before the next consume call: nothing to flush.
        for tp in partitions:
            self.applied.pop(tp.partition, None)
        consumer.unassign()
        self.log("revoked", partitions=[tp.partition for tp in partitions])

    _on_lost = _on_revoke

    def _load_alert_state(self) -> None:
        raw = self.redis.hgetall(self.keys.alerts_state)
        rows = [json.loads(v) for v in raw.values()]
        self.state = pl.DataFrame(rows, schema=STATE_SCHEMA) if rows else empty_state()

    def _reseek(self) -> None:
        """After a stale batch: take the stored offsets and alert state again."""
        parts = sorted(self.applied)
        stored = self.redis.hmget(self.keys.offsets, [str(p) for p in parts])
        for p, raw in zip(parts, stored, strict=True):
            last = int(raw) if raw is not None else -1
            self.applied[p] = last
            self.consumer.seek(TopicPartition(self.topic, p, last + 1 if last >= 0 else 0))
        self._load_alert_state()

    # -- one batch -----------------------------------------------------------------------------
    def handle(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        good = [m for m in messages if m.error() is None]
        for m in messages:
            err = m.error()
            if err is not None:
                self._kafka_error(err)
        n = len(good)
        if not n:
            return
        parts = np.fromiter((m.partition() for m in good), dtype=np.int32, count=n)
        offsets = np.fromiter((m.offset() for m in good), dtype=np.int64, count=n)
        stamps = np.fromiter((m.timestamp()[1] for m in good), dtype=np.int64, count=n)
        values = [m.value() for m in good]
        self.stats.consumed += n
        floor = np.full(int(parts.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
        for p, applied_to in self.applied.items():
            if p < len(floor):
                floor[p] = applied_to + 1
        keep = offsets >= floor[parts]
        if not keep.all():
            idx = np.flatnonzero(keep)
            values = [values[i] for i in idx]
            parts, offsets, stamps = parts[keep], offsets[keep], stamps[keep]
            if not values:
                return
        now_ms = int(time.time() * 1000)
        decoded = decode_batch(
            values,
            now_ms,
            max_future_ms=self.settings.max_future_ms,
            max_age_ms=self.settings.max_age_ms,
        )
        vi = decoded.valid_index
        readings = pl.from_arrow(decoded.valid)
        assert isinstance(readings, pl.DataFrame)
        readings = readings.with_columns(
            pl.col("ts").dt.epoch("ms"),
            kafka_partition=pl.Series(parts[vi], dtype=pl.Int32),
            kafka_offset=pl.Series(offsets[vi]),
            kafka_ts=pl.Series(np.where(stamps[vi] > 0, stamps[vi], now_ms)),
        )
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for p in np.unique(parts):
            mine = offsets[parts == p]
            first[int(p)], last[int(p)] = int(mine[0]), int(mine[-1])
        ok = self._apply(readings, len(decoded.rejected), first, last, now_ms)
        if not ok:
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.stats.batch_ms.append(elapsed_ms)
        if self.measure_latency and readings.height:
            done = time.time() * 1000
            self.latencies.append(done - readings["ts"].to_numpy())

    def _apply(
        self,
        readings: pl.DataFrame,
        invalid: int,
        first: dict[int, int],
        last: dict[int, int],
        now_ms: int,
    ) -> bool:
        batch = summarise(readings)
        step = evaluate(readings, self.state, self.rules)
        heard = batch.machines.select(
            "machine_id", first_ts="first_seen", kafka_partition=pl.col("kafka_partition")
        )
        back = clear_offline(step.state, heard)
        new_state = back.state
        events = pl.concat([back.events, step.events])
        changed = pl.concat([step.changed, back.changed])
        status = machine_status(new_state, self.rules)
        fields = machine_fields(batch, status)
        k = self.keys
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(k.offsets)
                stored = pipe.hmget(k.offsets, [str(p) for p in first])
                for (p, f), raw in zip(first.items(), stored, strict=True):
                    if raw is not None and int(raw) >= f:
                        self.stats.stale += 1
                        self.log("stale_batch", partition=p, first=f, stored=int(raw))
                        pipe.unwatch()
                        self._reseek()
                        return False
                pipe.multi()
                for machine, mapping in fields.items():
                    pipe.hset(k.machine(machine), mapping=mapping)  # type: ignore[arg-type]
                    pipe.expire(k.machine(machine), self.expire_after_s)
                pipe.zadd(
                    k.machines,
                    dict(batch.machines.select("machine_id", "last_seen").iter_rows()),
                    gt=True,
                )
                for day, count in batch.days.iter_rows():
                    pipe.incrby(k.day(day), count)
                    pipe.expire(k.day(day), COUNTER_TTL_S)
                for day, machine, count in batch.machine_days.iter_rows():
                    pipe.hincrby(k.day_machines(day), machine, count)
                for day in batch.days["day"]:
                    pipe.expire(k.day_machines(day), COUNTER_TTL_S)
                self._alert_writes(pipe, events, changed)
                pipe.hset(k.offsets, mapping={str(p): o for p, o in last.items()})
                pipe.hincrby(k.metrics, "applied", readings.height)
                pipe.hincrby(k.metrics, "invalid", invalid)
                pipe.hincrby(k.metrics, "batches", 1)
                pipe.hincrby(k.metrics, "alerts", events.height)
                pipe.execute()
            except redis.WatchError:
                self.stats.stale += 1
                self.log("stale_batch", reason="offsets changed under the transaction")
                self._reseek()
                return False
        self.state = new_state
        self.applied.update(last)
        self.stats.applied += readings.height
        self.stats.invalid += invalid
        self.stats.batches += 1
        self.stats.alerts += events.height
        if events.height:
            for p in events["kafka_partition"].unique().to_list():
                self._publish_outbox(int(p))
        return True

    def _alert_writes(self, pipe: Any, events: pl.DataFrame, changed: pl.DataFrame) -> None:
        k = self.keys
        for row in changed.iter_rows(named=True):
            name = _state_field(row)
            if row["streak"] > 0:
                pipe.hset(k.alerts_state, name, json.dumps(row))
            else:
                pipe.hdel(k.alerts_state, name)
        if not events.height:
            return
        for row in events.iter_rows(named=True):
            doc = json.dumps(row)
            if row["event"] == "opened":
                pipe.hset(k.alerts_active, row["alert_id"], doc)
            else:
                pipe.hdel(k.alerts_active, row["alert_id"])
            pipe.lpush(k.alerts_log, doc)
            pipe.rpush(k.outbox(int(row["kafka_partition"])), doc)
        pipe.ltrim(k.alerts_log, 0, ALERT_LOG_CAP - 1)

    def _publish_outbox(self, partition: int) -> None:
        """Alerts topic after the Redis commit: at least once (dedupe by alert_id + event)."""
        key = self.keys.outbox(partition)
        pending = self.redis.lrange(key, 0, -1)
        if not pending:
            return
        for doc in pending:
            machine = json.loads(doc)["machine_id"]
            self.producer.produce(self.settings.topics.alerts, value=doc, key=machine.encode())
        if self.producer.flush(30):
            self.log("alerts_unconfirmed", partition=partition, pending=len(pending))
            return
        self.redis.ltrim(key, len(pending), -1)

    # -- the OFFLINE sweep runs on a timer ------------------------------------------------------
    def sweep(self, now_ms: int) -> int:
        """Open OFFLINE alerts for silent machines of the assigned partitions. Skipped while
        catching up (full batches): silence is only known once the backlog is read."""
        if self._backlog or not self.applied:
            return 0
        k = self.keys
        stale_before = now_ms - self.offline_after_ms
        expired_before = now_ms - self.expire_after_s * 1000
        candidates = self.redis.zrangebyscore(
            k.machines, expired_before, stale_before, withscores=True
        )
        if not candidates:
            self.redis.zremrangebyscore(k.machines, "-inf", f"({expired_before}")
            return 0
        ids = [_text(c[0]) for c in candidates]
        with self.redis.pipeline(transaction=False) as pipe:
            for machine in ids:
                pipe.hget(k.machine(machine), "partition")
            partitions = pipe.execute()
        silent = pl.DataFrame(
            {
                "machine_id": ids,
                "last_seen": [int(c[1]) for c in candidates],
                "kafka_partition": [int(p) if p is not None else -1 for p in partitions],
            }
        ).filter(pl.col("kafka_partition").is_in(list(self.applied)))
        step: AlertStep = open_offline(self.state, silent)
        if not step.events.height:
            return 0
        with self.redis.pipeline(transaction=True) as pipe:
            for machine in step.events["machine_id"]:
                pipe.hset(k.machine(machine), "status", "OFFLINE")
            self._alert_writes(pipe, step.events, step.changed)
            pipe.hincrby(k.metrics, "alerts", step.events.height)
            pipe.zremrangebyscore(k.machines, "-inf", f"({expired_before}")
            pipe.execute()
        self.state = step.state
        self.stats.alerts += step.events.height
        for p in step.events["kafka_partition"].unique().to_list():
            self._publish_outbox(int(p))
        self.log(
            "offline", machines=step.events["machine_id"].to_list()[:20], count=step.events.height
        )
        return step.events.height

    def _kafka_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise RuntimeError(f"fatal Kafka error: {err}")
        self.log("kafka_error", error=str(err))

    # -- running -----------------------------------------------------------------------------
    def publish_metrics(self, rate: float, behind: int) -> None:
        ms = sorted(self.stats.batch_ms[-200:])
        self.redis.hset(
            self.keys.metrics,
            mapping={
                "rate": round(rate, 1),
                "lag": behind,
                "batch_ms_p50": round(ms[len(ms) // 2], 2) if ms else 0,
                "batch_ms_p99": round(ms[int(len(ms) * 0.99)], 2) if ms else 0,
                "updated_ms": int(time.time() * 1000),
            },
        )

    def run(
        self, bounds: Bounds, stop: StopFlag, progress: Progress | None = None
    ) -> dict[str, Any]:
        started = time.monotonic()
        reason: str | None = None
        window_start, window_count = started, 0
        while True:
            now = time.monotonic()
            reason = stop.signal or bounds.reached(self.stats.consumed, now)
            if reason:
                break
            want = bounds.remaining(self.stats.consumed, self.batch_size)
            messages = self.consumer.consume(num_messages=want, timeout=self.poll_timeout)
            now = time.monotonic()
            self._backlog = len(messages) >= want
            if messages:
                bounds.saw_messages(now)
                if self.stats.first_batch_at is None:
                    self.stats.first_batch_at = now
                self.handle(messages)
            if now - self._last_sweep >= self.sweep_every_s:
                self._last_sweep = now
                self.sweep(int(time.time() * 1000))
            if progress and progress.due(now):
                rate = (self.stats.consumed - window_count) / max(now - window_start, 1e-9)
                window_start, window_count = now, self.stats.consumed
                behind = lag(self.consumer, {p: o + 1 for p, o in self.applied.items()}, self.topic)
                self.publish_metrics(rate, behind)
                progress.show(
                    now,
                    consumed=self.stats.consumed,
                    applied=self.stats.applied,
                    invalid=self.stats.invalid,
                    alerts=self.stats.alerts,
                    rate=round(rate),
                    lag=behind,
                )
        self.stats.finished_at = time.monotonic()
        if progress:
            progress.done()
        elapsed = max(time.monotonic() - started, 1e-9)
        behind = lag(self.consumer, {p: o + 1 for p, o in self.applied.items()}, self.topic)
        rate = self.stats.consumed / elapsed
        self.publish_metrics(rate, behind)
        self.close()
        ms = sorted(self.stats.batch_ms)
        return {
            "command": "state",
            "consumed": self.stats.consumed,
            "applied": self.stats.applied,
            "dead_lettered": 0,  # the lander dead-letters; the state writer counts and skips
            "invalid": self.stats.invalid,
            "files": 0,
            "batches": self.stats.batches,
            "alerts": self.stats.alerts,
            "stale_batches": self.stats.stale,
            "rate": round(rate, 1),
            "lag": behind,
            "batch_ms_p50": round(ms[len(ms) // 2], 2) if ms else None,
            "elapsed_s": round(elapsed, 2),
            "stopped_by": reason,
        }

    def close(self) -> None:
        self.producer.flush(30)
        self.consumer.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = consumer_parser("ot state", __doc__, GROUP, poll_timeout=0.1)
    p.add_argument("--rules", type=Path, help="JSON file of alert rules (default: built in)")
    p.add_argument("--sweep-every", type=float, default=1.0, help="OFFLINE sweep period, s")
    p.add_argument("--expire-after", type=int, default=86_400, help="drop silent machines, s")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.from_env()
    log = JsonLog("state-writer")
    stop = StopFlag().install()
    writer = StateWriter(
        settings,
        group=args.group,
        instance_id=args.instance_id,
        rules=load_rules(args.rules) if args.rules else DEFAULT_RULES,
        batch_size=args.batch_size,
        poll_timeout=args.poll_timeout,
        sweep_every_s=args.sweep_every,
        expire_after_s=args.expire_after,
        session_timeout_ms=args.session_timeout_ms,
        log=log,
    )
    log("started", topic=settings.topics.readings, group=args.group, prefix=settings.redis_prefix)
    return run_bounded(writer, args, stop, log)


__all__ = ["KEY", "RedisKeys", "StateWriter", "main"]
