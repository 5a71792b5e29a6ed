"""`anomalies`: the detectors applied to each hour, resumed from the detector state the hour
before left in the lake, keeping the hour's flagged readings.

Each hour writes its detectors' state (`anomalies_state/<hour>.parquet`: per series, the block
history, the readings the next hour's short windows look back into, run lengths and alarm
state) before its flags. The next hour resumes from it, so hourly materialization flags exactly
what one continuous run over the same readings would, and a backfill that replays hours in order
reproduces them. An hour whose previous state is missing (the first hour, a gap, a backfill
started in the middle) warms its detectors with the last `detection_history_minutes` of
readings before it instead, and says so in its metadata (`warmed_from`)."""

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from ot_pipeline.detection.resume import DetectorState

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
STATE = "anomalies_state"  # the detectors' state after each hour (lake folder)


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
    limits, rate of change, drift, ramp, stuck-at, gaps), resumed from the detectors' state the
    previous hour left (warmed with history where that state is missing)."""
    from ot_pipeline.detection.config import DetectionConfig
    from ot_pipeline.detection.engine import detect_resumed

    the_lake = lake.lake()
    config = DetectionConfig.fleet()
    clock = Stopwatch()
    history_span = timedelta(minutes=pipeline.detection_history_minutes)
    flagged_total = scored = state_bytes = 0
    warmed: list[str] = []
    frames: list[pl.DataFrame] = []
    for key in context.partition_keys:
        start, end = hour_bounds(key)
        with clock.time("read_s"):
            hour = read_hour(the_lake, "readings", key, columns=DETECTION_INPUT)
            if hour is None:
                raise dg.Failure(f"readings {key} is missing: materialize readings first")
            previous = read_state(the_lake, start - timedelta(hours=1))
            if previous is None:  # no state to resume from: warm up on history
                history = _history(the_lake, start, history_span, hour)
                warmed.append(f"{key}: {pipeline.detection_history_minutes} min of history")
            else:
                history = hour.clear()
                warmed.append(f"{key}: state")
        after: list[DetectorState | None] = []

        def resumed(
            frame: pl.DataFrame,
            previous: "DetectorState | None" = previous,
            after: "list[DetectorState | None]" = after,
        ) -> pl.DataFrame:
            scored, state = detect_resumed(frame, previous, config)
            after.append(state)
            return scored

        with clock.time("detect_s"):
            flagged = hour_anomalies(history, hour, start, end, resumed)
        with clock.time("write_s"):
            state = after[0] if after else previous
            if state is not None:  # first, so that flags never exist without the state after
                state_bytes += write_hour(the_lake, STATE, key, state.to_frame()).stat().st_size
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
            "warmed_from": "; ".join(warmed[:24]),
            "state_bytes": state_bytes,
            **clock.seconds,
            "by_detector": preview(by_detector, 20),
            "preview": preview(everything.sort("score", descending=True)),
        }
    )


def read_state(lake: Lake, hour_start: datetime) -> "DetectorState | None":
    """The detectors' state after the hour starting at `hour_start` (None: not written)."""
    from ot_pipeline.detection.resume import DetectorState

    frame = read_hour(lake, STATE, hour_key(hour_start))
    return DetectorState.from_frame(frame) if frame is not None else None


def _history(lake: Lake, start: datetime, span: timedelta, hour: pl.DataFrame) -> pl.DataFrame:
    """The last `span` of readings before `start` (from the hours it covers that exist): only
    the detection columns are read and the time filter runs inside the scan."""
    hours = math.ceil(span / timedelta(hours=1))
    paths = [
        lake.hour_path("readings", hour_key(start - timedelta(hours=h)))
        for h in range(hours, 0, -1)
    ]
    paths = [p for p in paths if p.exists()]
    if not paths:  # no hour before it, or no span (then no hour is asked for)
        return hour.clear()
    return (
        pl.scan_parquet(paths)
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
