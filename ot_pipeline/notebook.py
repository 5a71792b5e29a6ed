"""One call to look at the lake from a notebook: `con = attach_lake()` gives a DuckDB connection
with one view per lake table (only those that have files yet)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from streaming.settings import Settings

# view -> glob under the lake root
LAKE_VIEWS: dict[str, str] = {
    "readings": "readings/*.parquet",
    "windows_1m": "windows_1m/*.parquet",
    "windows_5m": "windows_5m/*.parquet",
    "anomalies": "anomalies/*.parquet",
    "machine_health_hourly": "machine_health_hourly/*.parquet",
    "archive": "archive/*.parquet",
    "detection_scorecard": "detection_scorecard/*.parquet",
    "faults": "ground_truth/faults.parquet",
    "machines": "ground_truth/machines.parquet",
}
LANDING_GLOB = "landing/sensor-readings/*/*.parquet"


def attach_lake(path: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views over the lake at `path` (default OT_LAKE_DIR).

    `landing` also carries each row's file name (`filename`), for offset and arrival questions.
    """
    root = Path(path) if path is not None else Settings.from_env().lake_dir
    root = root.absolute()
    con = duckdb.connect()
    for view, pattern in LAKE_VIEWS.items():
        if any(root.glob(pattern)):
            con.execute(
                f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{root / pattern}',"
                " union_by_name = true)"
            )
    if any(root.glob(LANDING_GLOB)):
        con.execute(
            f"CREATE VIEW landing AS SELECT * FROM read_parquet('{root / LANDING_GLOB}',"
            " filename = true, union_by_name = true)"
        )
    return con
