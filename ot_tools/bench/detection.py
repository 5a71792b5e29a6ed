"""Detection throughput: `ot bench detection` (no servers needed).

Three figures, each as readings per wall second and per CPU second (= per core, whatever number
of threads Polars used): `detect()` on simulated readings (5 M, quick: 500 k) with the default
config and with the fleet's (`DetectionConfig.fleet()`, the `anomalies` asset's: the relation
detector on), and `ot detect` on a wide CSV of the same order of size (parse + unpivot + detect
+ write).
"""

from __future__ import annotations

import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from ot_pipeline.detection.cli import run as run_cli
from ot_pipeline.detection.config import DetectionConfig
from ot_pipeline.detection.engine import detect
from streaming.settings import Settings

READINGS_PER_MACHINE_HOUR = 3600 * 3.6  # 1 s interval, 3.6 metrics per machine on average


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _write_csv(path: Path, rows: int, columns: int) -> None:
    rng = random.Random(1)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    base = pl.DataFrame({"time": [(start + timedelta(seconds=i)).isoformat() for i in range(rows)]})
    values = {
        f"signal_{c}": [20.0 + c + rng.gauss(0, 1.0) for _ in range(rows)] for c in range(columns)
    }
    base.with_columns(**{k: pl.Series(v) for k, v in values.items()}).write_csv(path, separator=";")


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from streaming.simulator import generate

    del settings  # pure benchmark: no servers
    target = 500_000 if quick else 5_000_000
    machines = 50
    hours = target / (machines * READINGS_PER_MACHINE_HOUR)
    data = generate(machines, datetime(2026, 1, 5, 6, tzinfo=UTC), hours, 1.0, 7, "default")
    readings = data.readings.unique("event_id", keep="first", maintain_order=True)
    detected, wall, cpu = _timed(lambda: detect(readings))
    figures: dict[str, Any] = {
        "detect_readings": readings.height,
        "detect_wall_s": round(wall, 2),
        "detect_cpu_s": round(cpu, 2),
        "detect_readings_per_s": round(readings.height / wall),
        "detect_readings_per_cpu_s": round(readings.height / cpu),
        "detect_flagged_share": round(float(detected["is_anomaly"].mean() or 0.0), 5),
    }
    del detected
    fleet, wall, cpu = _timed(lambda: detect(readings, DetectionConfig.fleet()))
    figures.update(
        {
            "fleet_wall_s": round(wall, 2),
            "fleet_cpu_s": round(cpu, 2),
            "fleet_readings_per_cpu_s": round(readings.height / cpu),
            "fleet_flagged_share": round(float(fleet["is_anomaly"].mean() or 0.0), 5),
        }
    )
    del fleet
    columns = 8
    rows = target // columns
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "wide.csv", Path(tmp) / "out.csv"
        _write_csv(source, rows, columns)
        summary, wall, cpu = _timed(lambda: run_cli(source, out, time_col="time", sep=";"))
    figures.update(
        {
            "cli_readings": summary["readings"],
            "cli_wall_s": round(wall, 2),
            "cli_cpu_s": round(cpu, 2),
            "cli_readings_per_s": round(summary["readings"] / wall),
            "cli_readings_per_cpu_s": round(summary["readings"] / cpu),
        }
    )
    return figures
