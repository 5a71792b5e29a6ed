"""Synthetic landing files in the lander's exact contract, for tests and the benchmark.

Vectorised (numpy/Polars): one hour of 5 million readings is written in seconds. The data is
plain (sinusoid + noise per machine and metric); it exists to exercise volumes and contracts,
the simulator exists for realistic faults.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from streaming.events.arrow import EVENT_SCHEMA
from streaming.events.model import event_id_expr
from streaming.lake import LANDED_SCHEMA, Lake, write_atomically
from streaming.lake.footer import footer

METRICS: tuple[tuple[str, str, float, float], ...] = (
    # metric, unit, base value, noise
    ("temperature", "°C", 60.0, 0.5),
    ("vibration", "mm/s", 3.0, 0.2),
    ("pressure", "bar", 6.0, 0.1),
    ("rpm", "rpm", 1500.0, 5.0),
    ("current", "A", 12.0, 0.3),
)


@dataclass(frozen=True)
class SyntheticLanding:
    rows: int
    files: int
    event_ids: int


def synthetic_readings(
    start: datetime, hours: float, machines: int, interval_s: float, seed: int = 7
) -> pl.DataFrame:
    """Readings of `machines` machines, every metric every `interval_s`, event time from start."""
    rng = np.random.default_rng(seed)
    steps = int(hours * 3600 / interval_s)
    n_metrics = len(METRICS)
    per_machine = steps * n_metrics
    machine_idx = np.repeat(np.arange(machines), per_machine)
    step = np.tile(np.repeat(np.arange(steps), n_metrics), machines)
    metric_idx = np.tile(np.arange(n_metrics), machines * steps)
    base = np.array([m[2] for m in METRICS])[metric_idx]
    noise = np.array([m[3] for m in METRICS])[metric_idx]
    value = (
        base * (1 + 0.02 * np.sin(step / 50.0 + machine_idx)) + rng.normal(0, 1, len(step)) * noise
    )
    start_ms = int(start.timestamp() * 1000)
    ts = start_ms + (step * interval_s * 1000).astype(np.int64) + machine_idx % 1000
    seq = step * n_metrics + metric_idx
    machine_names = pl.Series([f"m{i:05d}" for i in range(machines)])
    types = pl.Series(["MOTOR", "PUMP", "TANK", "PCB", "SENSOR"])
    lines = pl.Series([f"line-{i}" for i in range(4)])
    metric_names = pl.Series([m[0] for m in METRICS])
    units = pl.Series([m[1] for m in METRICS])
    frame = pl.DataFrame(
        {
            "machine_id": machine_names.gather(machine_idx),
            "machine_type": types.gather(machine_idx % 5),
            "line_id": lines.gather(machine_idx % 4),
            "metric": metric_names.gather(metric_idx),
            "unit": units.gather(metric_idx),
            "value": value,
            "ts": ts,
            "seq": seq.astype(np.int64),
            "status_code": np.where(step % 600 < 5, 1, 0).astype(np.int32),
        }
    ).with_columns(pl.lit("GOOD").alias("quality"))
    return frame.with_columns(event_id_expr(), pl.col("ts").cast(pl.Datetime("ms", "UTC"))).select(
        EVENT_SCHEMA.names
    )


def land(
    lake: Lake,
    readings: pl.DataFrame,
    *,
    partitions: int = 3,
    file_rows: int = 50_000,
    ingest_delay: timedelta = timedelta(seconds=1),
    first_offsets: dict[int, int] | None = None,
) -> SyntheticLanding:
    """Write `readings` as landing files, arriving in event-time order: rows are spread over
    Kafka partitions by machine (like key = machine_id) and cut into files of `file_rows`."""
    ordered = readings.sort("ts").with_columns(
        (pl.col("machine_id").hash() % partitions).cast(pl.Int32).alias("kafka_partition"),
        (pl.col("ts") + pl.duration(milliseconds=int(ingest_delay.total_seconds() * 1000))).alias(
            "ingest_ts"
        ),
    )
    files = 0
    for (partition,), part in ordered.group_by("kafka_partition", maintain_order=True):
        start = (first_offsets or {}).get(int(partition), 0)  # type: ignore[call-overload]
        part = part.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) + start).alias("kafka_offset")
        )
        for chunk_start in range(0, part.height, file_rows):
            chunk = part.slice(chunk_start, file_rows)
            write_landing_file(lake, chunk)
            files += 1
    return SyntheticLanding(
        rows=readings.height, files=files, event_ids=readings["event_id"].n_unique()
    )


def write_landing_file(lake: Lake, chunk: pl.DataFrame) -> None:
    """One landing file named by its partition and offsets, with the lander's footer (no dead
    letters: the chunk's offsets are taken to be contiguous)."""
    table = chunk.select(LANDED_SCHEMA.names).to_arrow().cast(LANDED_SCHEMA)
    partition = int(chunk["kafka_partition"][0])
    offsets = chunk["kafka_offset"].to_numpy()
    first, last = int(offsets.min()), int(offsets.max())
    table = table.replace_schema_metadata(footer(table, first, last, np.empty(0, dtype=np.int64)))
    path = lake.landed_path(partition, first, last)

    def write(tmp: object) -> None:
        pq.write_table(table, tmp, compression="zstd")  # type: ignore[arg-type]

    write_atomically(path, write)


def as_table(frame: pl.DataFrame) -> pa.Table:
    return frame.to_arrow()
