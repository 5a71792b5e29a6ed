"""PostgreSQL / TimescaleDB rollups: the hourly lake tables loaded into schema `ot`, each run
replacing exactly its time range in one transaction, with a check that the rows add up."""

import time

import dagster as dg

from ot_pipeline.assets.anomalies import anomalies
from ot_pipeline.assets.health import machine_health_hourly
from ot_pipeline.assets.windows import windows_1m, windows_5m
from ot_pipeline.partitions import HOURLY_FOLLOWING
from ot_pipeline.resources import LakeResource, PostgresResource
from streaming.lake.files import read_hours
from streaming.lake.hours import range_bounds

# A PostgreSQL restart or a dropped connection is transient: each load retries 3 times, 2 s then
# 4 s then 8 s apart (+- jitter), before its run fails. A missing lake input is not retried.
PG_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

# warehouse table -> (lake asset it is loaded from, that asset)
ROLLUPS: dict[str, tuple[str, dg.AssetsDefinition]] = {
    "readings_1m": ("windows_1m", windows_1m),
    "readings_5m": ("windows_5m", windows_5m),
    "anomalies": ("anomalies", anomalies),
    "machine_health_hourly": ("machine_health_hourly", machine_health_hourly),
}


def _rollup_asset(table: str, source: str, upstream: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"pg_{table}",
        deps=[upstream],
        **HOURLY_FOLLOWING,
        group_name="warehouse",
        kinds={"postgres"},
        pool="postgres",
        retry_policy=PG_RETRY,
        description=f"`{source}` loaded into PostgreSQL table `{table}` (COPY; the run's time "
        "range is replaced in one transaction).",
    )
    def rollup(
        context: dg.AssetExecutionContext, lake: LakeResource, postgres: PostgresResource
    ) -> dg.MaterializeResult:
        keys = context.partition_keys
        frame = read_hours(lake.lake(), source, keys)
        if frame is None:
            raise dg.Failure(
                f"{source} has none of {keys[0]}..{keys[-1]}: materialize it first",
                allow_retries=False,
            )
        warehouse = postgres.warehouse()
        started = time.perf_counter()
        capabilities = warehouse.ensure_schema()
        start, end = range_bounds(keys)
        result = warehouse.replace_range(table, start, end, frame)
        if table == "readings_1m":
            warehouse.refresh_hourly()
        return dg.MaterializeResult(
            metadata={
                "rows": result.rows,
                "replaced_rows": result.deleted,
                "load_s": round(result.seconds, 3),
                "rows_per_s": round(result.rows_per_s),
                "total_s": round(time.perf_counter() - started, 3),
                "table": f"{postgres.schema_name}.{table}",
                "timescaledb": capabilities.timescaledb,
                "timescaledb_license": capabilities.license or "none",
                "range": f"[{start.isoformat()}, {end.isoformat()})",
            }
        )

    return rollup


def _rollup_check(table: str, source: str, asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    windows = table.startswith("readings_")

    @dg.asset_check(
        asset=asset,
        name=f"pg_{table}_matches_lake",
        blocking=True,
        description=(
            f"Sum of `count` in PostgreSQL {table} = sum of `count` in lake `{source}` over the "
            "run's hours (and `{source}` = readings is checked where it is made)."
            if windows
            else f"Rows in PostgreSQL {table} = rows of lake `{source}` over the run's hours."
        ),
    )
    def check(
        context: dg.AssetCheckExecutionContext, lake: LakeResource, postgres: PostgresResource
    ) -> dg.AssetCheckResult:
        keys = context.partition_keys
        start, end = range_bounds(keys)
        loaded = postgres.warehouse().count_in_range(
            table, start, end, sum_column="count" if windows else None
        )
        # Each hop is compared with the one it was loaded from, as that file stands: comparing
        # with readings two hops up would fail a correct load whenever newer readings landed
        # after the windows were made (the live hour), until automation catches up.
        frame = read_hours(lake.lake(), source, keys)
        if frame is None:
            expected = 0
        elif windows:
            expected = int(frame.get_column("count").sum())
        else:
            expected = frame.height
        return dg.AssetCheckResult(
            passed=loaded == expected,
            metadata={
                "postgres": loaded,
                "lake": expected,
                "compared": "sum(count)" if windows else "rows",
            },
        )

    return check


ROLLUP_ASSETS = [_rollup_asset(t, src, up) for t, (src, up) in ROLLUPS.items()]
ROLLUP_CHECKS = [
    _rollup_check(t, src, a)
    for (t, (src, _)), a in zip(ROLLUPS.items(), ROLLUP_ASSETS, strict=True)
]
