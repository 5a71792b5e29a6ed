"""Pure core of the state writer: what one batch changes in the live state, coalesced.

Per batch only the latest value per (machine, metric) is written, one hash write per machine;
the per-day counters still count every valid reading. `last_seen` is the Kafka message time
(when the platform heard from the machine), not the device clock, so a skewed clock cannot make a
machine look silent or alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl


@dataclass(frozen=True)
class BatchState:
    latest: pl.DataFrame  # machine_id, metric, value, ts: the newest reading per machine/metric
    machines: pl.DataFrame  # machine_id, machine_type, line_id, status_code, last_seen,
    # first_seen, kafka_partition
    days: pl.DataFrame  # day (YYYY-MM-DD of event time), count
    machine_days: pl.DataFrame  # day, machine_id, count


def summarise(readings: pl.DataFrame) -> BatchState:
    """`readings`: valid rows in consume order with kafka_partition, kafka_offset, kafka_ts."""
    latest = readings.unique(subset=["machine_id", "metric"], keep="last", maintain_order=True)
    machines = readings.group_by("machine_id", maintain_order=True).agg(
        pl.col("machine_type").last(),
        pl.col("line_id").last(),
        pl.col("status_code").last(),
        last_seen=pl.col("kafka_ts").max(),
        first_seen=pl.col("kafka_ts").min(),
        kafka_partition=pl.col("kafka_partition").last(),
    )
    day = (pl.col("ts") // 86_400_000 * 86_400_000).cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%d")
    dated = readings.select("machine_id", day=day)
    return BatchState(
        latest=latest.select("machine_id", "metric", "value", "ts"),
        machines=machines,
        days=dated.group_by("day").len("count"),
        machine_days=dated.group_by("day", "machine_id").len("count"),
    )


def machine_fields(batch: BatchState, status: pl.DataFrame) -> dict[str, dict[str, str]]:
    """machine_id -> the hash fields to set: metadata, status, and `{metric}` / `{metric}_ts`."""
    machines = batch.machines.join(status, on="machine_id", how="left").with_columns(
        pl.col("status").fill_null("ONLINE")
    )
    out: dict[str, dict[str, str]] = {}
    for m in machines.iter_rows(named=True):
        out[m["machine_id"]] = {
            "type": m["machine_type"],
            "line": m["line_id"],
            "status": m["status"],
            "status_code": str(m["status_code"]),
            "last_seen": str(m["last_seen"]),
            "partition": str(m["kafka_partition"]),
        }
    for machine, metric, value, ts in batch.latest.iter_rows():
        fields = out[machine]
        fields[metric] = repr(value)
        fields[f"{metric}_ts"] = str(ts)
    return out


def machine_changes(batch: BatchState, status: pl.DataFrame) -> bytes:
    """The change-feed payload of this batch: a JSON list with what it changed of each machine,
    typed (streaming/change_feed.py describes it). One feed entry per batch, not per machine:
    the writer's transaction stays one command longer, whatever the fleet size."""
    machines = batch.machines.join(status, on="machine_id", how="left").with_columns(
        pl.col("status").fill_null("ONLINE")
    )
    docs: dict[str, dict[str, Any]] = {}
    for m in machines.iter_rows(named=True):
        docs[m["machine_id"]] = {
            "machine_id": m["machine_id"],
            "machine_type": m["machine_type"],
            "line_id": m["line_id"],
            "status": m["status"],
            "status_code": m["status_code"],
            "last_seen": m["last_seen"],
            "values": {},
        }
    for machine, metric, value, ts in batch.latest.iter_rows():
        docs[machine]["values"][metric] = {"value": value, "ts": ts}
    return orjson.dumps(list(docs.values()))
