"""How good are the alarms: flags measured against the simulator's ground-truth faults.

Event-window matching, with alarms counted as *episodes*:

- An episode is a run of flagged readings of one (machine, metric) whose consecutive flags are at
  most `merge_gap_s` apart: one long fault flagged continuously is one alarm, not thousands.
- A fault's window is [start, end + tolerance]. A detectable fault is *detected* when a reading of
  its metric (any metric of the machine for machine-wide faults such as packet loss) is flagged
  inside its window; its delay is the first such flag's time minus the fault's start.
- An episode that overlaps the window of a detectable fault of the same machine is a true alarm.
  One that overlaps only windows of faults not meant for the value detectors (latency, duplicate,
  clock skew, malformed) is *excused*: the data really is odd there, so it is neither true nor
  false. So is an episode whose every reading carries a device status code in
  `excused_status_codes` (default 2 = the device itself reports a fault): the machine says it is
  failing, an alarm then is not noise.
- Every other episode is a false alarm. Precision = true / (true + false) episodes.

False alarms cannot be attributed to a fault type, so the per-type rows carry the global precision
and false-alarm rate; their recall, delay and F1 are the type's own.
"""

from __future__ import annotations

import polars as pl

DAY_MS = 86_400_000
ALL = "ALL"

SCORECARD_SCHEMA: dict[str, pl.DataType] = {
    "fault_type": pl.String(),
    "faults": pl.Int64(),
    "detected": pl.Int64(),
    "recall": pl.Float64(),
    "precision": pl.Float64(),
    "f1": pl.Float64(),
    "median_delay_s": pl.Float64(),
    "p90_delay_s": pl.Float64(),
    "true_episodes": pl.Int64(),
    "false_alarms": pl.Int64(),
    "excused_episodes": pl.Int64(),
    "machine_days": pl.Float64(),
    "false_alarms_per_machine_day": pl.Float64(),
}


def _ms(frame: pl.DataFrame, column: str) -> pl.Expr:
    dtype = frame.schema[column]
    if isinstance(dtype, pl.Datetime):
        return pl.col(column).dt.epoch("ms")
    return pl.col(column).cast(pl.Int64)


def episodes(anomalies: pl.DataFrame, *, merge_gap_s: float) -> pl.DataFrame:
    """Alarm episodes: machine_id, metric, start_ms, end_ms, readings, all_excused_status."""
    flagged = anomalies.filter(pl.col("is_anomaly")).select(
        "machine_id",
        "metric",
        _ms(anomalies, "ts").alias("t"),
        (pl.col("status_code") if "status_code" in anomalies.columns else pl.lit(None)).alias(
            "status_code"
        ),
    )
    if flagged.height == 0:
        return pl.DataFrame(
            schema={
                "machine_id": pl.String,
                "metric": pl.String,
                "start_ms": pl.Int64,
                "end_ms": pl.Int64,
                "readings": pl.UInt32,
                "status_codes": pl.List(pl.Int64),
            }
        )
    gap_ms = int(merge_gap_s * 1000)
    return (
        flagged.sort("machine_id", "metric", "t")
        .with_columns(
            _new=(pl.col("t").diff().fill_null(gap_ms + 1) > gap_ms).over("machine_id", "metric")
        )
        .with_columns(_episode=pl.col("_new").cum_sum().over("machine_id", "metric"))
        .group_by("machine_id", "metric", "_episode")
        .agg(
            start_ms=pl.col("t").min(),
            end_ms=pl.col("t").max(),
            readings=pl.len(),
            status_codes=pl.col("status_code").cast(pl.Int64).unique(),
        )
        .drop("_episode")
        .sort("machine_id", "metric", "start_ms")
    )


def _machine_days(anomalies: pl.DataFrame) -> float:
    spans = anomalies.group_by("machine_id").agg(
        span=_ms(anomalies, "ts").max() - _ms(anomalies, "ts").min()
    )
    total = spans["span"].sum()
    return float(total or 0) / DAY_MS


def _first_flags(anomalies: pl.DataFrame, windows: pl.DataFrame) -> pl.DataFrame:
    """Per fault window (fault_id, machine_id, fault_metric, start_ms, until_ms) that was hit:
    the first flag of its metric (any metric when fault_metric is null) inside it, as
    first_ms and first_detector (null when the flags carry no detector)."""
    detector = pl.col("detector") if "detector" in anomalies.columns else pl.lit(None, pl.String)
    flags = anomalies.filter(pl.col("is_anomaly")).select(
        "machine_id", "metric", _ms(anomalies, "ts").alias("t"), detector.alias("detector")
    )
    return (
        windows.join(flags, on="machine_id", how="inner")
        .filter(
            (pl.col("t") >= pl.col("start_ms"))
            & (pl.col("t") <= pl.col("until_ms"))
            & (pl.col("fault_metric").is_null() | (pl.col("fault_metric") == pl.col("metric")))
        )
        .sort("t")
        .group_by("fault_id")
        .agg(first_ms=pl.col("t").first(), first_detector=pl.col("detector").first())
    )


