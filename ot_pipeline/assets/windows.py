"""`windows_1m`, `windows_5m`: tumbling windows per machine and metric with a rolling average,
and the hop check that their counts add up to the readings."""

import dagster as dg
import polars as pl

from ot_pipeline.assets.metadata import Stopwatch, preview
from ot_pipeline.assets.readings import readings
from ot_pipeline.partitions import HOURLY_FOLLOWING
from ot_pipeline.resources import LakeResource
from ot_pipeline.transforms.windows import coarser_windows, tumbling_windows
from streaming.lake.files import read_hour, write_hour

# asset name -> (bucket width, rolling-average period)
WINDOWS: dict[str, tuple[str, str]] = {"windows_1m": ("1m", "15m"), "windows_5m": ("5m", "1h")}
# The readings columns the windows use (event_id and the rest are not read).
WINDOW_INPUT = ["ts", "machine_id", "metric", "value"]


def _window_asset(
    name: str, every: str, rolling: str, source: dg.AssetsDefinition = readings
) -> dg.AssetsDefinition:
    source_name = source.key.path[-1]

    @dg.asset(
        name=name,
        deps=[source],
        **HOURLY_FOLLOWING,
        group_name="hourly_analytics",
        kinds={"parquet", "polars"},
        description=f"Tumbling {every} windows per machine and metric of event time: count, min, "
        f"max, mean, stddev, first, last, and a {rolling} rolling count-weighted mean "
        f"(computed from `{source_name}`).",
    )
    def window_asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        the_lake = lake.lake()
        clock = Stopwatch()
        rows = windows = 0
        last = pl.DataFrame()
        for key in context.partition_keys:
            with clock.time("read_s"):
                hour = read_hour(
                    the_lake,
                    source_name,
                    key,
                    columns=WINDOW_INPUT if source_name == "readings" else None,
                )
            if hour is None:
                raise dg.Failure(f"{source_name} {key} is missing: materialize it first")
            with clock.time("compute_s"):
                if source_name == "readings":
                    out = tumbling_windows(hour, every, rolling)
                else:
                    out = coarser_windows(hour, every, rolling)
            with clock.time("write_s"):
                write_hour(the_lake, name, key, out)
            rows += int(out["count"].sum())
            windows += out.height
            last = out if out.height else last
        return dg.MaterializeResult(
            metadata={
                "rows": windows,
                "readings_counted": rows,
                "hours": len(context.partition_keys),
                **clock.seconds,
                "preview": preview(last),
            }
        )

    return window_asset


def _counts_check(asset: dg.AssetsDefinition, source: str) -> dg.AssetChecksDefinition:
    """Sum of the windows' counts = rows of `readings` (or counts of the finer windows they were
    rolled up from). Each hop is compared with the file it was made from, as that file stands:
    comparing two hops up would fail a correct run whenever newer readings landed in between."""
    name = asset.key.path[-1]

    @dg.asset_check(
        asset=asset,
        name=f"{name}_counts_match_{source}",
        blocking=True,
        description=f"Sum of {name} counts = {source} "
        f"{'rows' if source == 'readings' else 'counts'} over the same hours.",
    )
    def counts_check(
        context: dg.AssetCheckExecutionContext, lake: LakeResource
    ) -> dg.AssetCheckResult:
        keys = context.partition_keys
        window_sum, found = _count_sum(lake, name, keys)
        expected, _ = _count_sum(lake, source, keys)
        return dg.AssetCheckResult(
            passed=window_sum == expected and found == len(keys),
            metadata={"sum_of_window_counts": window_sum, f"{source}_count": expected},
        )

    return counts_check


def _count_sum(lake: LakeResource, asset: str, keys: list[str]) -> tuple[int, int]:
    """(rows — or sum of `count` for window tables — over the hours, hour files found)."""
    paths = lake.lake().hour_paths(asset, keys)
    if not paths:
        return 0, 0
    what = pl.len() if asset == "readings" else pl.col("count").sum()
    return int(pl.scan_parquet(paths).select(what).collect().item()), len(paths)


windows_1m = _window_asset("windows_1m", *WINDOWS["windows_1m"])
# 5-minute windows roll up the 1-minute ones exactly (no second pass over the readings).
windows_5m = _window_asset("windows_5m", *WINDOWS["windows_5m"], source=windows_1m)
WINDOW_CHECKS = [_counts_check(windows_1m, "readings"), _counts_check(windows_5m, "windows_1m")]
