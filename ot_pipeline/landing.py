"""Reading the landing zone: which files touch an hour (from their footers, cached), and the rows
of an hour from exactly those files."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ot_pipeline.transforms.landing import hours_of
from streaming.lake import EVENT_HOURS_KEY, Lake, LandedFile

# Footers never change once a landing file exists under its final name (written atomically),
# so the event hours of a path are cached for the life of the process, keyed by path and size.
_FOOTER_CACHE: dict[tuple[str, int], list[str]] = {}
_LOCK = threading.Lock()


def event_hours(path: Path) -> list[str]:
    """The hourly partition keys a landing file touches, read from its Parquet footer only."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return []
    key = (str(path), size)
    with _LOCK:
        cached = _FOOTER_CACHE.get(key)
    if cached is not None:
        return cached
    metadata = pq.read_schema(path).metadata or {}
    hours = hours_of(metadata.get(EVENT_HOURS_KEY))
    with _LOCK:
        _FOOTER_CACHE[key] = hours
    return hours


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


def landed_rows(files: list[LandedFile], start: datetime, end: datetime) -> pl.DataFrame:
    """Rows with event time in [start, end) of the given landing files (predicate pushed down)."""
    from ot_pipeline.transforms.readings import READINGS_COLUMNS

    if not files:
        return empty_landed()
    return (
        pl.scan_parquet([f.path for f in files])
        .filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        .select(READINGS_COLUMNS)
        .collect()
    )


def empty_landed() -> pl.DataFrame:
    from streaming.lake import LANDED_SCHEMA

    return pl.from_arrow(LANDED_SCHEMA.empty_table())  # type: ignore[return-value]
