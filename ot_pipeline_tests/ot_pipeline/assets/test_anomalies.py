"""The `anomalies` asset, hour by hour from its state in the lake, against one continuous run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from ot_pipeline.assets.anomalies import STATE, anomalies
from ot_pipeline.assets.readings import readings
from ot_pipeline.detection import DetectionConfig, detect
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_tools.synthetic_landing import land
from streaming.lake import Lake
from streaming.lake.hours import hour_key

START = datetime(2026, 11, 5, 6, 0, tzinfo=UTC)  # within the tests' partitions (conftest)
HOURS = [hour_key(START + timedelta(hours=h)) for h in range(3)]
FLAGS = ["event_id", "score", "severity", "detector"]


def _materialize(lake: Lake, hour: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [readings, anomalies],
        partition_key=hour,
        resources={"lake": LakeResource(root=str(lake.root)), "pipeline": PipelineConfig()},
        selection=[readings, anomalies],
    )
    assert result.success
    return result


def _warmed_from(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key == anomalies.key
    ]
    materialization = event.step_materialization_data.materialization
    return str(materialization.metadata["warmed_from"].value)


def _flags(lake: Lake) -> pl.DataFrame:
    paths = lake.hour_paths("anomalies", HOURS)
    return pl.read_parquet(paths).select(FLAGS).sort("event_id")


def test_hourly_anomalies_equal_one_continuous_run_and_a_backfill_in_order_reproduces_them(
    tmp_path: Path,
) -> None:
    from streaming.simulator import generate

    lake = Lake(tmp_path / "lake")
    data = generate(6, START, len(HOURS), 1.0, 11, "heavy", {"clock_skew": 0.0})
    land(lake, data.readings, file_rows=100_000)
    warmed = [_warmed_from(_materialize(lake, hour)) for hour in HOURS]
    assert "history" in warmed[0]  # the first hour has no state before it
    assert all(w.endswith(": state") for w in warmed[1:])
    assert all(lake.hour_path(STATE, hour).exists() for hour in HOURS)

    # one continuous run over the same readings, as the lake holds them
    everything = pl.read_parquet(lake.hour_paths("readings", HOURS))
    continuous = (
        detect(everything, DetectionConfig.fleet())
        .filter(pl.col("is_anomaly"))
        .select(FLAGS)
        .sort("event_id")
    )
    hourly = _flags(lake)
    assert continuous.height > 100
    assert hourly.equals(continuous)

    # a backfill replaying the hours in order writes the same flags
    for hour in HOURS:
        lake.hour_path("anomalies", hour).unlink()
    for hour in HOURS:
        _materialize(lake, hour)
    assert _flags(lake).equals(continuous)

    # an hour whose previous state is missing warms up on history again, and says so
    lake.hour_path(STATE, HOURS[1]).unlink()
    assert "120 min of history" in _warmed_from(_materialize(lake, HOURS[2]))
