"""`ot state`: keep the live machine state and the streaming alerts in Redis, exactly once.

Each consumed batch becomes one MULTI/EXEC: the coalesced machine hashes, the per-day counters,
the alert state and the offsets hash `{prefix}offsets:{group}` (last applied offset per partition)
change together or not at all. The transaction WATCHes the offsets hash and applies only if every
partition's stored offset is below the batch, and on assignment a partition resumes one past its
stored offset: a crash can neither apply a batch twice nor lose one. Alert events go into a
per-partition outbox in the same transaction and are published to the `alerts` topic afterwards:
at least once, with ids that let consumers dedupe. The same transaction appends the machines'
changes and the alert events to the change feed that `ot api` streams to WebSocket clients.

The timer (`tick`, every `--sweep-every` seconds) opens OFFLINE alerts, escalates alerts left
unacknowledged for `OT_ALERT_ESCALATE_AFTER_SECONDS` and publishes the outboxes of its partitions,
including the events of operators' acknowledgements, assignments and clears made through `ot api`:
the writer of a partition is the one publisher of its alert events, in the order Redis recorded
them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streaming.consumers.alerting import (
    DEFAULT_RULES,
    KEY,
    AlertStep,
    ReadingRule,
    clear_offline,
    empty_state,
    evaluate,
    load_rules,
    machine_status,
    manual_clear_by_rule,
    open_offline,
    rules_frame,
)
from streaming.consumers.live_state import machine_changes, machine_fields, summarise
from streaming.consumers.state_store import StateStore
from streaming.kafka.lifecycle import JsonLog, consumer_parser, serve
from streaming.kafka.probe import require_kafka
from streaming.kafka.runtime import Batch, ConsumerRuntime, Membership, SinkUnavailable
from streaming.observability import metrics
from streaming.redis_keys import STATE_WRITER_GROUP, RedisKeys
from streaming.settings import ServiceUnavailable, Settings

GROUP = STATE_WRITER_GROUP
MEMBERSHIP = Membership(GROUP, poll_timeout=0.1)  # `ot state` defaults
# A Redis that does not answer within this long counts as down (a paused server accepts
# connections and never replies). The runtime's breaker does the retrying, so the client does
# not retry on its own.
REDIS_TIMEOUT_S = 5.0
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)  # LOADING after a restart is one too


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def require_redis(url: str) -> None:
    """Refuse to start when Redis does not answer PING: one line naming the server (never its
    password) and what to do. Once running, an outage is the runtime's to wait out."""
    client = redis_client(url)
    kwargs = client.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    try:
        client.ping()
    except (*REDIS_DOWN, redis.ResponseError) as exc:
        raise ServiceUnavailable(
            f"redis: no answer at {where} ({type(exc).__name__}: {exc}); start the local stack "
            "with `ot stack up` (or `make up`), or set REDIS_URL to a running server"
        ) from None
    finally:
        client.close()


@contextmanager
def redis_reachable() -> Iterator[None]:
    """Redis timed out or refused: the runtime waits behind its breaker and asks again."""
    try:
        yield
    except REDIS_DOWN as exc:
        raise SinkUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc


@dataclass
class WriterStats:
    applied: int = 0
    invalid: int = 0
    batches: int = 0
    alerts: int = 0
    stale: int = 0
    batch_ms: list[float] = field(default_factory=list)


