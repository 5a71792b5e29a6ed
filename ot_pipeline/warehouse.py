"""PostgreSQL / TimescaleDB rollups in schema `settings.pg_schema` (default `ot`).

The DDL adapts to what the server has: with the timescaledb extension the tables become
hypertables, and with its community licence they also get compression and retention policies and
a continuous aggregate; without it they stay plain tables and `readings_hourly` is a materialized
view refreshed after each load. Detected at start-up, never assumed.

Loads are idempotent per partition range: in one transaction, delete the range and COPY the new
rows in (CSV written by Polars). The range delete makes a plain COPY safe without ON CONFLICT, and
an advisory lock per table serialises concurrent loads of the same table.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import psycopg
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

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]


TABLES: dict[str, TableSpec] = {
    "readings_1m": TableSpec(
        "readings_1m", "bucket", _WINDOW_COLUMNS, ("machine_id", "metric", "bucket"), "machine_id"
    ),
    "readings_5m": TableSpec(
        "readings_5m", "bucket", _WINDOW_COLUMNS, ("machine_id", "metric", "bucket"), "machine_id"
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


@dataclass(frozen=True)
class Capabilities:
    """What the server offers, detected: extension installed, and its licence."""

    timescaledb: bool
    license: str | None  # 'timescale' (community: compression, caggs, policies) or 'apache'

    @property
    def community(self) -> bool:
        return self.timescaledb and self.license == "timescale"


@dataclass(frozen=True)
class LoadResult:
    table: str
    rows: int
    deleted: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class Warehouse:
    """Thin adapter around one PostgreSQL database and one schema."""

    def __init__(self, dsn: str, schema: str, *, retention_days: int = 365) -> None:
        self.dsn = dsn
        self.schema = schema
        self.retention_days = retention_days

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=False)

    def _t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    # -- DDL -----------------------------------------------------------------------------------
    def detect(self, conn: psycopg.Connection) -> Capabilities:
        row = conn.execute(
            "SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        if row is None:
            return Capabilities(False, None)
        if row[0] is None:
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            except psycopg.Error:
                return Capabilities(False, None)  # available but not loadable/permitted
        licence = conn.execute("SHOW timescaledb.license").fetchone()
        return Capabilities(True, str(licence[0]) if licence else None)

    def ensure_schema(self) -> Capabilities:
        """Create the schema, tables and hourly rollup if missing (idempotent, serialised)."""
        with self.connect() as conn:
            caps = self.detect(conn)
            conn.commit()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ddl:{self.schema}",))
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
                for spec in TABLES.values():
                    self._create_table(conn, spec, caps)
                self._create_hourly_rollup(conn, caps)
        return caps

    def _create_table(self, conn: psycopg.Connection, spec: TableSpec, caps: Capabilities) -> None:
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in spec.columns
        )
        key = sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
                self._t(spec.name), columns, key
            )
        )
        if not caps.timescaledb:
            return
        qualified = f"{self.schema}.{spec.name}"
        conn.execute(
            "SELECT create_hypertable(%s::regclass, by_range(%s, INTERVAL '1 day'),"
            " if_not_exists => TRUE)",
            (qualified, spec.time_column),
        )
        if caps.community:
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.compress,"
                    " timescaledb.compress_segmentby = {}, timescaledb.compress_orderby = {})"
                ).format(
                    self._t(spec.name),
                    sql.Literal(spec.segment_by),
                    sql.Literal(f"{spec.time_column} DESC"),
                )
            )
            conn.execute(
                "SELECT add_compression_policy(%s::regclass, INTERVAL '7 days',"
                " if_not_exists => TRUE)",
                (qualified,),
            )
            conn.execute(
                "SELECT add_retention_policy(%s::regclass, make_interval(days => %s),"
                " if_not_exists => TRUE)",
                (qualified, self.retention_days),
            )

    def _create_hourly_rollup(self, conn: psycopg.Connection, caps: Capabilities) -> None:
        exists = conn.execute(
            "SELECT 1 FROM pg_matviews WHERE schemaname = %s AND matviewname = %s"
            " UNION ALL SELECT 1 FROM pg_views WHERE schemaname = %s AND viewname = %s",
            (self.schema, HOURLY_VIEW, self.schema, HOURLY_VIEW),
        ).fetchone()
        if exists:
            return
        if caps.community:
            # A continuous aggregate cannot be created inside a transaction block.
            with psycopg.connect(self.dsn, autocommit=True) as auto:
                auto.execute(
                    sql.SQL(
                        "CREATE MATERIALIZED VIEW IF NOT EXISTS {} WITH (timescaledb.continuous) AS"
                        " SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, machine_id,"
                        " metric, sum(count) AS count, min(min) AS min, max(max) AS max,"
                        " sum(mean * count) / sum(count) AS mean FROM {}"
                        " GROUP BY 1, 2, 3 WITH NO DATA"
                    ).format(self._t(HOURLY_VIEW), self._t("readings_1m"))
                )
                auto.execute(
                    "SELECT add_continuous_aggregate_policy(%s::regclass,"
                    " start_offset => INTERVAL '30 days', end_offset => INTERVAL '1 hour',"
                    " schedule_interval => INTERVAL '15 minutes', if_not_exists => TRUE)",
                    (f"{self.schema}.{HOURLY_VIEW}",),
                )
            return
        conn.execute(
            sql.SQL(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {} AS"
                " SELECT date_trunc('hour', bucket) AS bucket, machine_id, metric,"
                " sum(count) AS count, min(min) AS min, max(max) AS max,"
                " sum(mean * count) / sum(count) AS mean FROM {} GROUP BY 1, 2, 3"
            ).format(self._t(HOURLY_VIEW), self._t("readings_1m"))
        )
        conn.execute(
            sql.SQL(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (machine_id, metric, bucket)"
            ).format(sql.Identifier(f"{HOURLY_VIEW}_key"), self._t(HOURLY_VIEW))
        )

    # -- loads ---------------------------------------------------------------------------------
    def replace_range(
        self, table: str, start: datetime, end: datetime, frame: pl.DataFrame
    ) -> LoadResult:
        """Make [start, end) of `table` hold exactly `frame`, in one transaction."""
        spec = TABLES[table]
        frame = frame.select(spec.column_names)
        outside = frame.filter(
            (pl.col(spec.time_column) < start) | (pl.col(spec.time_column) >= end)
        ).height
        if outside:
            raise ValueError(f"{outside} rows of {table} fall outside [{start}, {end})")
        started = time.perf_counter()
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.{table}",))
            deleted = conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                    self._t(table),
                    sql.Identifier(spec.time_column),
                    sql.Identifier(spec.time_column),
                ),
                (start, end),
            ).rowcount
            with (
                conn.cursor() as cur,
                cur.copy(
                    sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(self._t(table), columns)
                ) as copy,
            ):
                for chunk in _csv_chunks(frame):
                    copy.write(chunk)
        return LoadResult(table, frame.height, max(deleted, 0), time.perf_counter() - started)

    def refresh_hourly(self) -> None:
        """Without TimescaleDB the hourly rollup is a plain materialized view: refresh it."""
        with self.connect() as conn:
            caps = self.detect(conn)
            if caps.community:
                return  # the continuous aggregate refreshes itself by policy
            conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(self._t(HOURLY_VIEW)))
            conn.commit()

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

    def drop_schema(self) -> None:
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )
            conn.commit()


def _csv_chunks(frame: pl.DataFrame, rows: int = 200_000) -> list[bytes]:
    """CSV in COPY's dialect: ISO timestamps with offset, empty unquoted field = NULL."""
    out: list[bytes] = []
    for offset in range(0, frame.height, rows):
        buf = io.BytesIO()
        frame.slice(offset, rows).write_csv(
            buf, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.3f%:z", null_value=""
        )
        out.append(buf.getvalue())
    return out
