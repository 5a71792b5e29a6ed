"""Look-alikes of the held-out real recordings, run the way an operator would run them.

- A machine temperature sampled every 5 minutes over three months, with a planned shutdown
  (cooled down, flat and low for two days) and a failure that develops slowly over days.
- A 1 Hz water-pump test bench (vibration, current, pressure, temperatures, voltage, flow) with
  valve faults: pressure and flow drop, vibration rises, for several minutes each.

Neither recording has a status column or sequence numbers: stops, gaps and faults are read from
the values alone, as `ot detect` does with a CSV.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from ot_pipeline.detection import detect
from ot_pipeline.detection.cli import run

T0 = datetime(2024, 1, 1)
STEP_5_MIN = 300


def episodes(flags: list[int], gap: int) -> list[tuple[int, int]]:
    """Runs of flagged indices at most `gap` apart, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for i in sorted(flags):
        if runs and i - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def machine_temperature() -> tuple[pl.DataFrame, range, range]:
    """90 days at 5 min: a daily load cycle, a planned shutdown on days 40-42 (cool down, flat
    ambient, heat up again) and a failure developing over the last 4 days before day 88."""
    rng = random.Random(5)
    per_day = 86400 // STEP_5_MIN
    days = 90
    shutdown = range(40 * per_day, 42 * per_day)
    failure = range(84 * per_day, 88 * per_day)
    values = []
    for i in range(days * per_day):
        hour = (i % per_day) * 24 / per_day
        running = 85.0 + 3.0 * math.sin(2 * math.pi * (hour - 8) / 24) + rng.gauss(0, 0.6)
        if shutdown.start - 24 <= i < shutdown.stop + 36:  # 2 h cool-down, 3 h heat-up
            ambient = 21.0 + rng.gauss(0, 0.15)
            if i < shutdown.start:
                share = (shutdown.start - i) / 24
            elif i >= shutdown.stop:
                share = (i - shutdown.stop) / 36
            else:
                share = 0.0
            value = ambient + share * (running - ambient)
        elif i in failure:
            value = running + 14.0 * ((i - failure.start) / len(failure)) ** 1.5
        else:
            value = running
        values.append(round(value, 3))
    frame = pl.DataFrame(
        {
            "machine_id": "machine_temperature",
            "metric": "temperature",
            "ts": [T0 + timedelta(seconds=i * STEP_5_MIN) for i in range(len(values))],
            "value": values,
        }
    )
    return frame, shutdown, failure


def test_five_minute_temperature_shutdown_is_not_flooded_and_the_slow_failure_is_flagged() -> None:
    readings, shutdown, failure = machine_temperature()
    result = detect(readings).with_row_index("i").filter(pl.col("is_anomaly"))
    around_shutdown = result.filter(
        pl.col("i").is_between(shutdown.start - 48, shutdown.stop + 24 * 12)
    )
    assert around_shutdown.height <= 2
    assert set(around_shutdown["severity"].to_list()) <= {"LOW"}
    in_failure = result.filter(pl.col("i").is_between(failure.start, failure.stop - 1))
    assert in_failure.height > 0
    assert min(in_failure["i"].to_list()) < failure.stop - 12 * 24  # at least a day before the end
    elsewhere = result.filter(
        ~pl.col("i").is_between(shutdown.start - 48, shutdown.stop + 24 * 12)
        & ~pl.col("i").is_between(failure.start, failure.stop + 12)
    )
    assert len(episodes(elsewhere["i"].to_list(), gap=12)) <= 3


PUMP_COLUMNS = {
    "Accelerometer1RMS": "vibration",
    "Accelerometer2RMS": "vibration",
    "Current": "current",
    "Pressure": "pressure",
    "Temperature": "temperature",
    "Thermocouple": "temperature",
    "Voltage": "voltage",
    "Volume Flow RateRMS": "flow",
}
VALVE_FAULTS = [(1800, 2220), (3900, 4380), (6000, 6540)]  # rows (1 s each): 7, 8, 9 minutes


def write_pump_bench(path: Path, rows: int = 7800) -> None:
    """Two hours and ten minutes at 1 Hz, ';' separated like the bench's export. A valve fault
    lowers pressure and flow and raises the pumps' vibration for several minutes."""
    rng = random.Random(11)
    header = ["datetime", *PUMP_COLUMNS]
    lines = [";".join(header)]
    wander = 0.0
    for i in range(rows):
        wander = 0.999 * wander + rng.gauss(0, 0.02)  # slow process wander
        fault = any(a <= i < b for a, b in VALVE_FAULTS)
        t = (T0 + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        acc1 = 0.210 + rng.gauss(0, 0.004) + (0.03 if fault else 0.0)
        acc2 = 0.265 + rng.gauss(0, 0.005) + (0.025 if fault else 0.0)
        current = 1.60 + rng.gauss(0, 0.05) + 0.02 * wander
        pressure = 0.38 + rng.gauss(0, 0.01) + 0.01 * wander - (0.12 if fault else 0.0)
        temperature = 71.0 + rng.gauss(0, 0.08) + 0.1 * wander
        thermocouple = 28.5 + rng.gauss(0, 0.05)
        voltage = 232.0 + rng.gauss(0, 0.6)
        flow = 32.0 + rng.gauss(0, 0.5) + 0.3 * wander - (6.0 if fault else 0.0)
        values = [acc1, acc2, current, pressure, temperature, thermocouple, voltage, flow]
        lines.append(";".join([t, *(f"{v:.5f}" for v in values)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def pump_flags(tmp_path: Path, mapped: bool) -> pl.DataFrame:
    source, out = tmp_path / "valve.csv", tmp_path / f"out_{mapped}.csv"
    write_pump_bench(source)
    pairs = [f"{c}={m}" for c, m in PUMP_COLUMNS.items()] if mapped else []
    run(source, out, time_col="datetime", sep=";", metric_pairs=pairs)
    result = pl.read_csv(out, infer_schema=False)
    index = pl.int_range(pl.len()).over("column")
    return result.with_columns(row=index).filter(pl.col("is_anomaly") == "true")


def test_pump_bench_valve_faults_are_flagged_on_pressure_and_flow_in_both_directions(
    tmp_path: Path,
) -> None:
    for mapped in (True, False):  # metric types from --metric, and generic columns
        flags = pump_flags(tmp_path, mapped)
        for start, end in VALVE_FAULTS:
            inside = flags.filter(pl.col("row").is_between(start, end + 30))
            for column in ("Pressure", "Volume Flow RateRMS"):
                drop = inside.filter(pl.col("column") == column)
                assert drop.height > 0, (mapped, start, column)
                assert min(drop["row"].to_list()) < start + 90, (mapped, start, column)
                # a fault that lasts keeps being flagged: not absorbed within its first half
                assert max(drop["row"].to_list()) > (start + end) // 2, (mapped, start, column)
        outside = flags.filter(
            ~pl.any_horizontal(pl.col("row").is_between(a - 5, b + 300) for a, b in VALVE_FAULTS)
        )
        false_alarms = sum(
            len(episodes(part["row"].to_list(), gap=60)) for part in outside.partition_by("column")
        )
        assert false_alarms <= 4, (mapped, false_alarms)