class StateWriter:
    """One state-writer process, a sink of the consumer runtime."""

    command = "state"

    def __init__(
        self,
        settings: Settings,
        membership: Membership | None = None,
        *,
        rules: tuple[ReadingRule, ...] = DEFAULT_RULES,
        sweep_every_s: float = 1.0,
        expire_after_s: int = 86_400,
        log: JsonLog | None = None,
        measure_latency: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        membership = membership or MEMBERSHIP
        self.alerts_topic = settings.topics.alerts
        self.keys = RedisKeys(settings.redis_prefix, membership.group)
        self.store = StateStore(
            redis_client(settings.redis_url),
            self.keys,
            expire_after_s,
            feed_maxlen=settings.change_feed_maxlen,
        )
        self.rules = rules_frame(rules)
        self.manual_clear = manual_clear_by_rule(rules)
        self.escalate_after_ms = int(settings.alert_escalate_after_seconds * 1000)
        self.clock = clock  # wall clock (s) of sweeps, escalation and alert records; tests move it
        self.sweep_every_s = sweep_every_s
        self.expire_after_s = expire_after_s
        self.offline_after_ms = int(settings.offline_after_seconds * 1000)
        self.log = log or JsonLog("state-writer")
        self.stats = WriterStats()
        self.state = empty_state()
        self.latencies: list[np.ndarray] = []
        self.measure_latency = measure_latency
        self._last_sweep = 0.0
        self._window: tuple[float, int] | None = None  # start, consumed count of the window
        self.runtime = ConsumerRuntime(settings, self, membership, self.log)
        self.run = self.runtime.run  # consume within bounds; returns the JSON summary

    # -- assignment: Redis, not the group, says where each partition resumes -------------------
    def resume(self, partitions: list[int]) -> dict[int, int | None]:
        with redis_reachable():
            applied = self.store.applied(partitions)
            self.state = self.store.alert_state()
            for p in partitions:
                self._publish_outbox(p)
        return {p: last + 1 if last >= 0 else None for p, last in applied.items()}

    def revoke(self, partitions: list[int]) -> None:
        """Every batch is applied before the next consume call: nothing to flush."""

    lose = revoke

    def _reseek(self) -> None:
        """After a stale batch: take the stored offsets and alert state again."""
        for p, last in self.store.applied(sorted(self.runtime.positions)).items():
            self.runtime.seek(p, last + 1 if last >= 0 else 0)
        self.state = self.store.alert_state()

    # -- one batch -----------------------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        """One transaction for the batch. If Redis is down the batch is not applied (or, when
        the reply of EXEC was lost, applied and found stale when read again)."""
        with redis_reachable():
            self._write(batch)

    def _write(self, batch: Batch) -> None:
        now_ms = batch.ingest_ms
        parts, offsets = batch.partitions, batch.offsets
        stamps = np.fromiter(
            (m.timestamp()[1] for m in batch.messages), dtype=np.int64, count=len(batch.messages)
        )
        decoded = batch.decoded
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
        if not self._apply(readings, len(decoded.rejected), first, last):
            return
        for reason, count in decoded.reason_counts().items():
            metrics.STATE_INVALID.labels(reason).inc(count)
        elapsed_ms = (time.perf_counter() - batch.started) * 1000
        self.stats.batch_ms.append(elapsed_ms)
        if self.measure_latency and readings.height:
            done = time.time() * 1000
            self.latencies.append(done - readings["ts"].to_numpy())

    def _apply(
        self, readings: pl.DataFrame, invalid: int, first: dict[int, int], last: dict[int, int]
    ) -> bool:
        batch = summarise(readings)
        step = evaluate(readings, self.state, self.rules)
        heard = batch.machines.select(
            "machine_id", first_ts="first_seen", kafka_partition=pl.col("kafka_partition")
        )
        back = clear_offline(step.state, heard)
        lines = dict(batch.machines.select("machine_id", "line_id").iter_rows())
        events = self._annotate(pl.concat([back.events, step.events]), lines)
        changed = pl.concat([step.changed, back.changed])
        status = machine_status(back.state, self.rules)
        fields = machine_fields(batch, status)
        counts = {
            "applied": readings.height,
            "invalid": invalid,
            "batches": 1,
            "alerts": events.height,
        }
        stale = self.store.apply(
            batch,
            fields,
            events,
            changed,
            first,
            last,
            counts,
            feed=machine_changes(batch, status),
            now_ms=int(self.clock() * 1000),
        )
        if stale is not None:
            self.stats.stale += 1
            metrics.STATE_CONFLICTS.labels("watch" if "reason" in stale else "stale").inc()
            self.log("stale_batch", **stale)
            self._reseek()
            return False
        self.state = back.state
        for p, o in last.items():
            self.runtime.advance(p, o + 1)
            self.runtime.commit(p, o + 1)  # only reports lag: the offsets hash holds the truth
        self.stats.applied += readings.height
        self.stats.invalid += invalid
        self.stats.batches += 1
        self.stats.alerts += events.height
        metrics.STATE_APPLIED.inc(readings.height)
        if events.height:
            metrics.STATE_ALERT_EVENTS.inc(events.height)
            for p in events["kafka_partition"].unique().to_list():
                self._publish_outbox(int(p))
        return True

    def _annotate(self, events: pl.DataFrame, lines: dict[str, str]) -> pl.DataFrame:
        """Alert events with what their records need: the machine's line and whether an
        operator may clear them."""
        return events.with_columns(
            line_id=pl.col("machine_id").replace_strict(
                lines, default=None, return_dtype=pl.String
            ),
            manual_clear=pl.col("rule").replace_strict(
                self.manual_clear, default=False, return_dtype=pl.Boolean
            ),
        )

    def _publish_outbox(self, partition: int) -> None:
        """Alerts topic after the Redis commit: at least once (dedupe by alert_id + event)."""
        pending = self.store.outbox(partition)
        if not pending:
            return
        producer = self.runtime.producer
        for doc in pending:
            machine = json.loads(doc)["machine_id"]
            producer.send(self.alerts_topic, doc, machine.encode())
        if producer.flush(30):
            self.log("alerts_unconfirmed", partition=partition, pending=len(pending))
            return
        self.store.confirm_outbox(partition, len(pending))

    # -- the timer: OFFLINE sweep, escalation, outboxes -----------------------------------------
    def tick(self, now: float) -> None:
        if now - self._last_sweep >= self.sweep_every_s:
            self._last_sweep = now
            now_ms = int(self.clock() * 1000)
            with redis_reachable():
                self.sweep(now_ms, self.runtime.undisturbed_for(now))
                self.escalate(now_ms)
                for p in sorted(self.runtime.positions):  # events of `ot api` and of escalation
                    self._publish_outbox(p)

    def escalate(self, now_ms: int) -> int:
        """Raise one severity every unacknowledged active alert of the assigned partitions that
        waited OT_ALERT_ESCALATE_AFTER_SECONDS since it opened or last rose (0: never). The
        events go to the partitions' outboxes."""
        assigned = sorted(self.runtime.positions)
        if self.escalate_after_ms <= 0 or not assigned:
            return 0
        raised = self.store.escalate(now_ms, self.escalate_after_ms, assigned)
        if raised:
            self.stats.alerts += raised
            self.log("escalated", count=raised)
        return raised

    def sweep(self, now_ms: int, undisturbed_s: float = float("inf")) -> int:
        """Open OFFLINE alerts for silent machines of the assigned partitions. Skipped until
        this writer has read without a Kafka error, a new assignment or a backlog for a whole
        OFFLINE period (`undisturbed_s`): silence is only known once the backlog is read, and a
        writer cut off from the brokers hears nothing from any machine (the broker-loss drill
        flagged all 200 machines OFFLINE before this)."""
        assigned = list(self.runtime.positions)
        if self.runtime.backlog or not assigned or undisturbed_s * 1000 < self.offline_after_ms:
            return 0
        expired_before = now_ms - self.expire_after_s * 1000
        silent = self.store.silent(now_ms - self.offline_after_ms, expired_before)
        if silent is None:
            return 0
        mine = silent.filter(pl.col("kafka_partition").is_in(assigned))
        step: AlertStep = open_offline(self.state, mine.drop("line_id"))
        if not step.events.height:
            return 0
        lines = {m: line for m, line in mine.select("machine_id", "line_id").iter_rows() if line}
        events = self._annotate(step.events, lines)
        self.store.mark_offline(events, step.changed, expired_before, now_ms)
        self.state = step.state
        self.stats.alerts += step.events.height
        for p in step.events["kafka_partition"].unique().to_list():
            self._publish_outbox(int(p))
        self.log(
            "offline", machines=step.events["machine_id"].to_list()[:20], count=step.events.height
        )
        return step.events.height

    # -- progress and the end of the run -------------------------------------------------------
    def progress(self, now: float, elapsed: float) -> dict[str, Any]:
        consumed = self.runtime.stats.consumed
        window_start, window_count = self._window or (now - elapsed, 0)  # first: the run's start
        rate = (consumed - window_count) / max(now - window_start, 1e-9)
        self._window = (now, consumed)
        behind = self.runtime.lag()
        with redis_reachable():
            self.store.publish_metrics(rate, behind, self.stats.batch_ms)
        return {
            "applied": self.stats.applied,
            "invalid": self.stats.invalid,
            "alerts": self.stats.alerts,
            "rate": round(rate),
            "lag": behind,
        }

    def drain(self) -> None:
        """Every batch is applied before the next consume call: nothing is held."""

    def finish(self, rate: float, lag: int) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            self.store.publish_metrics(rate, lag, self.stats.batch_ms)
        except REDIS_DOWN as exc:  # stopping while Redis is down: the gauges wait for next time
            self.log("metrics_not_published", error=str(exc))
        ms = sorted(self.stats.batch_ms)
        counts = {
            "applied": self.stats.applied,
            "dead_lettered": 0,  # the lander dead-letters; the state writer counts and skips
            "invalid": self.stats.invalid,
            "files": 0,
            "batches": self.stats.batches,
            "alerts": self.stats.alerts,
            "stale_batches": self.stats.stale,
        }
        return counts, {"batch_ms_p50": round(ms[len(ms) // 2], 2) if ms else None}

    def close(self) -> None:
        """The runtime flushes the alerts producer and closes the consumer."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = consumer_parser("ot state", __doc__, GROUP, poll_timeout=MEMBERSHIP.poll_timeout)
    metrics.add_metrics_options(p, "state")
    p.add_argument("--rules", type=Path, help="JSON file of alert rules (default: built in)")
    p.add_argument("--sweep-every", type=float, default=1.0, help="OFFLINE sweep period, s")
    p.add_argument("--expire-after", type=int, default=86_400, help="drop silent machines, s")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.from_env()
    rules = load_rules(args.rules) if args.rules else DEFAULT_RULES
    require_kafka(settings.kafka_bootstrap_servers)
    require_redis(settings.redis_url)

    def build(log: JsonLog) -> StateWriter:
        return StateWriter(
            settings,
            Membership.from_args(args),
            rules=rules,
            sweep_every_s=args.sweep_every,
            expire_after_s=args.expire_after,
            log=log,
        )

    topic = settings.topics.readings
    return serve("state-writer", args, topic, build, prefix=settings.redis_prefix)


__all__ = ["KEY", "StateWriter", "main"]
