"""`ot bench pipeline`: one hour of readings through the hourly Dagster job, and PostgreSQL load
throughput.

Synthesizes one event hour (5,000,000 readings; quick: 500,000) plus the half hour before it as
landing files in a temporary lake, materializes the previous hour's readings (untimed: it is the
detectors' history), then times the whole hourly job for the hour (readings, windows, anomalies,
health, PostgreSQL loads, every check) with per-step durations. Then loads 1,000,000 (quick:
200,000) rows into readings_1m alone to measure the load path's rows/s (first load and
replacing the range), beside the previous path (delete + CSV COPY on a plain table) measured in
the same run. Uses its own PostgreSQL schema and drops it afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from psycopg import sql

from ot_pipeline.transforms.windows import tumbling_windows
from ot_pipeline.warehouse import TABLES, Warehouse, binary_copy_chunks, csv_chunks
from ot_tools.synthetic_landing import land, synthetic_readings
from streaming.lake import Lake
from streaming.lake.files import read_hour
from streaming.lake.hours import hour_key
from streaming.settings import Settings

HOUR = datetime(2026, 11, 20, 12, tzinfo=UTC)
METRICS_PER_MACHINE = 5


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    import dagster as dg

    from ot_pipeline.definitions import build_definitions
    from ot_pipeline.jobs import HOURLY_JOB

    readings_target = 500_000 if quick else 5_000_000
    machines = max(1, round(readings_target / (3600 * METRICS_PER_MACHINE)))
    tmp = Path(tempfile.mkdtemp(prefix="ot-bench-pipeline-"))
    schema = f"ot_bench_{uuid.uuid4().hex[:8]}"
    bench_settings = replace(settings, lake_dir=tmp / "lake", pg_schema=schema)
    lake = Lake(bench_settings.lake_dir)
    figures: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        frame = synthetic_readings(HOUR - timedelta(minutes=30), 1.5, machines, interval_s=1.0)
        landed = land(lake, frame, partitions=6, file_rows=100_000)
        figures["synthesize_s"] = round(time.perf_counter() - started, 1)
        hour_rows = frame.filter(pl.col("ts") >= HOUR).height
        del frame
        figures["machines"] = machines
        figures["hour_readings"] = hour_rows
        figures["landing_files"] = landed.files

        defs = build_definitions(bench_settings)
        job = defs.resolve_job_def(HOURLY_JOB)
        instance = dg.DagsterInstance.ephemeral()
        previous = hour_key(HOUR - timedelta(hours=1))
        job.execute_in_process(
            instance=instance, partition_key=previous, asset_selection=[dg.AssetKey("readings")]
        )
        key = hour_key(HOUR)
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
        figures["hour_job_s"] = round(time.perf_counter() - started, 2)
        figures["hour_job_success"] = bool(result.success)
        figures.update(_step_seconds(instance, result.run_id))
        figures.update(_phase_seconds(result))
        figures["hour_readings_per_s"] = round(hour_rows / figures["hour_job_s"])
        figures.update(_anomalies_cpu(lake, HOUR))

        figures.update(_load_throughput(bench_settings, 200_000 if quick else 1_000_000))
    finally:
        Warehouse(settings.pg_dsn, schema).drop_schema()
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def _anomalies_cpu(lake: Lake, hour: datetime) -> dict[str, Any]:
    """The anomalies step's detection on its own, per CPU second (= per core, whatever number
    of threads Polars used), both ways the asset runs it: resumed from the previous hour's
    detector state (the state computed untimed from the previous hour's readings), and, where
    that state is missing, over the hour plus its trailing history; read as the asset reads
    them (untimed), then scored and filtered as the asset does; best of two runs each."""
    from ot_pipeline.assets.anomalies import DETECTION_INPUT, _history
    from ot_pipeline.detection import DetectionConfig, detect
    from ot_pipeline.detection.engine import detect_resumed
    from ot_pipeline.resources import PipelineConfig
    from ot_pipeline.transforms.anomalies import hour_anomalies

    frame = read_hour(lake, "readings", hour_key(hour), columns=DETECTION_INPUT)
    before = read_hour(
        lake, "readings", hour_key(hour - timedelta(hours=1)), columns=DETECTION_INPUT
    )
    if frame is None or before is None:
        return {}
    config = DetectionConfig.fleet()
    span = timedelta(minutes=PipelineConfig().detection_history_minutes)
    history = _history(lake, hour, span, frame)
    end = hour + timedelta(hours=1)
    _, state = detect_resumed(before, None, config)
    state_file = lake.root / "bench-state.parquet"
    assert state is not None
    state.to_frame().write_parquet(state_file)

    def warmed() -> None:
        hour_anomalies(history, frame, hour, end, lambda f: detect(f, config))

    def resumed() -> None:
        hour_anomalies(
            history.clear(), frame, hour, end, lambda f: detect_resumed(f, state, config)[0]
        )

    figures: dict[str, Any] = {"anomalies_state_bytes": state_file.stat().st_size}
    for name, run, readings in (
        ("anomalies", warmed, history.height + frame.height),
        ("anomalies_resumed", resumed, frame.height),
    ):
        cpu = []
        for _ in range(2):
            started = time.process_time()
            run()
            cpu.append(time.process_time() - started)
        figures[f"{name}_detect_readings"] = readings
        figures[f"{name}_detect_cpu_s"] = round(min(cpu), 2)
        figures[f"{name}_readings_per_cpu_s"] = round(readings / min(cpu))
    return figures


def _step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Wall seconds per step (asset or check), from the run's step start/success events."""
    starts: dict[str, float] = {}
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS" and event.step_key in starts:
            out[f"step_{event.step_key}_s"] = round(entry.timestamp - starts[event.step_key], 2)
    return out


def _phase_seconds(result: Any) -> dict[str, float]:
    """Seconds per phase inside each asset (its `*_s` materialization metadata)."""
    out: dict[str, float] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        name = materialization.asset_key.path[-1]
        for key, value in materialization.metadata.items():
            if key.endswith("_s") and isinstance(getattr(value, "value", None), float):
                out[f"phase_{name}_{key}"] = round(value.value, 2)
    return out


def _load_throughput(settings: Settings, rows: int) -> dict[str, Any]:
    """COPY `rows` 1-minute windows into readings_1m twice (the second replaces the first), and,
    in the same run for ratios, the same loads on a plain (unpartitioned) copy of the table by
    delete + COPY: CSV (the previous load path) and binary (the path hypertables and the small
    tables take)."""
    machines = max(1, rows // (60 * METRICS_PER_MACHINE))
    frame = tumbling_windows(synthetic_readings(HOUR, 1, machines, interval_s=20.0), "1m", "15m")
    warehouse = Warehouse(settings.pg_dsn, settings.pg_schema)
    warehouse.ensure_schema()
    end = HOUR + timedelta(hours=1)
    first = warehouse.replace_range("readings_1m", HOUR, end, frame)
    again = warehouse.replace_range("readings_1m", HOUR, end, frame)
    figures: dict[str, Any] = {
        "pg_load_rows": first.rows,
        "pg_load_rows_per_s": round(first.rows_per_s),
        "pg_replace_rows_per_s": round(again.rows_per_s),
    }
    spec = TABLES["readings_1m"]
    frame = frame.select(spec.column_names).cast(spec.polars_schema)  # type: ignore[arg-type]
    with warehouse.connect() as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                warehouse._t(PLAIN), warehouse._t("readings_1m")
            )
        )
        conn.commit()
    for fmt in ("csv", "binary"):
        for attempt in ("load", "replace"):
            seconds = _delete_and_copy(warehouse, frame, end, fmt)
            figures[f"pg_plain_{fmt}_{attempt}_rows_per_s"] = round(frame.height / seconds)
        with warehouse.connect() as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(warehouse._t(PLAIN)))
            conn.commit()
    figures["pg_load_ratio_vs_plain_csv"] = round(
        figures["pg_load_rows_per_s"] / figures["pg_plain_csv_load_rows_per_s"], 2
    )
    figures["pg_replace_ratio_vs_plain_csv"] = round(
        figures["pg_replace_rows_per_s"] / figures["pg_plain_csv_replace_rows_per_s"], 2
    )
    return figures


PLAIN = "readings_1m_plain"


def _delete_and_copy(warehouse: Warehouse, frame: pl.DataFrame, end: datetime, fmt: str) -> float:
    """The load on a plain table: delete the range, COPY the rows (CSV or binary), one
    transaction. Returns seconds."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    chunks = csv_chunks if fmt == "csv" else binary_copy_chunks
    started = time.perf_counter()
    with warehouse.connect() as conn, conn.transaction():
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE bucket >= %s AND bucket < %s").format(
                warehouse._t(PLAIN)
            ),
            (HOUR, end),
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
                    warehouse._t(PLAIN), columns, sql.SQL(fmt)
                )
            ) as copy,
        ):
            for chunk in chunks(frame):
                copy.write(chunk)
    return time.perf_counter() - started
