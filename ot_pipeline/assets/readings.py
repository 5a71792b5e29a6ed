"""`readings`: each hour's valid readings from every landed file that overlaps it, deduplicated,
with its checks (schema, unique event_id, value ranges, contiguous offsets, landing freshness).
The landing sensor that requests the hours new files touch is in `ot_pipeline/sensors.py`."""

import time
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from ot_pipeline.assets.metadata import Stopwatch, preview
from ot_pipeline.partitions import HOURLY
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_pipeline.transforms.landing import FileAccount, offset_gaps
from ot_pipeline.transforms.readings import READINGS_COLUMNS, out_of_range, select_hour
from streaming.lake import LANDED_SCHEMA, Lake, LandedFile
from streaming.lake.files import schema_problems, write_hour
from streaming.lake.footer import read_footer
from streaming.lake.hours import day_of, hour_bounds
from streaming.lake.landing import files_by_hour, landed_rows

landing_files = dg.AssetSpec(
    "landing_files",
    description="Micro-batch Parquet files written by the lander (`ot land`) from Kafka topic "
    "`sensor-readings`, exactly once; their names carry the Kafka partition and offsets. Not "
    "materialized by Dagster: `landing_sensor` watches them and requests `process_landed_hours`.",
    group_name="ingest",
    kinds={"parquet", "kafka"},
)


@dg.asset(
    deps=[landing_files],
    **HOURLY,
    group_name="ingest",
    kinds={"parquet", "polars"},
)
def readings(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineConfig
) -> dg.MaterializeResult:
    """The hour's valid readings (event time), one row per event_id (the first landed wins),
    from every landing file that touches the hour, late files included. Everything downstream
    starts here; `process_landed_hours` runs it with the rest of the hourly chain."""
    the_lake = lake.lake()
    keys = context.partition_keys
    clock = Stopwatch()
    with clock.time("index_s"):
        by_hour = files_by_hour(the_lake, keys)
    grace = timedelta(seconds=pipeline.late_grace_seconds)
    per_hour = []
    last = pl.DataFrame()
    for key in keys:
        start, end = hour_bounds(key)
        with clock.time("read_s"):
            landed = landed_rows(by_hour[key], start, end)
            landed = with_archived_rows(the_lake, key, landed, start, end)
        with clock.time("dedup_s"):
            hour = select_hour(landed, start, end, grace)
        with clock.time("write_s"):
            write_hour(the_lake, "readings", key, hour.readings)
        per_hour.append(
            {
                "hour": key,
                "files": len(by_hour[key]),
                "rows": hour.readings.height,
                "late_rows": hour.late_rows,
                "duplicates": hour.duplicates,
            }
        )
        if hour.readings.height:
            last = hour.readings
    table = pl.DataFrame(per_hour)
    context.log.info(f"readings: {table.select(pl.exclude('hour')).sum().to_dicts()[0]}")
    return dg.MaterializeResult(
        metadata={
            "rows": int(table["rows"].sum()),
            "late_rows": int(table["late_rows"].sum()),
            "duplicates": int(table["duplicates"].sum()),
            "landing_files": int(table["files"].sum()),
            "hours": len(keys),
            **clock.seconds,
            "per_hour": preview(table, rows=48),
            "preview": preview(last),
        }
    )


def with_archived_rows(
    lake: Lake, key: str, landed: pl.DataFrame, start: datetime, end: datetime
) -> pl.DataFrame:
    """After retention pruned landing files of this day, add the archive's rows of the hour that
    the remaining landing files do not hold, so a backfill of an old hour loses nothing."""
    day = day_of(key)
    archive = lake.archive_path(day)
    if not lake.pruned_marker(day).exists() or not archive.exists():
        return landed
    archived = (
        pl.scan_parquet(archive)
        .filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        .select(READINGS_COLUMNS)
        .collect()
        .cast({"ts": pl.Datetime("ms", "UTC"), "ingest_ts": pl.Datetime("ms", "UTC")})
        .filter(~pl.col("event_id").is_in(landed["event_id"].implode()))
    )
    return pl.concat([landed, archived.cast(landed.schema)], how="vertical")  # type: ignore[arg-type]


def _hour_paths(lake: LakeResource, keys: list[str]) -> list[str]:
    return [str(p) for p in lake.lake().hour_paths("readings", keys)]


