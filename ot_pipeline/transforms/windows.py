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
        readings.select("ts", "machine_id", "metric", "value")  # only these move in the sort
        .sort("ts")
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


def coarser_windows(fine: pl.DataFrame, every: str, rolling: str) -> pl.DataFrame:
    """Windows of `every` rolled up from finer windows (e.g. 5m from 1m), exactly: counts add,
    min/max/first/last carry over, the mean is count-weighted and the stddev is combined with
    the parallel-variance formula — without reading the readings again."""
    combined = (
        fine.sort("machine_id", "metric", "bucket")
        .with_columns(
            pl.col("bucket").dt.truncate(every).alias("_coarse"),
            (pl.col("mean") * pl.col("count")).alias("_sum"),
            (pl.col("stddev").fill_null(0.0).pow(2) * (pl.col("count") - 1)).alias("_m2"),
        )
        .group_by("_coarse", "machine_id", "metric", maintain_order=True)
        .agg(
            pl.col("count").sum().alias("count"),
            pl.col("min").min().alias("min"),
            pl.col("max").max().alias("max"),
            pl.col("first").first().alias("first"),
            pl.col("last").last().alias("last"),
            pl.col("_sum").sum().alias("_sum"),
            pl.col("_m2").sum().alias("_m2_within"),
            pl.col("count").alias("_counts"),
            pl.col("mean").alias("_means"),
        )
        .with_columns((pl.col("_sum") / pl.col("count")).alias("mean"))
    )
    between = (
        combined.select("_coarse", "machine_id", "metric", "mean", "_counts", "_means")
        .explode("_counts", "_means")
        .group_by("_coarse", "machine_id", "metric")
        .agg((pl.col("_counts") * (pl.col("_means") - pl.col("mean")).pow(2)).sum().alias("_m2b"))
    )
    windows = (
        combined.join(between, on=["_coarse", "machine_id", "metric"], how="left")
        .with_columns(
            pl.when(pl.col("count") > 1)
            .then(((pl.col("_m2_within") + pl.col("_m2b")) / (pl.col("count") - 1)).sqrt())
            .otherwise(None)
            .alias("stddev")
        )
        .rename({"_coarse": "bucket"})
    )
    rolled = (
        windows.sort("machine_id", "metric", "bucket")
        .rolling("bucket", period=rolling, group_by=["machine_id", "metric"])
        .agg((pl.col("_sum").sum() / pl.col("count").sum()).alias("rolling_mean"))
    )
    return (
        windows.join(rolled, on=["machine_id", "metric", "bucket"], how="left")
        .select(WINDOW_COLUMNS)
        .sort("machine_id", "metric", "bucket")
    )
