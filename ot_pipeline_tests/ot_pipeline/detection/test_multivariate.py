"""The multivariate detector: a fault that changes the relation between a pump's channels
without any channel leaving its normal range is found by it and missed by the univariate ones."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from ot_pipeline.detection import DetectionConfig, detect
from ot_pipeline.detection.cli import run
from ot_pipeline.detection.config import RECORDING_DEFAULTS

T0 = datetime(2024, 1, 1)
FAULT = (6000, 6600)  # rows (1 s each): 10 minutes
CHANNELS = ("flow", "pressure", "current", "temperature")


def pump(rows: int = 10_800) -> dict[str, np.ndarray]:
    """Three hours at 1 Hz of a pump whose speed follows the demand (0.6 .. 1.0 of nominal,
    a 150-second cycle plus wander): flow, pressure and current follow the speed, the bearing
    temperature does not. In the fault (a partial blockage) the flow follows a lower speed than
    the pump runs at, while pressure and current do not change: every channel stays inside its
    normal range."""
    rng = np.random.default_rng(21)
    t = np.arange(rows)
    wander = np.cumsum(rng.normal(0, 0.002, rows))
    wander -= np.convolve(wander, np.ones(600) / 600, mode="same")
    speed = np.clip(0.8 + 0.18 * np.sin(2 * np.pi * t / 150) + wander, 0.6, 1.0)
    flow_speed = speed.copy()
    a, b = FAULT
    flow_speed[a:b] = 0.6 + (speed[a:b] - 0.6) * 0.7
    return {
        "flow": 30.0 * flow_speed + rng.normal(0, 0.4, rows),
        "pressure": 2.0 * speed**2 + rng.normal(0, 0.03, rows),
        "current": 1.0 + 0.8 * speed + rng.normal(0, 0.02, rows),
        "temperature": 60.0 + rng.normal(0, 0.1, rows),
    }


def readings(channels: dict[str, np.ndarray]) -> pl.DataFrame:
    rows = len(next(iter(channels.values())))
    ts = [T0 + timedelta(seconds=i) for i in range(rows)]
    return pl.concat(
        pl.DataFrame({"machine_id": "pump", "metric": name, "ts": ts, "value": values})
        for name, values in channels.items()
    )


def flags(result: pl.DataFrame) -> pl.DataFrame:
    row = pl.int_range(pl.len()).over("metric")
    return result.with_columns(row=row).filter(pl.col("is_anomaly"))


def test_fault_inside_every_normal_range_is_found_only_by_the_multivariate_detector() -> None:
    channels = pump()
    a, b = FAULT
    for values in channels.values():  # the fault stays inside every channel's normal range
        normal = np.concatenate([values[:a], values[b:]])
        assert normal.min() <= values[a:b].min() and values[a:b].max() <= normal.max()
    data = readings(channels)
    univariate = DetectionConfig(defaults={**RECORDING_DEFAULTS, "multivariate": False})
    multivariate = DetectionConfig(defaults=RECORDING_DEFAULTS)
    in_fault = pl.col("row").is_between(a, b + 60)

    missed = flags(detect(data, univariate))
    assert missed.filter(in_fault).height == 0

    found = flags(detect(data, multivariate))
    inside = found.filter(in_fault)
    assert set(inside["detector"].to_list()) == {"multivariate"}
    assert inside["row"].min() < a + 120  # within two minutes
    # flagged on the flow (the channel that broke the relation) over much of the fault (near
    # the lowest speed the blockage costs no flow: nothing to see there)
    assert inside.filter(pl.col("metric") == "flow").height > (b - a) / 3
    outside = found.filter(~in_fault & (pl.col("row") >= 400))
    assert outside.select(pl.col("row").unique()).height <= 60  # a minute of false flags at most


def test_multivariate_is_off_for_a_single_metric_and_for_the_fleet_default() -> None:
    channels = pump()
    one = readings({"flow": channels["flow"]})
    result = detect(one, DetectionConfig(defaults=RECORDING_DEFAULTS))
    assert "multivariate" not in result["detector"].drop_nulls().to_list()
    fleet = detect(readings(channels))  # DetectionConfig(): multivariate off
    assert "multivariate" not in fleet["detector"].drop_nulls().to_list()
    assert not DetectionConfig().settings_for("pump", "flow").multivariate
    assert replace(DetectionConfig().settings_for(None, "flow"), multivariate=True).multivariate


def test_ot_detect_uses_the_value_columns_as_the_channels_of_one_machine(tmp_path: Path) -> None:
    channels = pump()
    source, out = tmp_path / "pump.csv", tmp_path / "out.csv"
    rows = len(channels["flow"])
    pl.DataFrame(
        {"time": [(T0 + timedelta(seconds=i)).isoformat() for i in range(rows)], **channels}
    ).write_csv(source)
    run(source, out, time_col="time")
    result = pl.read_csv(out, infer_schema=False)
    result = result.with_columns(row=pl.int_range(pl.len()).over("column"))
    a, b = FAULT
    inside = result.filter(pl.col("is_anomaly") == "true", pl.col("row").is_between(a, b + 60))
    assert "multivariate" in inside["detector"].to_list()