def score(
    anomalies: pl.DataFrame,
    faults: pl.DataFrame,
    *,
    tolerance_s: float,
    merge_gap_s: float | None = None,
    machine_days: float | None = None,
    excused_status_codes: tuple[int, ...] = (2,),
) -> pl.DataFrame:
    """One row per detectable fault type plus an "ALL" row (see the module docstring).

    `anomalies` is the output of `detect` (every reading, or at least every flagged one: then pass
    `machine_days`); `faults` holds the ground-truth fault records (fault_id, fault_type,
    machine_id, metric, start_ms, end_ms, detectable).
    """
    merge_gap_s = tolerance_s if merge_gap_s is None else merge_gap_s
    tol_ms = int(tolerance_s * 1000)
    days = _machine_days(anomalies) if machine_days is None else machine_days
    windows = faults.select(
        "fault_id",
        "fault_type",
        "machine_id",
        pl.col("metric").cast(pl.String).alias("fault_metric"),
        pl.col("start_ms").cast(pl.Int64),
        (pl.col("end_ms").cast(pl.Int64) + tol_ms).alias("until_ms"),
        pl.col("detectable").cast(pl.Boolean),
    )
    detectable = windows.filter(pl.col("detectable"))

    # Recall and delay: first flag of the fault's metric inside the fault's window.
    hits = _first_flags(anomalies, detectable).select("fault_id", "first_ms")
    per_fault = detectable.join(hits, on="fault_id", how="left").with_columns(
        detected=pl.col("first_ms").is_not_null(),
        delay_s=(pl.col("first_ms") - pl.col("start_ms")) / 1000.0,
    )

    # Precision: classify every episode by the fault windows (any metric) it overlaps.
    eps = episodes(anomalies, merge_gap_s=merge_gap_s).with_row_index("episode")
    overlaps = (
        eps.join(windows, on="machine_id", how="inner")
        .filter(
            (pl.col("start_ms") <= pl.col("until_ms"))
            & (pl.col("end_ms") >= pl.col("start_ms_right"))
        )
        .group_by("episode")
        .agg(true=pl.col("detectable").any())
    )
    excused_codes = list(excused_status_codes)
    classified = eps.join(overlaps, on="episode", how="left").with_columns(
        kind=pl.when(pl.col("true"))
        .then(pl.lit("true"))
        .when(
            pl.col("true").is_not_null()
            | (
                pl.col("status_codes").list.eval(pl.element().is_in(excused_codes)).list.all()
                & (pl.col("status_codes").list.len() > 0)
            )
        )
        .then(pl.lit("excused"))
        .otherwise(pl.lit("false"))
    )
    true_eps = int((classified["kind"] == "true").sum())
    false_eps = int((classified["kind"] == "false").sum())
    excused = int((classified["kind"] == "excused").sum())
    precision = true_eps / (true_eps + false_eps) if true_eps + false_eps else None
    fa_rate = false_eps / days if days > 0 else None

    def row(fault_type: str, subset: pl.DataFrame) -> dict[str, object]:
        n = subset.height
        found = int(subset["detected"].sum()) if n else 0
        recall = found / n if n else None
        delays = subset.filter(pl.col("detected"))["delay_s"]
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
        )
        return {
            "fault_type": fault_type,
            "faults": n,
            "detected": found,
            "recall": recall,
            "precision": precision,
            "f1": f1,
            "median_delay_s": delays.median() if delays.len() else None,
            "p90_delay_s": delays.quantile(0.9, "nearest") if delays.len() else None,
            "true_episodes": true_eps,
            "false_alarms": false_eps,
            "excused_episodes": excused,
            "machine_days": round(days, 3),
            "false_alarms_per_machine_day": fa_rate,
        }

    types = sorted(per_fault["fault_type"].unique().to_list())
    rows = [row(t, per_fault.filter(pl.col("fault_type") == t)) for t in types]
    rows.append(row(ALL, per_fault))
    return pl.DataFrame(rows, schema=SCORECARD_SCHEMA, orient="row")


def per_fault(anomalies: pl.DataFrame, faults: pl.DataFrame, *, tolerance_s: float) -> pl.DataFrame:
    """Each detectable fault with whether and when it was first flagged (for drill-down)."""
    tol_ms = int(tolerance_s * 1000)
    detectable = faults.filter(pl.col("detectable")).with_columns(
        pl.col("metric").cast(pl.String).alias("fault_metric"),
        (pl.col("end_ms").cast(pl.Int64) + tol_ms).alias("until_ms"),
    )
    hits = _first_flags(anomalies, detectable)
    return detectable.join(hits, on="fault_id", how="left").with_columns(
        delay_s=(pl.col("first_ms") - pl.col("start_ms")) / 1000.0
    )
