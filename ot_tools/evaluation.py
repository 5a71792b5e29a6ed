"""Score the detectors on a fresh simulated run: `python -m ot_tools.evaluation`.

Generates a fast-forward run with the simulator (no Kafka), removes resent duplicates the way the
lake does (one reading per event_id), runs `detect` and `scorecard.score`, and prints the
scorecard as a table plus a last line of JSON.

Every series starts cold, so the first `--warmup-hours` of the run are a probation period (as in
the Numenta Anomaly Benchmark): the detectors run over it, but faults starting in it and alarms
raised in it are not scored. The run lasts warm-up + `--hours`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from ot_pipeline.detection.config import DetectionConfig
from ot_pipeline.detection.engine import detect
from ot_pipeline.detection.scorecard import per_fault, score


def limits_from_machines(
    machines: Sequence[Mapping[str, Any]],
) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """Static limits per (machine_id, metric) from the simulator's machine records."""
    limits: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for record in machines:
        for metric, spec in (record.get("metrics") or {}).items():
            limits[(record["machine_id"], metric)] = (
                spec.get("nominal_min"),
                spec.get("nominal_max"),
            )
    return limits


def _log(message: str, **fields: Any) -> None:
    print(json.dumps({"event": message, **fields}), file=sys.stderr, flush=True)


def evaluate(
    *,
    machines: int,
    hours: float,
    seed: int,
    chaos: str,
    interval_s: float = 1.0,
    warmup_hours: float = 1.0,
    start: datetime | None = None,
    tolerance_s: float = 60.0,
    use_limits: bool = False,
    config: DetectionConfig | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The scorecard of one fresh run and a flat summary (figures, sizes, timings)."""
    from streaming.simulator import generate

    start = start or datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    began = time.perf_counter()
    data = generate(machines, start, warmup_hours + hours, interval_s, seed, chaos)
    generated = time.perf_counter()
    readings = data.readings.unique("event_id", keep="first", maintain_order=True)
    _log("generated", readings=readings.height, seconds=round(generated - began, 1))
    config = config or DetectionConfig.fleet()  # the pipeline's own config
    if use_limits:
        config = config.with_limits(limits_from_machines(data.machines))
    anomalies = detect(readings, config)
    detected = time.perf_counter()
    _log("detected", seconds=round(detected - generated, 1))

    scored_from = start + timedelta(hours=warmup_hours)
    scored_from_ms = int(scored_from.timestamp() * 1000)
    scored = anomalies.filter(pl.col("ts") >= scored_from)
    faults = data.faults.filter(pl.col("start_ms") >= scored_from_ms)
    card = score(scored, faults, tolerance_s=tolerance_s)
    drill = per_fault(scored, faults, tolerance_s=tolerance_s)
    all_row = card.filter(pl.col("fault_type") == "ALL").row(0, named=True)
    summary: dict[str, Any] = {
        "machines": machines,
        "hours": hours,
        "warmup_hours": warmup_hours,
        "seed": seed,
        "chaos": chaos,
        "interval_s": interval_s,
        "limits": use_limits,
        "readings": readings.height,
        "detect_s": round(detected - generated, 2),
        "detect_readings_per_s": round(readings.height / max(detected - generated, 1e-9)),
        **{
            k: all_row[k]
            for k in (
                "precision",
                "recall",
                "f1",
                "false_alarms",
                "false_alarms_per_machine_day",
                "median_delay_s",
            )
        },
        "median_delay_s_by_type": {
            row["fault_type"]: row["median_delay_s"] for row in card.iter_rows(named=True)
        },
        "missed_by_type": drill.filter(pl.col("first_ms").is_null())
        .group_by("fault_type")
        .len()
        .sort("fault_type")
        .to_dicts(),
    }
    return card, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ot_tools.evaluation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--hours", type=float, default=24.0, help="scored hours (after warm-up)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chaos", default="default", help="none, default or heavy")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    parser.add_argument("--warmup-hours", type=float, default=1.0)
    parser.add_argument("--tolerance", type=float, default=60.0, help="seconds after a fault")
    parser.add_argument(
        "--limits", action="store_true", help="also use the machines' nominal bands as limits"
    )
    parser.add_argument("--config", help="detection config YAML")
    args = parser.parse_args(argv)
    config = DetectionConfig.from_yaml(args.config) if args.config else None
    card, summary = evaluate(
        machines=args.machines,
        hours=args.hours,
        seed=args.seed,
        chaos=args.chaos,
        interval_s=args.interval,
        warmup_hours=args.warmup_hours,
        tolerance_s=args.tolerance,
        use_limits=args.limits,
        config=config,
    )
    with pl.Config(
        tbl_cols=-1, tbl_width_chars=200, float_precision=3, tbl_hide_dataframe_shape=True
    ):
        print(card.drop("machine_days", "excused_episodes"))
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