@dg.asset_check(asset=readings, blocking=True, description="Columns and types as LANDED_SCHEMA.")
def readings_schema(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    wrong: list[str] = []
    paths = _hour_paths(lake, context.partition_keys)
    for path in paths:
        problems = schema_problems(path, LANDED_SCHEMA)
        if problems:
            wrong.append(f"{path}: {problems}")
    return dg.AssetCheckResult(
        passed=not wrong and len(paths) == len(context.partition_keys),
        metadata={
            "files_checked": len(paths),
            "hours": len(context.partition_keys),
            "mismatches": dg.MetadataValue.md("\n".join(wrong[:10]) or "none"),
        },
    )


@dg.asset_check(asset=readings, blocking=True, description="Every event_id appears once.")
def readings_event_id_unique(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    paths = _hour_paths(lake, context.partition_keys)
    if not paths:
        return dg.AssetCheckResult(passed=True, metadata={"rows": 0, "distinct_event_ids": 0})
    # Distinct 64-bit hashes = rows proves the ids unique (equal hashes are necessary for equal
    # strings); only when hashes repeat are the strings counted exactly.
    ids = pl.scan_parquet(paths).select("event_id").collect()
    counts = ids.select(
        pl.len().alias("rows"), pl.col("event_id").hash().n_unique().alias("distinct")
    ).row(0, named=True)
    if counts["distinct"] != counts["rows"]:
        counts["distinct"] = ids["event_id"].n_unique()
    return dg.AssetCheckResult(
        passed=counts["rows"] == counts["distinct"],
        metadata={"rows": counts["rows"], "distinct_event_ids": counts["distinct"]},
    )


@dg.asset_check(
    asset=readings, blocking=True, description="Values inside the contract's physical ranges."
)
def readings_values_in_range(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    paths = _hour_paths(lake, context.partition_keys)
    frame = (
        pl.scan_parquet(paths).select("event_id", "metric", "value").collect()
        if paths
        else pl.DataFrame(schema={"event_id": pl.String, "metric": pl.String, "value": pl.Float64})
    )
    bad = out_of_range(frame)
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        metadata={"rows": frame.height, "out_of_range": bad.height, "examples": preview(bad, 5)},
    )


def _account(f: LandedFile) -> FileAccount:
    footer = read_footer(f.path)
    return FileAccount(
        f.partition, f.first_offset, f.last_offset, footer.rows, footer.dead_lettered
    )


@dg.asset_check(
    asset=readings,
    description="Per Kafka partition the landing files' offsets are gapless from the first "
    "retained file on, and in each file rows + dead letters = its offset range: nothing was lost "
    "between Kafka and the lake, dead letters accounted for.",
)
def landing_offsets_contiguous(lake: LakeResource) -> dg.AssetCheckResult:
    files = lake.lake().landed_files()
    gaps = offset_gaps((f.partition, f.first_offset, f.last_offset) for f in files)
    accounts = [_account(f) for f in files]
    unbalanced = [a for a in accounts if not a.balanced]
    first_by_partition: dict[int, int] = {}
    for f in files:
        first_by_partition.setdefault(f.partition, f.first_offset)
    lines = [f"p{g.partition}: expected {g.expected_first}, found {g.found_first}" for g in gaps]
    lines += [
        f"p{a.partition} {a.first_offset}-{a.last_offset}: rows {a.rows} + dead {a.dead_lettered}"
        for a in unbalanced
    ]
    return dg.AssetCheckResult(
        passed=not gaps and not unbalanced,
        metadata={
            "files": len(files),
            "partitions": len(first_by_partition),
            "offsets_covered": sum(f.count for f in files),
            "rows_landed": sum(a.rows for a in accounts),
            "dead_lettered": sum(a.dead_lettered or 0 for a in accounts),
            "gaps": len(gaps),
            "unbalanced_files": len(unbalanced),
            "first_retained_offsets": dg.MetadataValue.json(
                {str(k): v for k, v in first_by_partition.items()}
            ),
            "problems": dg.MetadataValue.md("\n".join(lines[:10]) or "none"),
        },
    )


@dg.asset_check(
    asset=readings,
    description="The newest landing file is recent: the lander is alive and keeping up.",
)
def landing_freshness(lake: LakeResource, pipeline: PipelineConfig) -> dg.AssetCheckResult:
    files = lake.lake().landed_files()
    newest = max((f.path.stat().st_mtime for f in files), default=None)
    age_min = (time.time() - newest) / 60.0 if newest is not None else None
    return dg.AssetCheckResult(
        passed=age_min is not None and age_min <= pipeline.landing_fresh_minutes,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "newest_file_age_minutes": round(age_min, 2) if age_min is not None else -1.0,
            "threshold_minutes": pipeline.landing_fresh_minutes,
        },
    )


READINGS_CHECKS = [
    readings_schema,
    readings_event_id_unique,
    readings_values_in_range,
    landing_offsets_contiguous,
    landing_freshness,
]

__all__ = ["READINGS_CHECKS", "READINGS_COLUMNS", "landing_files", "readings"]
