"""`machine_health_hourly`: uptime, time per device status, anomaly and alert counts and data
gaps (from seq gaps) per machine and hour."""

import dagster as dg
import polars as pl

from ot_pipeline.assets.anomalies import anomalies
from ot_pipeline.assets.metadata import Stopwatch, preview
from ot_pipeline.assets.readings import readings
from ot_pipeline.partitions import HOURLY_FOLLOWING
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_pipeline.transforms.anomalies import empty_anomalies
from ot_pipeline.transforms.health import machine_health
from streaming.lake.files import read_hour, write_hour
from streaming.lake.hours import hour_bounds

# The readings columns machine_health uses (the rest, event_id above all, is not read).
HEALTH_INPUT = ["machine_id", "machine_type", "line_id", "metric", "ts", "status_code", "seq"]


@dg.asset(
    deps=[readings, anomalies],
    **HOURLY_FOLLOWING,
    group_name="hourly_analytics",
    kinds={"parquet", "polars"},
)
def machine_health_hourly(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineConfig
) -> dg.MaterializeResult:
    """One row per machine and hour it reported in: uptime, time per device status, anomaly
    and alert counts, data gaps."""
    the_lake = lake.lake()
    clock = Stopwatch()
    frames: list[pl.DataFrame] = []
    for key in context.partition_keys:
        start, end = hour_bounds(key)
        with clock.time("read_s"):
            hour = read_hour(the_lake, "readings", key, columns=HEALTH_INPUT)
            flagged = read_hour(the_lake, "anomalies", key)
        if hour is None or flagged is None:
            raise dg.Failure(f"readings or anomalies {key} missing: materialize them first")
        with clock.time("compute_s"):
            health = machine_health(
                hour,
                flagged if flagged.height else empty_anomalies(),
                start,
                end,
                pipeline.health_max_gap_seconds,
            )
        with clock.time("write_s"):
            write_hour(the_lake, "machine_health_hourly", key, health)
        frames.append(health)
    everything = pl.concat(frames)
    return dg.MaterializeResult(
        metadata={
            "rows": everything.height,
            "machines": everything["machine_id"].n_unique(),
            "mean_uptime_pct": _mean(everything["uptime_pct"]),
            "seq_gaps": int(everything["seq_gaps"].sum()),
            "missing_readings": int(everything["missing_readings"].sum()),
            "hours": len(context.partition_keys),
            **clock.seconds,
            "preview": preview(everything.sort("uptime_pct")),
        }
    )


def _mean(series: pl.Series) -> float:
    value = series.mean()
    return round(float(value), 2) if isinstance(value, int | float) else 0.0
