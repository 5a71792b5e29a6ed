"""One call to look at the lake from a notebook: `con = attach_lake()` gives a DuckDB connection
with one view per lake table (only those that have files yet). Paths come from the lake's layout
(`streaming.lake.Lake`): notebooks query views, never files."""

from __future__ import annotations

import glob
from pathlib import Path

import duckdb
import pyarrow as pa

from streaming.lake import Lake
from streaming.settings import Settings

# Hourly and daily assets, each a view of the same name.
ASSETS = (
    "readings",
    "windows_1m",
    "windows_5m",
    "anomalies",
    "machine_health_hourly",
    "detection_scorecard",
)


def lake_views(lake: Lake) -> dict[str, Path]:
    """view -> file or glob of the files it reads."""
    return {
        **{asset: lake.asset_glob(asset) for asset in ASSETS},
        "archive": lake.archive_glob,
        "faults": lake.ground_truth_faults,
        "machines": lake.ground_truth_machines,
    }


def attach_lake(path: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views over the lake at `path` (default OT_LAKE_DIR).

    `landing` also carries each row's file name (`filename`), for arrival questions;
    `landing_files` lists the landing files with the partition and offsets their names carry.
    """
    root = Path(path) if path is not None else Settings.from_env().lake_dir
    lake = Lake(root.absolute())
    con = duckdb.connect()
    for view, pattern in lake_views(lake).items():
        if glob.glob(str(pattern)):
            con.execute(
                f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{pattern}',"
                " union_by_name = true)"
            )
    if glob.glob(str(lake.landing_glob)):
        con.execute(
            f"CREATE VIEW landing AS SELECT * FROM read_parquet('{lake.landing_glob}',"
            " filename = true, union_by_name = true)"
        )
    files = lake.landed_files()
    listing = pa.table(
        {
            "partition": pa.array([f.partition for f in files], pa.int32()),
            "first_offset": pa.array([f.first_offset for f in files], pa.int64()),
            "last_offset": pa.array([f.last_offset for f in files], pa.int64()),
            "path": pa.array([str(f.path) for f in files], pa.string()),
        }
    )
    con.register("landing_files", listing)
    return con
