"""The pipeline end to end against the real stack: simulator -> Kafka -> lander -> `ot pipeline
run` -> lake and PostgreSQL; and late data re-running an old hour through sensor + automation."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import psycopg
import pyarrow.parquet as pq
import pytest

from ot_pipeline.cli import run_range
from ot_pipeline.definitions import build_definitions
from ot_pipeline.instance import open_instance
from ot_pipeline.jobs import HOURLY_JOB
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_pipeline.sensors import LandingCursor, landing_sensor
from ot_pipeline.warehouse import TABLES, Warehouse
from ot_tools import drills
from ot_tools.synthetic_landing import land, synthetic_readings, write_landing_file
from streaming.lake import Lake
from streaming.lake.hours import day_hours, day_of, hour_key, hour_keys
from streaming.settings import Settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]
BIN = Path(sys.executable).parent


def _ot(settings: Settings, *args: str, timeout: float = 240) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "ot"), *args],
        env=drills.child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"ot {' '.join(args)} printed nothing; stderr: {done.stderr[-3000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["_returncode"] = done.returncode
    summary["_stderr"] = done.stderr[-3000:]
    return summary


def _table_digests(warehouse: Warehouse) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    with warehouse.connect() as conn:
        for name, spec in TABLES.items():
            order = ", ".join(spec.key)
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {order}), ''))"
                f' FROM "{warehouse.schema}"."{name}" t'
            ).fetchone()
            assert row is not None
            out[name] = (int(row[0]), str(row[1]))
    return out


def _lake_digest(lake: Lake) -> dict[str, int]:
    """Size-independent content digest of every asset file: rows and a hash of the sorted rows."""
    out: dict[str, int] = {}
    for path in sorted(lake.root.glob("*/*.parquet")):
        if "landing" in path.parts or "ground_truth" in path.parts:
            continue
        frame = pl.read_parquet(path)
        out[str(path.relative_to(lake.root))] = int(frame.hash_rows().sum()) if frame.height else 0
    return out


def test_simulated_hours_flow_to_postgres_with_every_check_passing_and_reruns_change_nothing(
    isolated: Settings, tmp_path: Path
) -> None:
    settings = _with_home(isolated, tmp_path)
    hours = 3
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
    sim = _ot(
        settings,
        "simulate",
        "--machines",
        "4",
        "--hours",
        str(hours),
        "--interval",
        "10",
        "--chaos",
        "default",
        "--seed",
        "11",
        "--start",
        start.isoformat(),
    )
    assert sim["_returncode"] == 0, sim["_stderr"]
    landed = _ot(settings, "land", "--until-idle", "3")
    assert landed["_returncode"] == 0, landed["_stderr"]
    first_hour, last_hour = start, start + timedelta(hours=hours - 1)
    args = (
        "pipeline",
        "run",
        "--from",
        hour_key(first_hour),
        "--to",
        hour_key(last_hour),
    )
    first = _ot(settings, *args)
    assert first["_returncode"] == 0, first["_stderr"]
    assert first["success"] is True
    assert first["checks"] and set(first["checks"].values()) == {"passed"}, first["checks"]
    expected_checks = {
        "readings_schema",
        "readings_event_id_unique",
        "readings_values_in_range",
        "landing_offsets_contiguous",
        "landing_freshness",
        "windows_1m_counts_match_readings",
        "windows_5m_counts_match_windows_1m",
        "pg_readings_1m_matches_lake",
        "pg_machine_health_hourly_matches_lake",
        "daily_archive_matches_readings",
    }
    assert expected_checks <= set(first["checks"])
    assets = first["assets"]
    assert assets["readings"]["partitions"] == hours

    # counts agree hop to hop
    lake = Lake(settings.lake_dir)
    keys = hour_keys(start, start + timedelta(hours=hours - 1))
    readings = pl.concat([pl.read_parquet(lake.hour_path("readings", k)) for k in keys])
    assert readings.height == assets["readings"]["rows"] > 1000
    assert readings["event_id"].n_unique() == readings.height
    landed_rows = (
        pl.scan_parquet([f.path for f in lake.landed_files()])
        .filter((pl.col("ts") >= start) & (pl.col("ts") < start + timedelta(hours=hours)))
        .select(pl.col("event_id").n_unique())
        .collect()
        .item()
    )
    assert landed_rows == readings.height  # landing (distinct) = readings
    windows = pl.concat([pl.read_parquet(lake.hour_path("windows_1m", k)) for k in keys])
    assert windows["count"].sum() == readings.height  # readings = 1-minute windows
    warehouse = Warehouse(settings.pg_dsn, settings.pg_schema)
    span = (start, start + timedelta(hours=hours))
    assert warehouse.count_in_range("readings_1m", *span, sum_column="count") == readings.height
    assert warehouse.count_in_range("readings_5m", *span, sum_column="count") == readings.height
    days = sorted({day_of(k) for k in keys})
    archived = sum(pq.read_metadata(lake.archive_path(d)).num_rows for d in days)
    day_readings = sum(
        pq.read_metadata(p).num_rows
        for d in days
        for p in lake.hour_paths("readings", day_hours(d))
    )
    assert archived == day_readings >= readings.height  # archive = the days' readings

    # PostgreSQL holds the rollups
    digests = _table_digests(warehouse)
    assert digests["machine_health_hourly"][0] == 4 * hours
    assert digests["readings_1m"][0] == windows.height
    with psycopg.connect(settings.pg_dsn) as conn:
        hourly = conn.execute(
            f'SELECT coalesce(sum(count), 0) FROM "{settings.pg_schema}".readings_hourly'
            " WHERE bucket >= %s AND bucket < %s",
            span,
        ).fetchone()
    assert hourly is not None and hourly[0] == readings.height
    assert assets["ground_truth"]["rows"] > 0  # the simulator's faults were read back

    # a second run of the same range changes nothing
    lake_before = _lake_digest(lake)
    second = _ot(settings, *args)
    assert second["success"] is True, second["_stderr"]
    assert {k: v["rows"] for k, v in second["assets"].items() if k != "landing_retention"} == {
        k: v["rows"] for k, v in assets.items() if k != "landing_retention"
    }
    assert _table_digests(warehouse) == digests
    assert _lake_digest(lake) == lake_before
    # both runs are recorded in the instance the UI reads
    instance = open_instance(settings.dagster_home)
    assert len(instance.get_run_records()) == 4
    warehouse.drop_schema()


def _with_home(settings: Settings, tmp_path: Path) -> Settings:
    from dataclasses import replace

    return replace(settings, dagster_home=tmp_path / "dagster_home")


def test_late_data_for_an_old_hour_is_rematerialized_by_the_sensor_and_automation(
    isolated: Settings, tmp_path: Path
) -> None:
    settings = _with_home(isolated, tmp_path)
    lake = Lake(settings.lake_dir)
    start = datetime(2026, 11, 20, 6, tzinfo=UTC)
    land(
        lake, synthetic_readings(start, 3, machines=3, interval_s=20.0), partitions=2, file_rows=800
    )
    summary, _ = run_range(settings, start, start + timedelta(hours=2), daily=False)
    assert all(v == "passed" for v in summary.checks.values())
    instance = open_instance(settings.dagster_home)
    defs = build_definitions(settings)
    resources = {"lake": LakeResource(root=str(lake.root)), "pipeline": PipelineConfig()}
    caught_up = landing_sensor(dg.build_sensor_context(cursor=None, resources=resources))
    assert isinstance(caught_up, dg.SensorResult)
    # the automation daemon has been watching: after the full run it has nothing to do
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert baseline.total_requested == 0

    old_hour = "2026-11-20-06:00"
    warehouse = Warehouse(settings.pg_dsn, settings.pg_schema)

    def arrive_late(seed: int) -> None:
        """40 readings of 06:xx arrive now, after everything else landed."""
        late = synthetic_readings(
            start + timedelta(minutes=5), 0.2, machines=1, interval_s=60.0, seed=seed
        )
        late = late.head(40).with_columns(
            (pl.col("event_id") + f"-late{seed}").alias("event_id"),
            pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
            (pl.int_range(pl.len(), dtype=pl.Int64) + (lake.next_offset(0) or 0)).alias(
                "kafka_offset"
            ),
            pl.lit(datetime.now(UTC)).cast(pl.Datetime("ms", "UTC")).alias("ingest_ts"),
        )
        write_landing_file(lake, late)

    def loaded() -> int:
        hour_end = start + timedelta(hours=1)
        return warehouse.count_in_range("readings_1m", start, hour_end, sum_column="count")

    before = pl.read_parquet(lake.hour_path("readings", old_hour)).height
    assert loaded() == before

    # 1. The landing sensor: the late hour waits for the next refresh, then one run of the whole
    #    hourly chain brings everything downstream up to date; automation has nothing left to do.
    arrive_late(3)
    waiting = landing_sensor(dg.build_sensor_context(cursor=caught_up.cursor, resources=resources))
    assert isinstance(waiting, dg.SensorResult) and not waiting.run_requests
    due = LandingCursor.parse(waiting.cursor)
    due.requested_at -= PipelineConfig().live_refresh_minutes * 60
    tick = landing_sensor(dg.build_sensor_context(cursor=due.text(), resources=resources))
    assert isinstance(tick, dg.SensorResult) and tick.run_requests
    assert [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in tick.run_requests
    ] == [(old_hour, old_hour)]
    job = defs.resolve_job_def(HOURLY_JOB)
    request = tick.run_requests[0]
    assert request.asset_selection is None  # the whole job
    assert job.execute_in_process(instance=instance, tags=dict(request.tags)).success
    assert pl.read_parquet(lake.hour_path("readings", old_hour)).height == before + 40
    assert loaded() == before + 40
    after_run = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=baseline.cursor
    )
    assert after_run.total_requested == 0

    # 2. Declarative automation: readings of the hour materialized alone (as from the UI); the
    #    automation asks for everything downstream of it: run that until it asks for nothing.
    arrive_late(4)
    assert job.execute_in_process(
        instance=instance, partition_key=old_hour, asset_selection=[dg.AssetKey("readings")]
    ).success
    rematerialized: dict[str, set[str]] = {}
    cursor = after_run.cursor
    for _ in range(6):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        if result.total_requested == 0:
            break
        by_partition: dict[str, list[dg.AssetKey]] = {}
        for key in defs.resolve_asset_graph().get_all_asset_keys():
            for partition in result.get_requested_partitions(key):
                assert partition is not None
                by_partition.setdefault(partition, []).append(key)
                rematerialized.setdefault(key.to_user_string(), set()).add(partition)
        for partition, selection in by_partition.items():
            assert job.execute_in_process(
                instance=instance, partition_key=partition, asset_selection=selection
            ).success
    else:
        pytest.fail("automation kept requesting runs")
    assert rematerialized == {
        name: {old_hour}
        for name in (
            "windows_1m",
            "windows_5m",
            "anomalies",
            "machine_health_hourly",
            "pg_readings_1m",
            "pg_readings_5m",
            "pg_anomalies",
            "pg_machine_health_hourly",
        )
    }
    assert loaded() == before + 80
    warehouse.drop_schema()
