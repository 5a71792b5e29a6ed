"""The warehouse contract: the PostgreSQL tables of schema `settings.pg_schema` (columns, key, time
column and partitioning of each) and the hourly rollup view over `readings_1m`.

The pipeline's DDL creates them from these specs and its loads cast frames to them
(`ot_pipeline.warehouse`); the operator API (`streaming.api.operator`) reads them. Both import the
names from here, so a column is spelt once.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from psycopg import sql

DOUBLE = "double precision"
_WINDOW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bucket", "timestamptz NOT NULL"),
    ("machine_id", "text NOT NULL"),
    ("metric", "text NOT NULL"),
    ("count", "bigint NOT NULL"),
    ("min", DOUBLE),
    ("max", DOUBLE),
    ("mean", DOUBLE),
    ("stddev", DOUBLE),
    ("first", DOUBLE),
    ("last", DOUBLE),
    ("rolling_mean", DOUBLE),
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    time_column: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    segment_by: str
    # Natively partitioned by hour on plain PostgreSQL: a load swaps whole hour partitions.
    hourly_partitions: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        """Binary COPY is strict about widths (an int4 is no int8): cast to these first."""
        return {c: _POLARS_TYPES[t.removesuffix(" NOT NULL")] for c, t in self.columns}


_POLARS_TYPES: dict[str, pl.DataType] = {
    "timestamptz": pl.Datetime("us", "UTC"),
    "text": pl.String(),
    "bigint": pl.Int64(),
    "integer": pl.Int32(),
    DOUBLE: pl.Float64(),
}


TABLES: dict[str, TableSpec] = {
    "readings_1m": TableSpec(
        "readings_1m",
        "bucket",
        _WINDOW_COLUMNS,
        ("machine_id", "metric", "bucket"),
        "machine_id",
        hourly_partitions=True,
    ),
    "readings_5m": TableSpec(
        "readings_5m",
        "bucket",
        _WINDOW_COLUMNS,
        ("machine_id", "metric", "bucket"),
        "machine_id",
        hourly_partitions=True,
    ),
    "anomalies": TableSpec(
        "anomalies",
        "ts",
        (
            ("ts", "timestamptz NOT NULL"),
            ("machine_id", "text NOT NULL"),
            ("machine_type", "text"),
            ("line_id", "text"),
            ("metric", "text NOT NULL"),
            ("event_id", "text NOT NULL"),
            ("seq", "bigint"),
            ("value", DOUBLE),
            ("status_code", "integer"),
            ("score", DOUBLE),
            ("severity", "text"),
            ("detector", "text"),
        ),
        ("event_id", "ts"),
        "machine_id",
    ),
    "machine_health_hourly": TableSpec(
        "machine_health_hourly",
        "hour",
        (
            ("hour", "timestamptz NOT NULL"),
            ("machine_id", "text NOT NULL"),
            ("machine_type", "text"),
            ("line_id", "text"),
            ("readings", "bigint NOT NULL"),
            ("uptime_pct", DOUBLE),
            ("ok_s", DOUBLE),
            ("warning_s", DOUBLE),
            ("fault_s", DOUBLE),
            ("maintenance_s", DOUBLE),
            ("no_data_s", DOUBLE),
            ("anomalies", "bigint"),
            ("alerts", "bigint"),
            ("seq_gaps", "bigint"),
            ("missing_readings", "bigint"),
        ),
        ("machine_id", "hour"),
        "machine_id",
    ),
}
HOURLY_VIEW = "readings_hourly"
# The hourly view's columns: an hour `bucket` per machine and metric, rolled up from readings_1m.
HOURLY_VIEW_COLUMNS = ("bucket", "machine_id", "metric", "count", "min", "max", "mean")


def qualified(schema: str, name: str) -> sql.Composed:
    """`"schema"."name"`, quoted, for a table, partition or view of the warehouse schema."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
