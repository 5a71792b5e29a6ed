"""The relation detector: a slow drift of one metric that stays inside the range the load moves
it through is found by it (and missed without it), while load changes, a machine moving to an
operating point it has not run at yet, and a stuck-free fault-free day raise nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ot_pipeline.detection import DetectionConfig, detect, relation
from ot_pipeline.detection.config import FLEET_DEFAULTS

T0 = datetime(2026, 1, 5, 6, 0)
HOURS = 8
DRIFT = (5 * 3600, 5 * 3600 + 2400)  # rows (1 s each): 40 minutes, five hours in
NEW_POINT = 7 * 3600 + 1800  # from here the machine runs at a load it has not run at yet


def _ramped(setpoints: np.ndarray, rows: int) -> np.ndarray:
    """The load per second: quarter-hourly setpoints, each ramped over 3 minutes from the one
    before."""
    t = np.arange(rows)
    seg = t // 900
    ramp = np.minimum(1.0, (t - seg * 900) / 180)
    return setpoints[seg] + (setpoints[seg + 1] - setpoints[seg]) * ramp


def _pressure(
    rng: np.random.Generator, speed: np.ndarray, window: tuple[int, int], drift: float
) -> np.ndarray:
    """Head pressure (~ speed^2) whose sensor drifts by `drift` (bar) over the rows `window`."""
    pressure = 0.2 + 4.0 * speed**2 + rng.normal(0, 0.01, speed.size)
    a, b = window
    pressure[a:b] += drift * np.arange(b - a) / (b - a)
    return pressure


def pump(drift: float = 0.0) -> dict[str, np.ndarray]:
    """A variable-speed pump at 1 Hz: quarter-hourly load setpoints (0.55 .. 0.95, ramped over
    3 minutes), speed, flow, head pressure (~ speed^2), motor current and power (~ speed^3,
    which a quadratic fitted at the usual loads does not extrapolate) follow the load. In
    the last half hour the load drops to 0.2, lower than ever before. `drift`: the pressure
    sensor drifts by that much (bar) over DRIFT, then the offset is removed."""
    rng = np.random.default_rng(5)
    rows = HOURS * 3600
    load = _ramped(rng.uniform(0.55, 0.95, rows // 900 + 2), rows)
    load[NEW_POINT:] = 0.2
    speed = 0.3 + 0.7 * load
    pressure = _pressure(rng, speed, DRIFT, drift)
    return {
        "rpm": 1480.0 * speed + rng.normal(0, 2.0, rows),
        "flow": 120.0 * speed + rng.normal(0, 1.0, rows),
        "pressure": pressure,
        "current": 30.0 * (0.25 + 0.75 * load) + rng.normal(0, 0.1, rows),
        "power": 45.0 * (0.05 + 0.95 * speed**3) + rng.normal(0, 0.05, rows),
    }


def readings(channels: dict[str, np.ndarray]) -> pl.DataFrame:
    rows = len(next(iter(channels.values())))
    ts = pl.datetime_range(T0, T0 + timedelta(seconds=rows - 1), "1s", eager=True)
    return pl.concat(
        pl.DataFrame({"machine_id": "pump-07", "metric": name, "ts": ts, "value": values})
        for name, values in channels.items()
    )


def flagged(result: pl.DataFrame, detector: str | None = None) -> pl.DataFrame:
    row = pl.int_range(pl.len()).over("metric")
    out = result.with_columns(row=row).filter(pl.col("is_anomaly"))
    return out if detector is None else out.filter(pl.col("detector") == detector)


def test_a_drift_inside_the_load_range_is_found_by_the_relation_and_missed_without_it() -> None:
    # 0.25 bar at the end: 5 % of the pressure's normal range, 25 noise sigmas
    channels = pump(drift=0.25)
    a, b = DRIFT
    inside = channels["pressure"][a:b]
    normal = np.r_[channels["pressure"][:a], channels["pressure"][b:NEW_POINT]]
    assert normal.min() < inside.min() and inside.max() < normal.max()  # never out of range

    with_relation = detect(readings(channels), DetectionConfig.fleet())
    found = flagged(with_relation, "relation")
    in_fault = found.filter((pl.col("row") >= a) & (pl.col("row") < b))
    assert set(in_fault["metric"]) == {"pressure"}  # not blamed on flow, rpm or current
    assert in_fault.height > 600  # flagged for over 10 of the drift's 40 minutes
    assert in_fault["row"].min() < a + 1800  # within 30 minutes of the start
    assert found.filter((pl.col("row") < a) | (pl.col("row") >= b + 60)).is_empty()

    without = detect(
        readings(channels), DetectionConfig(defaults={**FLEET_DEFAULTS, "relation": False})
    )
    missed = flagged(without).filter(
        (pl.col("metric") == "pressure") & (pl.col("row") >= a) & (pl.col("row") < b)
    )
    assert missed.is_empty()


def test_load_changes_and_a_new_operating_point_raise_no_relation_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = detect(readings(pump()), DetectionConfig.fleet())
    assert flagged(result, "relation").is_empty()
    # what keeps the new operating point quiet: the relation is not extrapolated beyond the
    # range it has learnt (power ~ speed^3 is no quadratic far from the usual loads)
    monkeypatch.setattr(relation, "EXTRAPOLATE", 1e9)
    extrapolated = flagged(detect(readings(pump()), DetectionConfig.fleet()), "relation")
    assert not extrapolated.is_empty()
    assert extrapolated["row"].min() >= NEW_POINT


def test_a_machine_with_one_metric_has_no_relation() -> None:
    single = readings({"pressure": pump(drift=0.25)["pressure"]})
    result = detect(single, DetectionConfig.fleet())
    assert flagged(result, "relation").is_empty()


IDLE = ((3 * 3600, 4 * 3600), (6 * 3600, 8 * 3600))  # rows: the pump idles at its lowest speed
IDLE_DRIFT = (6 * 3600 + 1800, 6 * 3600 + 4200)  # 40 minutes, in the second idle period


def idling_pump(drift: float = 0.0) -> dict[str, np.ndarray]:
    """`pump`, but it idles at its lowest speed (load 0: 30 % speed) for an hour after three
    hours, and for the last two hours (a night of a two-shift line), with no new operating point.
    Idling, its flow and pressure are far below their running levels: each series' regime calls
    it stopped. `drift`: the pressure sensor drifts by that much over IDLE_DRIFT."""
    rng = np.random.default_rng(6)
    rows = HOURS * 3600
    setpoints = rng.uniform(0.55, 0.95, rows // 900 + 2)
    for a, b in IDLE:
        setpoints[a // 900 : b // 900] = 0.0
    load = _ramped(setpoints, rows)
    speed = 0.3 + 0.7 * load
    pressure = _pressure(rng, speed, IDLE_DRIFT, drift)
    return {
        "flow": 120.0 * speed + rng.normal(0, 1.0, rows),
        "pressure": pressure,
        "current": 30.0 * (0.25 + 0.75 * load) + rng.normal(0, 0.1, rows),
    }


def test_a_drift_while_the_machine_idles_is_found_by_the_relation() -> None:
    # 0.25 bar: the idle pressure (0.56 bar) stays under the stop fraction of the running level
    channels = idling_pump(drift=0.25)
    a, b = IDLE_DRIFT
    with_relation = detect(readings(channels), DetectionConfig.fleet())
    found = flagged(with_relation, "relation")
    in_fault = found.filter((pl.col("row") >= a) & (pl.col("row") < b))
    assert set(in_fault["metric"]) == {"pressure"}
    assert in_fault.height > 600  # over 10 of the drift's 40 minutes
    # idling, into and out of it, the relations hold: nothing else is flagged
    assert found.filter((pl.col("row") < a) | (pl.col("row") >= b + 60)).is_empty()
    assert flagged(detect(readings(idling_pump()), DetectionConfig.fleet()), "relation").is_empty()

    # every per-series detector takes the idle pressure for a stopped one and skips it
    without = detect(
        readings(channels), DetectionConfig(defaults={**FLEET_DEFAULTS, "relation": False})
    )
    missed = flagged(without).filter(
        (pl.col("metric") == "pressure") & (pl.col("row") >= a) & (pl.col("row") < b)
    )
    assert missed.is_empty()
