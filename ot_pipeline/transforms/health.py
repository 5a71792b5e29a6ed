"""Machine health per hour: uptime, time in each device status, anomalies, alerts, data gaps."""

from __future__ import annotations

from datetime import datetime

import polars as pl

# Device status codes (contract v1) -> column names of the time spent in each.
STATUS_COLUMNS: dict[int, str] = {0: "ok_s", 1: "warning_s", 2: "fault_s", 3: "maintenance_s"}
# Severities that raise an operator alert (the rest are logged anomalies only).
ALERT_SEVERITIES: tuple[str, ...] = ("HIGH", "CRITICAL")

HEALTH_COLUMNS: tuple[str, ...] = (
    "hour",
    "machine_id",
    "machine_type",
    "line_id",
    "readings",
    "uptime_pct",
    "ok_s",
    "warning_s",
    "fault_s",
    "maintenance_s",
    "no_data_s",
    "anomalies",
    "alerts",
    "seq_gaps",
    "missing_readings",
)


def machine_health(
    readings: pl.DataFrame,
    anomalies: pl.DataFrame,
    start: datetime,
    end: datetime,
    max_gap_s: float,
) -> pl.DataFrame:
    """One row per machine that reported in [start, end).

    In each (machine, metric) series a status sample holds until the series' next sample, at most
    `max_gap_s` (silence longer than that is `no_data_s`); a machine's time per status is the mean
    over its metrics. Uptime counts OK and WARNING time. Data gaps come from the
    per-machine `seq`: a jump of k > 1 between consecutive seqs is one gap of k-1 lost readings.
    """
    hour_s = (end - start).total_seconds()
    if readings.height == 0:
        return pl.DataFrame(
            schema={c: t for c, t in _health_schema().items()},
        )
    # Each (machine, metric) series is a status signal; a sample holds until the series' next
    # sample. Integer codes for machine and metric (categorical codes), so the sorts and the
    # series boundaries work on integers, never on the strings.
    coded = readings.select(
        pl.col("machine_id").cast(pl.Categorical).to_physical().alias("_m"),
        pl.col("metric").cast(pl.Categorical).to_physical().alias("_x"),
        "ts",
        "status_code",
        "seq",
    )
    series = coded.select("_m", "_x", "ts", "status_code").sort(
        "_m", "_x", "ts", maintain_order=True
    )
    same_series = (pl.col("_m") == pl.col("_m").shift(-1)) & (
        pl.col("_x") == pl.col("_x").shift(-1)
    )
    next_ts = pl.when(same_series).then(pl.col("ts").shift(-1))
    end_ts = pl.lit(end, dtype=pl.Datetime("ms", "UTC"))
    held = (
        pl.coalesce(next_ts, end_ts)
        .sub(pl.col("ts"))
        .dt.total_milliseconds()
        .truediv(1000.0)
        .clip(0.0, max_gap_s)
    )
    # A machine's time in a status = the mean over its metrics' series.
    status_time = (
        series.with_columns(held.alias("held_s"))
        .group_by("_m")
        .agg(
            [
                (
                    pl.col("held_s").filter(pl.col("status_code") == code).sum()
                    / pl.col("_x").n_unique()
                ).alias(name)
                for code, name in STATUS_COLUMNS.items()
            ]
        )
    )
    same_machine = pl.col("_m") == pl.col("_m").shift(1)
    seqs = (
        coded.select("_m", "seq")
        .sort("_m", "seq")
        .with_columns(pl.when(same_machine).then(pl.col("seq").diff() - 1).alias("missing"))
        .group_by("_m")
        .agg(
            (pl.col("missing") > 0).sum().cast(pl.Int64).alias("seq_gaps"),
            pl.col("missing")
            .filter(pl.col("missing") > 0)
            .sum()
            .cast(pl.Int64)
            .alias("missing_readings"),
        )
    )
    # Type and line from each machine's first row: group integers, gather the few string rows.
    first_rows = (
        coded.select("_m")
        .with_row_index("_row")
        .group_by("_m")
        .agg(pl.col("_row").first(), pl.len().cast(pl.Int64).alias("readings"))
    )
    machines = pl.concat(
        [
            first_rows,
            readings.select("machine_id", "machine_type", "line_id")[first_rows["_row"]],
        ],
        how="horizontal",
    )
    flagged = anomalies.group_by("machine_id").agg(
        pl.len().cast(pl.Int64).alias("anomalies"),
        pl.col("severity").is_in(ALERT_SEVERITIES).sum().cast(pl.Int64).alias("alerts"),
    )
    health = (
        machines.join(status_time, on="_m", how="left")
        .join(seqs, on="_m", how="left")
        .join(flagged, on="machine_id", how="left")
        .with_columns(
            pl.lit(start, dtype=pl.Datetime("ms", "UTC")).alias("hour"),
            pl.col("anomalies", "alerts", "seq_gaps", "missing_readings").fill_null(0),
            pl.col(list(STATUS_COLUMNS.values())).fill_null(0.0),
        )
        .with_columns(
            (hour_s - pl.sum_horizontal(list(STATUS_COLUMNS.values())))
            .clip(0.0, hour_s)
            .alias("no_data_s"),
            ((pl.col("ok_s") + pl.col("warning_s")) * 100.0 / hour_s).alias("uptime_pct"),
        )
    )
    return health.select(HEALTH_COLUMNS).sort("machine_id")


def _health_schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "hour": pl.Datetime("ms", "UTC"),
        "machine_id": pl.String(),
        "machine_type": pl.String(),
        "line_id": pl.String(),
        "readings": pl.Int64(),
        "uptime_pct": pl.Float64(),
    }
    for name in STATUS_COLUMNS.values():
        schema[name] = pl.Float64()
    schema.update(
        {
            "no_data_s": pl.Float64(),
            "anomalies": pl.Int64(),
            "alerts": pl.Int64(),
            "seq_gaps": pl.Int64(),
            "missing_readings": pl.Int64(),
        }
    )
    return schema
