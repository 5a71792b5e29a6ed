"""Reading the landing zone: which files touch an hour (from their footers, cached), and the rows
of an hour from exactly those files."""

from __future__ import annotations

import re
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


def first_event_hour(lake: Lake) -> str | None:
    """The earliest event hour the lake holds data of (an hour key), None for an empty lake.

    Cheap enough for start-up: the names of the hourly `readings` files and of the daily archives,
    and the footer of the first landing file of each Kafka partition (history lands first)."""
    hours: list[str] = []
    readings = lake.asset_dir("readings")
    if readings.is_dir():
        hours += [
            f"{p.stem[:13]}:{p.stem[13:15]}"
            for p in readings.glob("*.parquet")
            if _HOUR_FILE.match(p.name)
        ]
    if lake.archive_dir.is_dir():
        hours += [
            f"{p.stem[len('readings-') :]}-00:00"
            for p in lake.archive_dir.glob("readings-*.parquet")
            if _ARCHIVE_FILE.match(p.name)
        ]
    first_files: dict[int, LandedFile] = {}
    for f in lake.landed_files():
        first_files.setdefault(f.partition, f)
    for f in first_files.values():
        hours += event_hours(f.path)[:1]
    return min(hours, default=None)


_HOUR_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{4}\.parquet$")
_ARCHIVE_FILE = re.compile(r"^readings-\d{4}-\d{2}-\d{2}\.parquet$")


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
