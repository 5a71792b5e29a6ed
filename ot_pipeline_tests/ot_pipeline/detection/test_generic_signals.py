"""Look-alikes of generic (unmapped) signals that used to flood `ot detect` with false alarms.

- A held / quantized signal: most steps are zero, so a noise estimate from the median step was
  about zero and every real step counted as many sigmas (spike, rate of change on all of them).
- A count with a strong daily cycle: every nightly low was flagged as a stop (`regime`).
- A utilisation jumping between levels: short visits to another level were spikes, its low
  level a stop, all the time.

Each is run with the recording defaults of `ot detect`, as a generic column, and must give a
few false alarms at most while its real anomalies are still found. The alarm budget (flood
suppression) is tested on its own at the end.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection import DetectionConfig, detect
from ot_pipeline.detection.config import RECORDING_DEFAULTS

T0 = datetime(2024, 1, 1)
RECORDING = DetectionConfig(defaults=RECORDING_DEFAULTS)


def _frame(values: np.ndarray, step_s: int, name: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "machine_id": name,
            "metric": "generic",
            "ts": [T0 + timedelta(seconds=i * step_s) for i in range(values.size)],
            "value": values,
        }
    )


def _flags(values: np.ndarray, step_s: int, config: DetectionConfig = RECORDING) -> pl.DataFrame:
    result = detect(_frame(values, step_s, "signal"), config).with_row_index("i")
    return result.filter(pl.col("is_anomaly"))


def _episodes(rows: list[int], gap: int) -> int:
    count, last = 0, None
    for i in sorted(rows):
        if last is None or i - last > gap:
            count += 1
        last = i
    return count


def _split(flags: pl.DataFrame, windows: list[tuple[int, int]], after: int) -> tuple[Any, Any]:
    inside = pl.any_horizontal(pl.col("i").is_between(a, b + after) for a, b in windows)
    return flags.filter(inside), flags.filter(~inside)


def held_signal() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """21 days at 1 min of a slow process reported at a resolution of 0.5 (about 80 % of steps
    are zero), with one spike of 10 steps of resolution and a 3-hour level shift."""
    rng = np.random.default_rng(3)
    n = 30_000
    i = np.arange(n)
    wander = np.zeros(n)
    for k in range(1, n):
        wander[k] = 0.995 * wander[k - 1] + rng.normal(0, 0.05)
    x = 50 + 2 * np.sin(2 * np.pi * i / 1440) + wander + rng.normal(0, 0.08, n)
    x[12_000] += 5.0
    x[20_000:20_180] += 6.0
    return np.round(x / 0.5) * 0.5, [(12_000, 12_000), (20_000, 20_180)]


def test_held_quantized_signal_gives_few_false_alarms_and_finds_its_anomalies() -> None:
    x, faults = held_signal()
    assert np.mean(np.diff(x) == 0) > 0.75  # mostly held
    inside, outside = _split(_flags(x, 60), faults, after=12)
    assert _episodes(outside["i"].to_list(), gap=60) <= 3
    for start, end in faults:
        found = inside.filter(pl.col("i").is_between(start, end + 12))
        assert found.height > 0, (start, end)


def daily_counts() -> tuple[np.ndarray, range]:
    """30 days of 5-minute counts: busy days, nights at 3 % of the peak, quieter weekends, and
    one abnormal day (day 20: from 07:00 on, a tenth of the usual counts)."""
    rng = np.random.default_rng(4)
    per_day, days = 288, 30
    i = np.arange(per_day * days)
    hour = (i % per_day) / 12.0
    profile = 0.03 + 0.97 * np.clip(np.sin(np.pi * (hour - 6) / 16), 0, None) ** 1.5
    weekly = np.where((i // per_day) % 7 >= 5, 0.8, 1.0)
    rate = 3000 * profile * weekly
    x = rng.poisson(rate).astype(float)
    bad = range(20 * per_day, 21 * per_day)
    x[bad.start + 84 : bad.stop] = rng.poisson(rate[bad.start + 84 : bad.stop] * 0.1)
    return x, bad


def test_daily_count_nightly_lows_are_not_stops_and_the_abnormal_day_is_found() -> None:
    x, bad = daily_counts()
    flags = _flags(x, 300)
    stops = flags.filter(pl.col("detector") == "regime")
    # the first two days teach the profile; after that no night is a stop
    nightly = stops.filter(~pl.col("i").is_between(bad.start, bad.stop) & (pl.col("i") >= 576))
    assert nightly.height == 0, nightly
    assert flags.filter(pl.col("i").is_between(bad.start, bad.stop)).height > 0
    outside = flags.filter(~pl.col("i").is_between(bad.start, bad.stop + 12))
    assert _episodes(outside["i"].to_list(), gap=12) <= 4


def utilisation() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """28 days at 5 min of a utilisation that jumps between 15, 30 and 55 % every few readings
    (8 on average), with one three-hour stretch at 97 %."""
    rng = np.random.default_rng(5)
    n = 8064
    levels = [15.0, 30.0, 55.0]
    x = np.empty(n)
    k = 0
    while k < n:
        dwell = int(rng.geometric(1 / 8))
        x[k : k + dwell] = levels[int(rng.integers(3))]
        k += dwell
    x = x + rng.normal(0, 1.5, n)
    x[6000:6036] = 97 + rng.normal(0, 1, 36)
    return np.clip(np.round(x, 1), 0, 100), [(6000, 6036)]


def test_utilisation_with_frequent_level_changes_does_not_flood() -> None:
    x, faults = utilisation()
    inside, outside = _split(_flags(x, 300), faults, after=12)
    assert _episodes(outside["i"].to_list(), gap=12) <= 4
    assert outside.filter(pl.col("detector") == "regime").height == 0  # its low is no stop
    assert inside.height > 0


def test_alarm_budget_mutes_a_flood_and_lets_alarms_back_once_it_ends() -> None:
    """Spikes every 200 readings for a while (a flood), then one spike long after: the flood
    raises `alarm_budget` alarms, the later spike is flagged again."""
    rng = np.random.default_rng(6)
    n = 40_000
    x = 10.0 + rng.normal(0, 0.1, n)
    flood = list(range(2_000, 12_000, 200))
    x[flood] += 3.0
    x[30_000] += 3.0
    budget = DetectionConfig(defaults={"spike_usual_threshold": 0.0})
    unlimited = DetectionConfig(defaults={"spike_usual_threshold": 0.0, "alarm_budget": 0})
    for config, expected in ((unlimited, len(flood)), (budget, 6)):
        flags = _flags(x, 1, config)
        in_flood = flags.filter(pl.col("i") < 20_000)
        assert _episodes(in_flood["i"].to_list(), gap=60) == expected
        assert flags.filter(pl.col("i") == 30_001).height == 1  # back after the flood
