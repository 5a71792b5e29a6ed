"""Files in the lake: atomic writes (a reader sees a whole file or none), and asset partitions,
one Parquet file per (asset, hour), rewritten whole on every materialization, so reruns and
backfills are idempotent."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa

from streaming.lake.layout import TMP_SUFFIX, Lake


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through `write(tmp_path)`, fsync, then rename: readers see a whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_frame(path: Path, frame: pl.DataFrame, *, compression_level: int = 1) -> None:
    """zstd level 1: hourly files are rewritten often, the daily archive is the compact copy."""

    def write(tmp: Path) -> None:
        frame.write_parquet(
            tmp, compression="zstd", compression_level=compression_level, statistics=True
        )

    write_atomically(path, write)


def write_hour(lake: Lake, asset: str, hour_key: str, frame: pl.DataFrame) -> Path:
    path = lake.hour_path(asset, hour_key)
    write_frame(path, frame)
    return path


def read_hours(lake: Lake, asset: str, hour_keys: list[str]) -> pl.DataFrame | None:
    """The partitions that exist of `hour_keys`, concatenated; None when none exists."""
    paths = lake.hour_paths(asset, hour_keys)
    if not paths:
        return None
    return pl.read_parquet(paths)


def read_hour(
    lake: Lake, asset: str, hour_key: str, columns: list[str] | None = None
) -> pl.DataFrame | None:
    path = lake.hour_path(asset, hour_key)
    return pl.read_parquet(path, columns=columns) if path.exists() else None


def _normalised(dtype: pl.DataType) -> str:
    # Time unit is an encoding detail (DuckDB writes microseconds, the lander milliseconds);
    # the time zone and the column's kind are the contract.
    if isinstance(dtype, pl.Datetime):
        return f"Datetime(tz={dtype.time_zone})"
    return str(dtype)


def schema_problems(path: Path | str, expected: pa.Schema) -> list[str]:
    """Columns missing, extra or of another kind than `expected` (empty list = conforms)."""
    want = {n: _normalised(t) for n, t in pl.from_arrow(expected.empty_table()).schema.items()}  # type: ignore[union-attr]
    found = {n: _normalised(t) for n, t in pl.read_parquet_schema(path).items()}
    problems = [f"missing {n}" for n in want if n not in found]
    problems += [f"extra {n}" for n in found if n not in want]
    problems += [f"{n}: {found[n]} != {t}" for n, t in want.items() if n in found and found[n] != t]
    return problems
