"""`anomalies`: the detectors applied to each hour, warmed with trailing history from the hour
before, keeping the hour's flagged readings."""

from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from ot_pipeline.assets.metadata import Stopwatch, preview
from ot_pipeline.assets.readings import readings
from ot_pipeline.partitions import HOURLY_FOLLOWING
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_pipeline.transforms.anomalies import ANOMALY_COLUMNS, hour_anomalies
from streaming.lake import Lake
from streaming.lake.files import read_hour, write_hour
from streaming.lake.hours import hour_bounds, hour_key

DETECTION_INPUT = [
    "event_id",
    "machine_id",
    "machine_type",
    "line_id",
    "metric",
    "ts",
    "value",
    "seq",
    "status_code",
]


@dg.asset(
    deps=[readings],
    **HOURLY_FOLLOWING,
    group_name="hourly_analytics",
    kinds={"parquet", "polars"},
)
def anomalies(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineConfig
) -> dg.MaterializeResult:
    """Flagged readings of the hour: score, severity and the detector that fired (spike, level,
    limits, rate of change, drift, ramp, stuck-at, gaps), warmed with the previous hour."""
    from ot_pipeline.detection import detect

    the_lake = lake.lake()
    clock = Stopwatch()
    history_span = timedelta(minutes=pipeline.detection_history_minutes)
    flagged_total = scored = 0
    frames: list[pl.DataFrame] = []
    for key in context.partition_keys:
        start, end = hour_bounds(key)
        with clock.time("read_s"):
            hour = read_hour(the_lake, "readings", key, columns=DETECTION_INPUT)
            if hour is None:
                raise dg.Failure(f"readings {key} is missing: materialize readings first")
            history = _history(the_lake, start, history_span, hour)
        with clock.time("detect_s"):
            flagged = hour_anomalies(history, hour, start, end, detect)
        with clock.time("write_s"):
            write_hour(the_lake, "anomalies", key, flagged)
        scored += hour.height
        flagged_total += flagged.height
        frames.append(flagged)
    everything = (
        pl.concat(frames) if frames else pl.DataFrame(schema=dict.fromkeys(ANOMALY_COLUMNS))
    )
    by_detector = (
        everything.group_by("detector", "severity").len().sort("len", descending=True)
        if everything.height
        else pl.DataFrame()
    )
    return dg.MaterializeResult(
        metadata={
            "rows": flagged_total,
            "readings_scored": scored,
            "anomaly_rate": round(flagged_total / scored, 6) if scored else 0.0,
            "hours": len(context.partition_keys),
            **clock.seconds,
            "by_detector": preview(by_detector, 20),
            "preview": preview(everything.sort("score", descending=True)),
        }
    )


def _history(lake: Lake, start: datetime, span: timedelta, hour: pl.DataFrame) -> pl.DataFrame:
    """The last `span` of the previous hour's readings: only the detection columns are read
    and the time filter runs inside the scan."""
    previous = lake.hour_path("readings", hour_key(start - timedelta(hours=1)))
    if not previous.exists() or span.total_seconds() <= 0:
        return hour.clear()
    return (
        pl.scan_parquet(previous)
        .select(DETECTION_INPUT)
        .filter(pl.col("ts") >= start - span)
        .collect()
    )


@dg.asset_check(
    asset=anomalies,
    blocking=True,
    description="Every hour has an anomalies file with the expected columns, flagged rows only "
    "inside their hour.",
)
def anomalies_schema(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    the_lake = lake.lake()
    problems: list[str] = []
    for key in context.partition_keys:
        frame = read_hour(the_lake, "anomalies", key)
        if frame is None:
            problems.append(f"{key}: missing")
            continue
        if tuple(frame.columns) != ANOMALY_COLUMNS:
            problems.append(f"{key}: columns {frame.columns}")
        start, end = hour_bounds(key)
        outside = frame.filter((pl.col("ts") < start) | (pl.col("ts") >= end)).height
        if outside:
            problems.append(f"{key}: {outside} rows outside the hour")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "hours": len(context.partition_keys),
            "problems": "; ".join(problems[:10]) or "none",
        },
    )
