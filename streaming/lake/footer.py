"""The landing-file footer: Parquet key-value metadata the lander writes into every landing file,
so readers learn what a file holds without reading its data.

- `ot.event_hours`: the event-time hours the file touches (the Dagster sensor and the readings
  asset read only this, through the cached `event_hours`).
- `ot.rows`, `ot.dead_lettered`, `ot.dead_lettered_offsets`, `ot.first_offset`,
  `ot.last_offset`: the file's accounting (every offset of its name's range is one landed row or
  one dead letter). All values are ASCII.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streaming.lake.hours import event_hours as hours_of_timestamps
from streaming.lake.hours import hours_of, join_hours

EVENT_HOURS_KEY = b"ot.event_hours"
ROWS_KEY = b"ot.rows"
DEAD_LETTERED_KEY = b"ot.dead_lettered"
DEAD_LETTERED_OFFSETS_KEY = b"ot.dead_lettered_offsets"
FIRST_OFFSET_KEY = b"ot.first_offset"
LAST_OFFSET_KEY = b"ot.last_offset"


def footer(
    table: pa.Table, first_offset: int, last_offset: int, dead_lettered: np.ndarray
) -> dict[bytes, bytes]:
    """Key-value metadata of a landing file: hours for the Dagster sensor, counts for checks."""
    ts_ms = table.column("ts").cast(pa.int64()).to_numpy() if table.num_rows else []
    return {
        EVENT_HOURS_KEY: join_hours(hours_of_timestamps(ts_ms)).encode(),
        ROWS_KEY: str(table.num_rows).encode(),
        DEAD_LETTERED_KEY: str(len(dead_lettered)).encode(),
        DEAD_LETTERED_OFFSETS_KEY: ",".join(str(int(o)) for o in dead_lettered).encode(),
        FIRST_OFFSET_KEY: str(first_offset).encode(),
        LAST_OFFSET_KEY: str(last_offset).encode(),
    }


@dataclass(frozen=True)
class Footer:
    """What a landing file's footer says. `rows` is the file's row count (Parquet metadata);
    the other counts are None when the writer did not record them."""

    event_hours: list[str]
    rows: int
    dead_lettered: int | None
    dead_lettered_offsets: list[int]
    first_offset: int | None
    last_offset: int | None

    @classmethod
    def from_metadata(cls, metadata: Mapping[bytes, bytes], rows: int) -> Footer:
        return cls(
            event_hours=hours_of(metadata.get(EVENT_HOURS_KEY)),
            rows=rows,
            dead_lettered=_int(metadata.get(DEAD_LETTERED_KEY)),
            dead_lettered_offsets=parse_offsets(metadata.get(DEAD_LETTERED_OFFSETS_KEY)),
            first_offset=_int(metadata.get(FIRST_OFFSET_KEY)),
            last_offset=_int(metadata.get(LAST_OFFSET_KEY)),
        )


def read_footer(path: Path | str) -> Footer:
    """The footer of one landing file (reads the Parquet footer only, never the data)."""
    meta = pq.read_metadata(path)
    return Footer.from_metadata(meta.metadata or {}, meta.num_rows)


# Footers never change once a landing file exists under its final name (written atomically),
# so the event hours of a path are cached for the life of the process, keyed by path and size.
_HOURS_CACHE: dict[tuple[str, int], list[str]] = {}
_LOCK = threading.Lock()


def event_hours(path: Path | str) -> list[str]:
    """The hourly partition keys a landing file touches, from its footer (cached); [] once the
    file is gone (retention may remove it meanwhile)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return []
    key = (str(path), size)
    with _LOCK:
        cached = _HOURS_CACHE.get(key)
    if cached is not None:
        return cached
    metadata = pq.read_schema(path).metadata or {}
    hours = hours_of(metadata.get(EVENT_HOURS_KEY))
    with _LOCK:
        _HOURS_CACHE[key] = hours
    return hours


def parse_offsets(raw: bytes | None) -> list[int]:
    """Inverse of the comma-separated offsets in a footer."""
    return [int(x) for x in raw.decode().split(",") if x] if raw else []


def _int(raw: bytes | None) -> int | None:
    return int(raw) if raw else None
