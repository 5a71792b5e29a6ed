"""`daily_archive`: one compacted, sorted, zstd Parquet per day of readings, its checks, and
`landing_retention`, which deletes old landing files only once their days' archives passed."""

import os
import time
from datetime import datetime, timedelta

import dagster as dg
import duckdb
import pyarrow.parquet as pq

from ot_pipeline.assets.readings import readings
from ot_pipeline.partitions import DAILY
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_pipeline.transforms.landing import removable_files
from streaming.lake import LANDED_SCHEMA, Lake, write_atomically
from streaming.lake.files import schema_problems
from streaming.lake.footer import event_hours
from streaming.lake.hours import day_hours, day_key, day_of

ARCHIVE_SORT = "machine_id, metric, ts, event_id"


def _readings_paths(lake: Lake, day: str) -> list[str]:
    return [str(p) for p in lake.hour_paths("readings", day_hours(day))]


@dg.asset(
    deps=[readings],
    **DAILY,
    group_name="archive",
    kinds={"parquet", "duckdb"},
)
def daily_archive(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The day's readings compacted into one file sorted by machine, metric and time (zstd)."""
    the_lake = lake.lake()
    rows = hours = 0
    started = time.perf_counter()
    sizes = 0
    for day in context.partition_keys:
        marker = the_lake.checked_marker(day)
        if marker.exists():
            marker.unlink()  # re-archiving: retention waits for the new archive's checks
        paths = _readings_paths(the_lake, day)
        target = the_lake.archive_path(day)
        con = duckdb.connect()
        con.execute("SET memory_limit = '2GB'; SET threads = 2")

        def write(
            tmp: object, paths: list[str] = paths, con: duckdb.DuckDBPyConnection = con
        ) -> None:
            if paths:
                source = con.read_parquet(paths)
            else:
                source = con.from_arrow(LANDED_SCHEMA.empty_table())
            source.order(ARCHIVE_SORT).write_parquet(
                str(tmp), compression="zstd", row_group_size=1_000_000
            )

        write_atomically(target, write)
        con.close()
        rows += pq.read_metadata(target).num_rows
        sizes += target.stat().st_size
        hours += len(paths)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "readings_hours": hours,
            "bytes": sizes,
            "duration_s": round(time.perf_counter() - started, 3),
            "path": str(the_lake.archive_path(context.partition_keys[-1])),
        }
    )


@dg.asset_check(
    asset=daily_archive,
    blocking=True,
    description="Archive rows = sum of the day's readings rows; columns as LANDED_SCHEMA.",
)
def daily_archive_matches_readings(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    the_lake = lake.lake()
    archived = expected = 0
    problems: list[str] = []
    for day in context.partition_keys:
        path = the_lake.archive_path(day)
        if not path.exists():
            problems.append(f"{day}: no archive")
            continue
        archived += pq.read_metadata(path).num_rows
        expected += sum(pq.read_metadata(p).num_rows for p in _readings_paths(the_lake, day))
        mismatch = schema_problems(path, LANDED_SCHEMA)
        if mismatch:
            problems.append(f"{day}: {mismatch}")
    return dg.AssetCheckResult(
        passed=archived == expected and not problems,
        metadata={
            "archive_rows": archived,
            "readings_rows": expected,
            "problems": "; ".join(problems) or "none",
        },
    )


@dg.asset(
    deps=[daily_archive],
    **DAILY,
    group_name="archive",
    kinds={"parquet"},
)
def landing_retention(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineConfig
) -> dg.MaterializeResult:
    """Deletes landing files older than the retention whose every event day has a checked
    archive. Runs only after `daily_archive`'s blocking checks passed for these days."""
    the_lake = lake.lake()
    for day in context.partition_keys:
        marker = the_lake.checked_marker(day)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(datetime.now().isoformat())
    checked = the_lake.checked_days()
    now = time.time()
    files = the_lake.landed_files()
    file_days = {str(f.path): {day_of(h) for h in event_hours(f.path)} for f in files}
    ages = {str(f.path): (now - f.path.stat().st_mtime) / 86400.0 for f in files}
    doomed = removable_files(file_days, ages, checked, pipeline.landing_retention_days)
    for path in doomed:
        for day in file_days[path]:
            pruned = the_lake.pruned_marker(day)
            pruned.parent.mkdir(parents=True, exist_ok=True)
            pruned.touch()
        os.remove(path)
    return dg.MaterializeResult(
        metadata={
            "removed_files": len(doomed),
            "kept_files": len(files) - len(doomed),
            "retention_days": pipeline.landing_retention_days,
            "checked_days": len(checked),
        }
    )


def previous_day(moment: datetime) -> str:
    return day_key(moment - timedelta(days=1))
