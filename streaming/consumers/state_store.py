"""The Redis side of the state writer: where each partition resumes, the one transaction per
batch, the OFFLINE sweep's reads and writes, the alert outbox and the metrics hash.

A batch's machine hashes, per-day counters, alert state and offsets change in one MULTI/EXEC
that WATCHes the offsets hash and applies only if every partition's stored offset is below the
batch: a batch is applied once or not at all, and a stale one is reported, never written. The
same transaction appends what changed to the change feed (streaming/change_feed.py) and records
alert events through the lifecycle scripts (streaming/alert_lifecycle.py), which keep what
operators did to an alert (acknowledged, assigned) when the writer clears it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import polars as pl
import redis

from streaming import change_feed
from streaming.alert_lifecycle import ALERT_LOG_CAP, AlertScripts, opened_record
from streaming.consumers.alerting import STATE_SCHEMA, empty_state
from streaming.consumers.live_state import BatchState
from streaming.redis_keys import RedisKeys

__all__ = ["ALERT_LOG_CAP", "StateStore"]
COUNTER_TTL_S = 40 * 86_400


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _state_field(row: dict[str, Any]) -> str:
    return f"{row['machine_id']}|{row['metric']}|{row['rule']}"


class StateStore:
    """The live state of one state-writer group in Redis, under `keys`."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        expire_after_s: int,
        feed_maxlen: int = 100_000,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.expire_after_s = expire_after_s
        self.feed_maxlen = feed_maxlen
        self.scripts = AlertScripts(client, keys, feed_maxlen)

    # -- reads --------------------------------------------------------------------------------
    def applied(self, partitions: list[int]) -> dict[int, int]:
        """Last applied offset per partition (-1: none yet)."""
        if not partitions:
            return {}
        stored = self.redis.hmget(self.keys.offsets, [str(p) for p in partitions])
        return {
            p: int(raw) if raw is not None else -1
            for p, raw in zip(partitions, stored, strict=True)
        }

    def alert_state(self) -> pl.DataFrame:
        raw = self.redis.hgetall(self.keys.alerts_state)
        rows = [json.loads(v) for v in raw.values()]
        return pl.DataFrame(rows, schema=STATE_SCHEMA) if rows else empty_state()

    # -- one batch ----------------------------------------------------------------------------
    def apply(
        self,
        batch: BatchState,
        fields: dict[str, dict[str, str]],
        events: pl.DataFrame,
        changed: pl.DataFrame,
        first: dict[int, int],
        last: dict[int, int],
        counts: dict[str, int],
        *,
        feed: bytes | None = None,
        now_ms: int = 0,
    ) -> dict[str, Any] | None:
        """One transaction: machine hashes, counters, alerts, offsets (`last` per partition),
        the metrics counters (`counts`) and the change feed (`feed`: the batch's machine changes;
        `events` carry `line_id` and `manual_clear` for the alert records, `now_ms` is the
        platform's clock). Returns None once applied, or what made the batch stale (some
        partition's stored offset is not below `first`, or the offsets changed meanwhile)."""
        k = self.keys
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(k.offsets)
                stored = pipe.hmget(k.offsets, [str(p) for p in first])
                for (p, f), raw in zip(first.items(), stored, strict=True):
                    if raw is not None and int(raw) >= f:
                        pipe.unwatch()
                        return {"partition": p, "first": f, "stored": int(raw)}
                pipe.multi()
                for machine, mapping in fields.items():
                    pipe.hset(k.machine(machine), mapping=mapping)  # type: ignore[arg-type]
                    pipe.expire(k.machine(machine), self.expire_after_s)
                if feed is not None:
                    self._feed(pipe, feed)
                seen = dict(batch.machines.select("machine_id", "last_seen").iter_rows())
                if seen:  # a batch of invalid messages only still moves the offsets
                    pipe.zadd(k.machines, seen, gt=True)
                for day, count in batch.days.iter_rows():
                    pipe.incrby(k.day(day), count)
                    pipe.expire(k.day(day), COUNTER_TTL_S)
                for day, machine, count in batch.machine_days.iter_rows():
                    pipe.hincrby(k.day_machines(day), machine, count)
                for day in batch.days["day"]:
                    pipe.expire(k.day_machines(day), COUNTER_TTL_S)
                self._alert_writes(pipe, events, changed, now_ms)
                pipe.hset(k.offsets, mapping={str(p): o for p, o in last.items()})
                for name, n in counts.items():
                    pipe.hincrby(k.metrics, name, n)
                pipe.execute()
            except redis.WatchError:
                return {"reason": "offsets changed under the transaction"}
        return None

    def _feed(self, pipe: Any, machines: bytes) -> None:
        fields = change_feed.machines_entry(machines)
        pipe.xadd(self.keys.changes, fields, maxlen=self.feed_maxlen, approximate=True)

    def _alert_writes(
        self, pipe: Any, events: pl.DataFrame, changed: pl.DataFrame, now_ms: int
    ) -> None:
        k = self.keys
        for row in changed.iter_rows(named=True):
            name = _state_field(row)
            if row["streak"] > 0:
                pipe.hset(k.alerts_state, name, json.dumps(row))
            else:
                pipe.hdel(k.alerts_state, name)
        for row in events.iter_rows(named=True):
            line = row.pop("line_id", None)
            manual_clear = bool(row.pop("manual_clear", False))
            if row["event"] == "opened":
                record = opened_record(row, line_id=line, manual_clear=manual_clear, now_ms=now_ms)
                self.scripts.open(record, pipe)
            else:  # cleared by the rule engine: the record keeps its acknowledgement
                self.scripts.transition(
                    "auto_clear", row["alert_id"], now_ms, arg=str(row["cleared_ms"]), pipe=pipe
                )

    # -- the OFFLINE sweep --------------------------------------------------------------------
    def silent(self, stale_before: int, expired_before: int) -> pl.DataFrame | None:
        """Machines last seen in [expired_before, stale_before] ms with their partition (-1 if
        unknown) and line; None if there are none (machines silent since before `expired_before` are
        dropped from the index then)."""
        k = self.keys
        candidates = self.redis.zrangebyscore(
            k.machines, expired_before, stale_before, withscores=True
        )
        if not candidates:
            self.redis.zremrangebyscore(k.machines, "-inf", f"({expired_before}")
            return None
        ids = [_text(c[0]) for c in candidates]
        with self.redis.pipeline(transaction=False) as pipe:
            for machine in ids:
                pipe.hmget(k.machine(machine), ["partition", "line"])
            found = pipe.execute()
        return pl.DataFrame(
            {
                "machine_id": ids,
                "last_seen": [int(c[1]) for c in candidates],
                "kafka_partition": [int(p) if p is not None else -1 for p, _ in found],
                "line_id": [_text(line) if line is not None else None for _, line in found],
            },
            schema_overrides={"line_id": pl.String},
        )

    def mark_offline(
        self, events: pl.DataFrame, changed: pl.DataFrame, expired_before: int, now_ms: int = 0
    ) -> None:
        """The OFFLINE alerts `events` opened, in one transaction with the machines' status (and
        its change on the feed)."""
        k = self.keys
        with self.redis.pipeline(transaction=True) as pipe:
            offline = []
            for machine, line in events.select("machine_id", "line_id").iter_rows():
                pipe.hset(k.machine(machine), "status", "OFFLINE")
                offline.append({"machine_id": machine, "line_id": line, "status": "OFFLINE"})
            self._feed(pipe, json.dumps(offline).encode())
            self._alert_writes(pipe, events, changed, now_ms)
            pipe.hincrby(k.metrics, "alerts", events.height)
            pipe.zremrangebyscore(k.machines, "-inf", f"({expired_before}")
            pipe.execute()

    def escalate(self, now_ms: int, after_ms: int, partitions: list[int]) -> int:
        """Raise the unacknowledged alerts of `partitions` left waiting `after_ms` (one script:
        atomic against an acknowledgement arriving at the same moment)."""
        return int(self.scripts.escalate(now_ms, after_ms, partitions))

    # -- the alert outbox and the metrics hash -------------------------------------------------
    def outbox(self, partition: int) -> list[bytes | str]:
        """Alert events committed but not yet confirmed on the alerts topic, oldest first."""
        return list(self.redis.lrange(self.keys.outbox(partition), 0, -1))

    def confirm_outbox(self, partition: int, published: int) -> None:
        self.redis.ltrim(self.keys.outbox(partition), published, -1)

    def publish_metrics(self, rate: float, lag: int, batch_ms: list[float]) -> None:
        ms = sorted(batch_ms[-200:])
        self.redis.hset(
            self.keys.metrics,
            mapping={
                "rate": round(rate, 1),
                "lag": lag,
                "batch_ms_p50": round(ms[len(ms) // 2], 2) if ms else 0,
                "batch_ms_p99": round(ms[int(len(ms) * 0.99)], 2) if ms else 0,
                "updated_ms": int(time.time() * 1000),
            },
        )
