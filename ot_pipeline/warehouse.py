"""PostgreSQL / TimescaleDB rollups in schema `settings.pg_schema` (default `ot`).

The DDL adapts to what the server has: with the timescaledb extension the tables become
hypertables, and with its community licence they also get compression and retention policies and
a continuous aggregate; without it they stay plain tables and `readings_hourly` is a materialized
view refreshed after each load. Detected at start-up, never assumed.

Loads are idempotent per partition range and atomic (one transaction; an advisory lock per table
serialises concurrent loads of the same table). Rows travel as binary COPY encoded from Arrow by
`pgpq` (about 1.6x the rows/s of CSV: no text parsing on the server). Two ways to replace a range:

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

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
from pgpq import ArrowToPostgresBinaryEncoder
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
        # Hypertables cannot be natively partitioned tables: TimescaleDB chunks them instead.
        partitioned = (
            sql.SQL(" PARTITION BY RANGE ({})").format(sql.Identifier(spec.time_column))
            if spec.hourly_partitions and not caps.timescaledb
            else sql.SQL("")
        )
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({})){}").format(
                self._t(spec.name), columns, key, partitioned
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
        frame = frame.select(spec.column_names).cast(spec.polars_schema)  # type: ignore[arg-type]
        outside = frame.filter(
            (pl.col(spec.time_column) < start) | (pl.col(spec.time_column) >= end)
        ).height
        if outside:
            raise ValueError(f"{outside} rows of {table} fall outside [{start}, {end})")
        started = time.perf_counter()
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.{table}",))
            if self._is_partitioned(conn, table):
                deleted = self._swap_hours(conn, spec, start, end, frame)
            else:
                deleted = self._delete_and_copy(conn, spec, start, end, frame)
        return LoadResult(table, frame.height, max(deleted, 0), time.perf_counter() - started)

    def _is_partitioned(self, conn: psycopg.Connection, table: str) -> bool:
        row = conn.execute(
            "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (self.schema, table),
        ).fetchone()
        return bool(row and row[0])

    def _delete_and_copy(
        self,
        conn: psycopg.Connection,
        spec: TableSpec,
        start: datetime,
        end: datetime,
        frame: pl.DataFrame,
    ) -> int:
        deleted = conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                self._t(spec.name),
                sql.Identifier(spec.time_column),
                sql.Identifier(spec.time_column),
            ),
            (start, end),
        ).rowcount
        self._copy(conn, spec, spec.name, frame)
        return deleted

    def _copy(
        self, conn: psycopg.Connection, spec: TableSpec, into: str, frame: pl.DataFrame
    ) -> None:
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
        with (
            conn.cursor() as cur,
            cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(self._t(into), columns)
            ) as copy,
        ):
            for chunk in binary_copy_chunks(frame):
                copy.write(chunk)

    def _swap_hours(
        self,
        conn: psycopg.Connection,
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
        parent = self._t(spec.name)
        existing = self._partition_names(conn, spec.name)
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
                        self._t(name), time_col, time_col
                    ),
                    (start, end),
                )
            if rows.height == 0 and not (partial and name in existing):
                continue  # the hour ends up empty: dropping its partition is enough
            staging = f"{name}_load"
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                    self._t(staging), parent
                )
            )
            self._copy(conn, spec, staging, rows)
            if partial and name in existing:  # keep the old hour's rows outside [start, end)
                conn.execute(
                    sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {} < %s OR {} >= %s").format(
                        self._t(staging), self._t(name), time_col, time_col
                    ),
                    (start, end),
                )
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                    self._t(staging), sql.Identifier(f"{staging}_pkey"), key
                )
            )
            built.append((hour, staging))
        for hour in _hours_touching(start, end):
            name = _partition_name(spec.name, hour)
            if name in existing:
                conn.execute(sql.SQL("DROP TABLE {}").format(self._t(name)))
        for hour, staging in built:
            name = _partition_name(spec.name, hour)
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    self._t(staging), sql.Identifier(name)
                )
            )
            conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    self._t(f"{staging}_pkey"), sql.Identifier(f"{name}_pkey")
                )
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    parent,
                    self._t(name),
                    sql.Literal(hour),
                    sql.Literal(hour + timedelta(hours=1)),
                )
            )
        return deleted

    def _partition_names(self, conn: psycopg.Connection, table: str) -> set[str]:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            (f"{self.schema}.{table}",),
        ).fetchall()
        return {str(r[0]) for r in rows}

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


def binary_copy_chunks(frame: pl.DataFrame, rows: int = 100_000) -> Iterator[bytes]:
    """PostgreSQL binary COPY from the frame's Arrow buffers (header, batches, trailer).
    Timestamps go as microseconds since 2000-01-01 UTC, the same for timestamp and timestamptz."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())  # large_string, not views
    encoder = ArrowToPostgresBinaryEncoder(table.schema)
    yield encoder.write_header()
    for batch in table.to_batches(max_chunksize=rows):
        yield encoder.write_batch(batch)
    yield encoder.finish()


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


def csv_chunks(frame: pl.DataFrame, rows: int = 200_000) -> list[bytes]:
    """CSV in COPY's dialect: ISO timestamps with offset, empty unquoted field = NULL."""
    out: list[bytes] = []
    for offset in range(0, frame.height, rows):
        buf = io.BytesIO()
        frame.slice(offset, rows).write_csv(
            buf, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.3f%:z", null_value=""
        )
        out.append(buf.getvalue())
    return out
