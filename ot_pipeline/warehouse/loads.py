"""Replacing a time range of a table with a frame, in the caller's transaction.

A load is idempotent per range and atomic: one transaction, and an advisory lock per table
serialises concurrent loads of the same table. Rows travel as binary COPY (`copy_encoding`). Two
ways to replace a range:

- **Hourly partition swap** (plain PostgreSQL, the window tables `readings_1m`/`readings_5m`,
  natively partitioned by hour on their time column): every hour of the range gets a fresh table,
  filled by COPY, indexed in one sorted build, then the old hour's partition is dropped and the
  new one attached, all in the load's transaction. No dead tuples, no per-row index inserts, no
  unique checks against the rows being replaced: a rerun is as fast as a first load.
- **Delete + COPY** (hypertables under TimescaleDB, the small `anomalies` and
  `machine_health_hourly` tables, and window tables created as plain tables by older versions):
  delete the range, COPY the rows; the delete makes COPY safe without ON CONFLICT.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
from psycopg import sql

from ot_pipeline.warehouse.copy_encoding import binary_copy_chunks
from streaming.warehouse_schema import TableSpec, qualified


@dataclass(frozen=True)
class LoadResult:
    table: str
    rows: int
    deleted: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def rows_for_range(
    spec: TableSpec, start: datetime, end: datetime, frame: pl.DataFrame
) -> pl.DataFrame:
    """The frame as the table's columns and types; every row must fall inside [start, end)."""
    frame = frame.select(spec.column_names).cast(spec.polars_schema)  # type: ignore[arg-type]
    outside = frame.filter(
        (pl.col(spec.time_column) < start) | (pl.col(spec.time_column) >= end)
    ).height
    if outside:
        raise ValueError(f"{outside} rows of {spec.name} fall outside [{start}, {end})")
    return frame


def replace_range(
    conn: psycopg.Connection,
    schema: str,
    spec: TableSpec,
    start: datetime,
    end: datetime,
    frame: pl.DataFrame,
) -> int:
    """Make [start, end) of the table hold exactly `frame` (from `rows_for_range`) by the
    table's strategy; returns the rows it replaced. Call inside a transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}.{spec.name}",))
    if is_partitioned(conn, schema, spec.name):
        return swap_hours(conn, schema, spec, start, end, frame)
    return delete_and_copy(conn, schema, spec, start, end, frame)


def is_partitioned(conn: psycopg.Connection, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    ).fetchone()
    return bool(row and row[0])


def delete_and_copy(
    conn: psycopg.Connection,
    schema: str,
    spec: TableSpec,
    start: datetime,
    end: datetime,
    frame: pl.DataFrame,
) -> int:
    deleted = conn.execute(
        sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
            qualified(schema, spec.name),
            sql.Identifier(spec.time_column),
            sql.Identifier(spec.time_column),
        ),
        (start, end),
    ).rowcount
    copy_into(conn, schema, spec, spec.name, frame)
    return deleted


def copy_into(
    conn: psycopg.Connection, schema: str, spec: TableSpec, into: str, frame: pl.DataFrame
) -> None:
    """COPY the frame (the spec's columns) into table `into` of the schema, binary."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
                qualified(schema, into), columns
            )
        ) as copy,
    ):
        for chunk in binary_copy_chunks(frame):
            copy.write(chunk)


def swap_hours(
    conn: psycopg.Connection,
    schema: str,
    spec: TableSpec,
    start: datetime,
    end: datetime,
    frame: pl.DataFrame,
) -> int:
    """Build each hour of [start, end) as a fresh table (COPY, then one sorted index build),
    then drop the old hour partitions and attach the new ones. The swap comes last, so the
    parent's exclusive lock is held only for the catalog changes and the commit; readers see
    the old hours or the new ones, never a mix."""
    time_col = sql.Identifier(spec.time_column)
    key = sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)
    parent = qualified(schema, spec.name)
    existing = partition_names(conn, schema, spec.name)
    by_hour = {
        hour: part
        for (hour,), part in frame.with_columns(
            pl.col(spec.time_column).dt.truncate("1h").alias("__hour")
        )
        .partition_by("__hour", as_dict=True, include_key=False, maintain_order=True)
        .items()
    }
    built: list[tuple[datetime, str]] = []
    deleted = 0
    for hour in _hours_touching(start, end):
        name = _partition_name(spec.name, hour)
        rows = by_hour.get(hour, frame.clear())
        partial = hour < start or hour + timedelta(hours=1) > end
        if name in existing:
            deleted += _count(
                conn,
                sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s AND {} < %s").format(
                    qualified(schema, name), time_col, time_col
                ),
                (start, end),
            )
        if rows.height == 0 and not (partial and name in existing):
            continue  # the hour ends up empty: dropping its partition is enough
        staging = f"{name}_load"
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                qualified(schema, staging), parent
            )
        )
        copy_into(conn, schema, spec, staging, rows)
        if partial and name in existing:  # keep the old hour's rows outside [start, end)
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {} < %s OR {} >= %s").format(
                    qualified(schema, staging), qualified(schema, name), time_col, time_col
                ),
                (start, end),
            )
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                qualified(schema, staging), sql.Identifier(f"{staging}_pkey"), key
            )
        )
        built.append((hour, staging))
    for hour in _hours_touching(start, end):
        name = _partition_name(spec.name, hour)
        if name in existing:
            conn.execute(sql.SQL("DROP TABLE {}").format(qualified(schema, name)))
    for hour, staging in built:
        name = _partition_name(spec.name, hour)
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                qualified(schema, staging), sql.Identifier(name)
            )
        )
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                qualified(schema, f"{staging}_pkey"), sql.Identifier(f"{name}_pkey")
            )
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                parent,
                qualified(schema, name),
                sql.Literal(hour),
                sql.Literal(hour + timedelta(hours=1)),
            )
        )
    return deleted


def partition_names(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (f"{schema}.{table}",),
    ).fetchall()
    return {str(r[0]) for r in rows}


def _hours_touching(start: datetime, end: datetime) -> list[datetime]:
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < end:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def _partition_name(table: str, hour: datetime) -> str:
    return f"{table}_{hour.astimezone(UTC):%Y%m%d%H}"


def _count(conn: psycopg.Connection, query: sql.Composed, params: tuple[object, ...]) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0
