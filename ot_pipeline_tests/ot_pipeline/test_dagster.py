"""The Dagster layer without servers: the landing sensor, blocking checks, definitions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest

from ot_pipeline.assets.readings import READINGS_CHECKS, readings
from ot_pipeline.assets.windows import WINDOW_CHECKS, windows_1m
from ot_pipeline.jobs import HOURLY_JOB
from ot_pipeline.partitions import HOURLY_LANE
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_pipeline.sensors import LandingCursor, landing_sensor, plan_landing_requests
from ot_pipeline_tests.support.paths import REPO_ROOT
from ot_tools.synthetic_landing import land, synthetic_readings, write_landing_file
from streaming.lake import Lake

H0 = datetime(2026, 11, 20, 6, tzinfo=UTC)
REPO = REPO_ROOT


def _tick(lake: Lake, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"lake": LakeResource(root=str(lake.root)), "pipeline": PipelineConfig()},
    )
    result = landing_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _ranges(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [
        (
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
        )
        for r in result.run_requests or []
    ]


def test_landing_sensor_requests_touched_hours_once_and_late_hours_again(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    readings_ = synthetic_readings(H0, 3, machines=4, interval_s=30.0)
    land(lake, readings_, partitions=2, file_rows=500)

    first = _tick(lake, None)
    assert _ranges(first) == [("2026-11-20-06:00", "2026-11-20-08:00")]
    # one run of the whole hourly chain (the sensor's job), not of readings alone
    assert all(r.asset_selection is None for r in first.run_requests or [])
    assert landing_sensor.job_name == HOURLY_JOB
    assert all(HOURLY_LANE.items() <= r.tags.items() for r in first.run_requests or [])

    again = _tick(lake, first.cursor)
    assert not again.run_requests  # the cursor remembers what was requested

    # late data: a reading of 06:xx lands now, after the files of 08:00
    late = readings_.filter(pl.col("ts") < H0 + timedelta(minutes=1)).head(3)
    late = late.with_columns(
        pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + lake.next_offset(0)).alias("kafka_offset"),  # type: ignore[operator]
        pl.lit(datetime.now(UTC)).cast(pl.Datetime("ms", "UTC")).alias("ingest_ts"),
        (pl.col("event_id") + "-late").alias("event_id"),
    )
    write_landing_file(lake, late)
    waiting = _tick(lake, again.cursor or first.cursor)
    assert not waiting.run_requests  # late data of a closed hour waits for the next refresh
    cursor = LandingCursor.parse(waiting.cursor)
    assert cursor.pending == ["2026-11-20-06:00"]
    cursor.requested_at -= PipelineConfig().live_refresh_minutes * 60  # the refresh is due
    late_tick = _tick(lake, cursor.text())
    assert _ranges(late_tick) == [("2026-11-20-06:00", "2026-11-20-06:00")]
    assert LandingCursor.parse(late_tick.cursor).pending == []
    keys = {r.run_key for r in [*(first.run_requests or []), *(late_tick.run_requests or [])]}
    assert len(keys) == 2  # a new run key: run keys dedupe forever


KEYS = [f"2026-11-20-{h:02d}:00" for h in range(24)]
T10 = datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp()  # 10:00:00


def _plan(cursor: LandingCursor, hours: list[str], now: float, offset: int = 0):
    files = [(0, offset, offset + 9, hours)] if hours else []
    return plan_landing_requests(cursor, files, KEYS, now, refresh_seconds=300)


def test_landing_sensor_batches_the_live_hour_and_requests_a_closing_hour_at_once():
    # 10:02, data of the open hour 10:00 landed; the last request was at 10:00:30
    cursor = LandingCursor({0: 9}, [], T10 + 30)
    ranges, cursor, _ = _plan(cursor, ["2026-11-20-10:00"], T10 + 120, offset=10)
    assert ranges == [] and cursor.pending == ["2026-11-20-10:00"]
    assert cursor.offsets == {0: 19}
    # 10:03, nothing new: still waiting
    ranges, cursor, _ = _plan(cursor, [], T10 + 180)
    assert ranges == []
    # 10:05:30: the refresh is due (5 minutes after the last request)
    ranges, cursor, _ = _plan(cursor, [], T10 + 330)
    assert ranges == [("2026-11-20-10:00", "2026-11-20-10:00")]
    assert cursor.pending == [] and cursor.requested_at == T10 + 330
    # 11:00:40: the hour 10:00 closed since the last request: at once, with the new hour
    ranges, cursor, _ = _plan(cursor, ["2026-11-20-10:00", "2026-11-20-11:00"], T10 + 3640, 20)
    assert ranges == [("2026-11-20-10:00", "2026-11-20-11:00")]
    # 11:01:40: more late data of 10:00 (closed before the last request) waits for the refresh
    ranges, cursor, _ = _plan(cursor, ["2026-11-20-10:00"], T10 + 3700, offset=30)
    assert ranges == [] and cursor.pending == ["2026-11-20-10:00"]
    # nothing pending, nothing landed: no run however long it has been
    assert _plan(LandingCursor({0: 9}, [], T10), [], T10 + 86_400)[0] == []


def test_landing_sensor_runs_per_hour_at_a_steady_live_rate():
    """Files every 20 s for two hours, a tick every minute: about 13 runs an hour."""
    cursor, runs, offset = LandingCursor(), 0, 0
    for minute in range(120):
        now = T10 + minute * 60 + 5
        hour = datetime.fromtimestamp(now - 10, UTC).strftime("%Y-%m-%d-%H:00")
        ranges, cursor, _ = _plan(cursor, [hour], now, offset)
        offset += 10
        runs += len(ranges)
    assert 24 <= runs <= 28, runs


def test_landing_sensor_reads_the_cursor_it_wrote_before_batching():
    old = LandingCursor.parse('{"0": 41, "3": 7}')
    assert old.offsets == {0: 41, 3: 7} and old.pending == [] and old.requested_at == 0.0
    assert LandingCursor.parse(old.text()) == old


def _materialize(lake: Lake, hour: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [readings, windows_1m, *READINGS_CHECKS, *WINDOW_CHECKS[:1]],
        partition_key=hour,
        resources={"lake": LakeResource(root=str(lake.root)), "pipeline": PipelineConfig()},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_failing_blocking_check_stops_downstream_assets(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    good = synthetic_readings(H0, 2, machines=2, interval_s=60.0)
    # hour 07:00 carries one temperature beyond the contract's physical range
    bad_id = good.filter(
        (pl.col("ts") >= H0 + timedelta(hours=1)) & (pl.col("metric") == "temperature")
    )["event_id"][0]
    land(
        lake,
        good.with_columns(
            pl.when(pl.col("event_id") == bad_id)
            .then(999.0)
            .otherwise(pl.col("value"))
            .alias("value")
        ),
    )

    ok = _materialize(lake, "2026-11-20-06:00")
    assert ok.success
    assert lake.hour_path("windows_1m", "2026-11-20-06:00").exists()

    failed = _materialize(lake, "2026-11-20-07:00")
    assert not failed.success
    evaluations = {e.check_name: e.passed for e in failed.get_asset_check_evaluations()}
    assert evaluations["readings_values_in_range"] is False
    assert evaluations["readings_event_id_unique"] is True
    assert lake.hour_path("readings", "2026-11-20-07:00").exists()
    assert not lake.hour_path("windows_1m", "2026-11-20-07:00").exists()
    materialized = {str(e.asset_key) for e in failed.get_asset_materialization_events()}
    assert str(readings.key) in materialized and str(windows_1m.key) not in materialized


def test_dagster_definitions_validate_loads_the_code_location():
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["landing_sensor", "follow_readings"])
def test_sensors_and_automation_are_on_by_default(name: str):
    from ot_pipeline.definitions import defs

    sensor = defs.resolve_sensor_def(name)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_retention_prunes_old_landing_files_after_the_archive_passed_and_hours_rebuild_from_it(
    tmp_path: Path,
):
    from ot_pipeline.assets.archive import (
        daily_archive,
        daily_archive_matches_readings,
        landing_retention,
    )

    lake = Lake(tmp_path / "lake")
    land(lake, synthetic_readings(H0, 2, machines=2, interval_s=60.0), file_rows=100)
    resources = {
        "lake": LakeResource(root=str(lake.root)),
        "pipeline": PipelineConfig(landing_retention_days=7),
    }
    hours = ["2026-11-20-06:00", "2026-11-20-07:00"]
    for hour in hours:
        assert dg.materialize([readings], partition_key=hour, resources=resources).success
    before = {h: pl.read_parquet(lake.hour_path("readings", h)).sort("event_id") for h in hours}
    files = lake.landed_files()
    young, old = files[0], files[1:]
    ten_days_ago = datetime.now(UTC).timestamp() - 10 * 86400
    for f in old:
        os.utime(f.path, (ten_days_ago, ten_days_ago))

    result = dg.materialize(
        [daily_archive, daily_archive_matches_readings, landing_retention],
        partition_key="2026-11-20",
        resources=resources,
    )
    assert result.success
    assert [f.path for f in lake.landed_files()] == [young.path]  # only old files went
    assert pq.read_metadata(lake.archive_path("2026-11-20")).num_rows == sum(
        b.height for b in before.values()
    )

    # a backfill of a pruned hour rebuilds the same readings from the archive + what is left
    for hour in hours:
        assert dg.materialize([readings], partition_key=hour, resources=resources).success
        after = pl.read_parquet(lake.hour_path("readings", hour)).sort("event_id")
        assert after.equals(before[hour])


def test_hourly_writers_share_one_lane_that_the_instance_runs_one_at_a_time(tmp_path):
    """The landing sensor's readings runs and the automation runs of the same hour must not
    overlap: a readings rewrite between a load and its count check fails the check."""
    import yaml

    from ot_pipeline.instance import MANAGED, ensure_dagster_home
    from ot_pipeline.partitions import HOURLY_LANE_KEY
    from ot_pipeline.sensors import automation_sensor

    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": HOURLY_LANE_KEY, "value": HOURLY_LANE[HOURLY_LANE_KEY], "limit": 1} in limits
    assert automation_sensor.run_tags == HOURLY_LANE  # the landing sensor's: its own test

    # The instance's copy follows the repository's file, unless the operator took it over.
    home = ensure_dagster_home(tmp_path / "home")
    managed = (home / "dagster.yaml").read_text()
    assert managed.startswith(MANAGED) and "tag_concurrency_limits" in managed
    (home / "dagster.yaml").write_text(managed.replace("max_concurrent_runs: 2", "x: 1"))
    ensure_dagster_home(home)
    assert "max_concurrent_runs: 2" in (home / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text("# mine\n")
    ensure_dagster_home(home)
    assert (home / "dagster.yaml").read_text() == "# mine\n"


def test_partitions_start_at_the_setting_else_the_first_data_in_the_lake_else_now(tmp_path):
    from dataclasses import replace

    from ot_pipeline.partitions import partitions_start
    from streaming.lake.files import write_hour
    from streaming.lake.landing import first_event_hour
    from streaming.settings import Settings

    lake = Lake(tmp_path / "lake")
    now = datetime(2026, 12, 7, 10, 42, tzinfo=UTC)
    settings = replace(Settings(), lake_dir=lake.root)
    assert first_event_hour(lake) is None
    assert partitions_start(settings, now) == datetime(2026, 12, 7, 10, tzinfo=UTC)  # empty lake

    land(lake, synthetic_readings(H0, 2, machines=2, interval_s=60.0), partitions=2, file_rows=50)
    assert first_event_hour(lake) == "2026-11-20-06:00"  # the first landing file's footer
    assert partitions_start(settings, now) == H0
    frame = pl.read_parquet(lake.landed_files()[0].path).head(0)
    write_hour(lake, "readings", "2026-11-19-22:00", frame)  # an hour made from older files
    lake.archive_path("2026-11-18").parent.mkdir(parents=True)
    lake.archive_path("2026-11-18").touch()  # a day archived, its landing files pruned
    assert first_event_hour(lake) == "2026-11-18-00:00"

    fixed = replace(settings, partitions_start=datetime(2026, 12, 1, tzinfo=UTC))
    assert partitions_start(fixed, now) == datetime(2026, 12, 1, tzinfo=UTC)


def test_settle_runs_cancels_queued_runs_and_reports_each_run():
    from ot_pipeline.instance import settle_runs

    lines: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance:
        assert settle_runs(instance, wait_s=0.1, say=lines.append)["cancelled"] == []
        assert lines == ["no run in flight"]
        # created, never launched (a QUEUED run needs a code location's origin; both are settled
        # the same way)
        queued = dg.DagsterRun(
            job_name=HOURLY_JOB,
            run_id="0123456789abcdef",
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={
                "dagster/asset_partition_range_start": "2026-11-20-06:00",
                "dagster/asset_partition_range_end": "2026-11-20-07:00",
            },
        )
        done = dg.DagsterRun(job_name=HOURLY_JOB, status=dg.DagsterRunStatus.SUCCESS)
        instance.add_run(queued)
        instance.add_run(done)
        lines.clear()
        outcome = settle_runs(instance, wait_s=0.1, say=lines.append)
        assert outcome["cancelled"] == [queued.run_id] and outcome["unsettled"] == []
        assert lines == [
            "cancelled run 01234567 (process_landed_hours 2026-11-20-06:00..2026-11-20-07:00):"
            " queued, never launched"
        ]
        statuses = {r.run_id: r.status for r in instance.get_runs()}
        assert statuses == {
            queued.run_id: dg.DagsterRunStatus.CANCELED,
            done.run_id: dg.DagsterRunStatus.SUCCESS,
        }
        # runs that ended since the stop began (finished before the daemon was down) are named
        lines.clear()
        outcome = settle_runs(instance, 0.1, say=lines.append, since=time.time() - 60)
        assert outcome["finished"] == [done.run_id]
        assert f"run {done.run_id[:8]} (process_landed_hours) finished" in lines
