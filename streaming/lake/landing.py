"""Reading the landing zone: which files touch an hour (from their footers, cached), and the rows
of an hour from exactly those files."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from streaming.lake.footer import event_hours
from streaming.lake.layout import Lake, LandedFile
from streaming.lake.schema import LANDED_COLUMNS, LANDED_SCHEMA


def files_for_hour(lake: Lake, hour_key: str) -> list[LandedFile]:
    return [f for f in lake.landed_files() if hour_key in event_hours(f.path)]


def files_by_hour(lake: Lake, hour_keys: list[str]) -> dict[str, list[LandedFile]]:
    """One footer pass over the landing zone for several hours."""
    wanted = set(hour_keys)
    found: dict[str, list[LandedFile]] = {k: [] for k in hour_keys}
    for f in lake.landed_files():
        for h in event_hours(f.path):
            if h in wanted:
                found[h].append(f)
    return found


def landed_rows(
    files: list[LandedFile],
    start: datetime,
    end: datetime,
    columns: Sequence[str] = LANDED_COLUMNS,
) -> pl.DataFrame:
    """Rows with event time in [start, end) of the given landing files (predicate pushed down),
    `columns` of them."""
    if not files:
        return empty_landed()
    return (
        pl.scan_parquet([f.path for f in files])
        .filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        .select(list(columns))
        .collect()
    )


def empty_landed() -> pl.DataFrame:
    return pl.from_arrow(LANDED_SCHEMA.empty_table())  # type: ignore[return-value]
