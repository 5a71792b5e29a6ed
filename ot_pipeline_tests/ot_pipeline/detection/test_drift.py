"""Drifts are watched both ways, whatever the metric's level direction (pure).

A low value of a machinery quantity is idle, not broken: its *level* is watched upwards only.
A drift is something else: a slow, consistent change of a running series away from where it
sits — a sensor losing its calibration, a process wandering — and its sign says nothing about
idling. Normal moves of the series (load steps, thermal responses) must still not count.
"""

from __future__ import annotations

import random

import polars as pl

from ot_pipeline.detection import DetectionConfig, detect
from ot_pipeline_tests.ot_pipeline.detection.test_detectors import flagged, noise, series

UP_ONLY = DetectionConfig(defaults={"drift_direction": "up"})


def drifts(values: list[float], metric: str, config: DetectionConfig | None = None) -> pl.DataFrame:
    result = flagged(detect(series(values, metric=metric), config))
    return result.filter(pl.col("detector") == "drift")


def test_a_temperature_drifting_down_is_flagged_while_it_lasts() -> None:
    values = noise(12000, level=60.0, sigma=1.0, seed=12)
    for i in range(8000, 12000):
        values[i] -= (i - 8000) * 0.004  # 16 sigma over 4000 readings
    found = drifts(values, "temperature")
    assert found.height > 0
    assert min(found["i"].to_list()) > 8000
    assert flagged(detect(series(values[:8000], metric="temperature"))).is_empty()
    # watched upwards only (the level's direction, the default before issue 15), it was missed
    assert drifts(values, "temperature", UP_ONLY).is_empty()
    # the drift does not make the level detector flag low temperatures (idle is not broken)
    levels = flagged(detect(series(values, metric="temperature")))
    assert levels.filter(pl.col("detector") == "level").is_empty()


def test_a_temperature_cooling_after_load_steps_is_not_a_drift() -> None:
    # a machine temperature following load steps with a lag of 600-1200 readings, in both
    # directions, at random setpoints every quarter hour: cooling is a normal move
    for seed, lag in ((23, 600.0), (24, 1200.0)):
        rng = random.Random(seed)
        values, level, target = [], 50.0, 50.0
        for i in range(30000):
            if i % 900 == 0:
                target = 40.0 + 20.0 * rng.random()
            level += (target - level) / lag
            values.append(level + rng.gauss(0.0, 0.1))
        assert drifts(values, "temperature").is_empty(), seed
