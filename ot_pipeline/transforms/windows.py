"""Tumbling windows per machine and metric, with a trailing rolling average."""

from __future__ import annotations

import polars as pl

WINDOW_COLUMNS: tuple[str, ...] = (
    "bucket",
    "machine_id",
    "metric",
    "count",
    "min",
    "max",
    "mean",
    "stddev",
    "first",
    "last",
    "rolling_mean",
)


def tumbling_windows(readings: pl.DataFrame, every: str, rolling: str) -> pl.DataFrame:
    """count/min/max/mean/stddev/first/last per (machine, metric, `every` bucket of event time),
    plus `rolling_mean`: the count-weighted mean of the buckets in the trailing `rolling` period
    (within the frame given, so an hour's first buckets average fewer buckets)."""
    windows = (
        readings.sort("ts")
        .group_by(
            pl.col("ts").dt.truncate(every).alias("bucket"),
            "machine_id",
            "metric",
            maintain_order=True,
        )
        .agg(
            pl.len().cast(pl.Int64).alias("count"),
            pl.col("value").min().alias("min"),
            pl.col("value").max().alias("max"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").std().alias("stddev"),
            pl.col("value").first().alias("first"),
            pl.col("value").last().alias("last"),
            pl.col("value").sum().alias("_sum"),
        )
        .sort("machine_id", "metric", "bucket")
    )
    rolled = windows.rolling("bucket", period=rolling, group_by=["machine_id", "metric"]).agg(
        (pl.col("_sum").sum() / pl.col("count").sum()).alias("rolling_mean")
    )
    return (
        windows.join(rolled, on=["machine_id", "metric", "bucket"], how="left")
        .select(WINDOW_COLUMNS)
        .sort("machine_id", "metric", "bucket")
    )
