"""The readings of one event-time hour: deduplicated, with late-arrival and duplicate counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from streaming.events.model import RANGES
from streaming.lake.schema import LANDED_COLUMNS

# Columns of a readings partition: exactly the landed columns (event fields, then where and when
# each row was landed).
READINGS_COLUMNS: tuple[str, ...] = LANDED_COLUMNS
# Sort order of every readings file and of the archive: each machine's metric is one contiguous,
# time-ordered run (sort_by_series); the detectors run about twice as fast on it.
SORT_KEYS: tuple[str, ...] = ("machine_id", "metric", "ts")


@dataclass(frozen=True)
class HourReadings:
    """One hour's readings and the counts that explain how they were obtained."""

    readings: pl.DataFrame
    landed_rows: int  # rows of the hour found in landing files, duplicates included
    duplicates: int  # landed_rows - distinct event ids
    late_rows: int  # kept rows that were landed after the hour closed (+ grace)


def select_hour(
    landed: pl.DataFrame, start: datetime, end: datetime, late_grace: timedelta
) -> HourReadings:
    """Keep the rows of [start, end), one per event_id: the first landed (lowest partition and
    offset), so a resent reading never counts twice and reruns pick the same row."""
    outside = (pl.col("ts") < start) | (pl.col("ts") >= end)
    in_hour = landed.filter(~outside) if landed.select(outside.any()).item() else landed
    keep = first_landed_copies(in_hour)
    kept = int(keep.sum())
    late = in_hour.select(((pl.col("ingest_ts") > end + late_grace) & keep).sum()).item()
    # One gather does the dedup and the sort.
    order = series_order(in_hour, start, end, keep)
    readings = in_hour.select(READINGS_COLUMNS)[order]
    return HourReadings(
        readings=readings,
        landed_rows=in_hour.height,
        duplicates=in_hour.height - kept,
        late_rows=int(late),
    )


def first_landed_copies(frame: pl.DataFrame) -> pl.Series:
    """Mask of the rows to keep: every row whose event_id is unique, and of each duplicated id
    the copy with the lowest (kafka_partition, kafka_offset).

    Duplicates are rare, so the strings are hashed once and 64-bit hashes compared (3x faster
    than is_duplicated on strings); only rows whose hash repeats (real duplicates plus rare
    collisions) are compared as strings and sorted by landing position."""
    repeated = frame.select(pl.col("event_id").hash().is_duplicated()).to_series()
    if not repeated.any():
        return ~repeated
    rows = repeated.arg_true()
    candidates = frame[rows].select("event_id", "kafka_partition", "kafka_offset")
    winners = (
        candidates.with_columns(pl.Series("row", rows))
        .sort(["kafka_partition", "kafka_offset", "row"])
        .unique(subset="event_id", keep="first", maintain_order=True)["row"]
    )
    return (~repeated).scatter(winners, True)


def series_order(
    frame: pl.DataFrame, start: datetime, end: datetime, keep: pl.Series | None = None
) -> pl.Series:
    """Row indices (of the rows in `keep`) in SORT_KEYS order, ties in frame order, for rows
    with ts in [start, end). About twice as fast as a stable sort on the two string columns: the
    few (machine_id, metric) series are ranked as strings once, then rows are ordered by one
    integer key (series rank, microseconds since start)."""
    if frame.height == 0:
        return pl.Series("row", [], dtype=pl.UInt32)
    span_us = int((end - start).total_seconds() * 1_000_000)
    shift = max(1, span_us.bit_length())
    series = pl.col("machine_id").cast(pl.Categorical).to_physical().cast(pl.UInt64) * (
        1 << 32
    ) + pl.col("metric").cast(pl.Categorical).to_physical().cast(pl.UInt64)
    codes = frame.select(series.alias("code")).to_series()
    first_rows = codes.to_frame().with_row_index("row").group_by("code").agg(pl.col("row").first())
    ranks = (
        frame.select("machine_id", "metric")[first_rows["row"]]
        .with_columns(first_rows["code"])
        .sort("machine_id", "metric")
        .with_row_index("rank")
    )
    rank = codes.replace_strict(ranks["code"], ranks["rank"], return_dtype=pl.UInt64)
    offset_us = (frame["ts"] - start).dt.total_microseconds().cast(pl.UInt64)
    keys = pl.DataFrame({"key": rank * (1 << shift) + offset_us}).with_row_index("row")
    if keep is not None:
        keys = keys.filter(keep)
    return keys.sort("key", maintain_order=True)["row"]


def out_of_range(readings: pl.DataFrame) -> pl.DataFrame:
    """Rows whose value lies outside the contract's physical range for its metric (or unknown
    metric): the validator rejects those, so any row here means a broken hop."""
    bounds = pl.DataFrame(
        {
            "metric": [str(m) for m in RANGES],
            "range_min": [lo for lo, _ in RANGES.values()],
            "range_max": [hi for _, hi in RANGES.values()],
        }
    )
    joined = readings.join(bounds, on="metric", how="left")
    bad = (
        pl.col("range_min").is_null()
        | (pl.col("value") < pl.col("range_min"))
        | (pl.col("value") > pl.col("range_max"))
        | ~pl.col("value").is_finite()
    )
    return joined.filter(bad).drop("range_min", "range_max")
