"""`Warehouse`: the one object the Postgres resource hands to assets (schema set-up, range loads,
the hourly-rollup refresh, counts for checks). It opens the connections and transactions and
leaves the SQL to `capabilities`, `ddl` and `loads`."""

from __future__ import annotations

import time
from datetime import datetime

import polars as pl
import psycopg
from psycopg import sql

from ot_pipeline.warehouse import ddl, loads
from ot_pipeline.warehouse.capabilities import Capabilities, detect
from ot_pipeline.warehouse.loads import LoadResult
from streaming.warehouse_schema import TABLES, qualified


class Warehouse:
    """Thin adapter around one PostgreSQL database and one schema."""

    def __init__(self, dsn: str, schema: str, *, retention_days: int = 365) -> None:
        self.dsn = dsn
        self.schema = schema
        self.retention_days = retention_days

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=False)

    def _t(self, name: str) -> sql.Composed:
        return qualified(self.schema, name)

    # -- DDL -----------------------------------------------------------------------------------
    def detect(self, conn: psycopg.Connection) -> Capabilities:
        return detect(conn)

    def ensure_schema(self) -> Capabilities:
        """Create the schema, tables and hourly rollup if missing (idempotent, serialised)."""
        with self.connect() as conn:
            caps = detect(conn)
            conn.commit()
            ddl.create_schema(conn, self.dsn, self.schema, caps, retention_days=self.retention_days)
        return caps

    def refresh_hourly(self) -> None:
        """Without TimescaleDB the hourly rollup is a plain materialized view: refresh it."""
        with self.connect() as conn:
            ddl.refresh_hourly_rollup(conn, self.schema, detect(conn))
            conn.commit()

    def drop_schema(self) -> None:
        with self.connect() as conn:
            ddl.drop_schema(conn, self.schema)
            conn.commit()

    # -- loads ---------------------------------------------------------------------------------
    def replace_range(
        self, table: str, start: datetime, end: datetime, frame: pl.DataFrame
    ) -> LoadResult:
        """Make [start, end) of `table` hold exactly `frame`, in one transaction."""
        spec = TABLES[table]
        frame = loads.rows_for_range(spec, start, end, frame)
        started = time.perf_counter()
        with self.connect() as conn, conn.transaction():
            deleted = loads.replace_range(conn, self.schema, spec, start, end, frame)
        return LoadResult(table, frame.height, max(deleted, 0), time.perf_counter() - started)

    # -- reads (checks, tests) -----------------------------------------------------------------
    def count_in_range(
        self, table: str, start: datetime, end: datetime, *, sum_column: str | None = None
    ) -> int:
        spec = TABLES[table]
        what = (
            sql.SQL("count(*)")
            if sum_column is None
            else sql.SQL("coalesce(sum({}), 0)").format(sql.Identifier(sum_column))
        )
        with self.connect() as conn:
            row = conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE {} >= %s AND {} < %s").format(
                    what,
                    self._t(table),
                    sql.Identifier(spec.time_column),
                    sql.Identifier(spec.time_column),
                ),
                (start, end),
            ).fetchone()
        return int(row[0]) if row else 0
