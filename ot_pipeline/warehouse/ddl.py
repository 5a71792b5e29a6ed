"""The warehouse schema, created to fit the server's capabilities (idempotent, serialised).

With the timescaledb extension the tables become hypertables, and with its community licence they
also get compression and retention policies and `readings_hourly` is a continuous aggregate;
without it they stay plain tables (the window tables natively partitioned by hour) and
`readings_hourly` is a materialized view refreshed after each load.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ot_pipeline.warehouse.capabilities import Capabilities
from streaming.warehouse_schema import HOURLY_VIEW, TABLES, TableSpec, qualified


def create_schema(
    conn: psycopg.Connection, dsn: str, schema: str, caps: Capabilities, *, retention_days: int
) -> None:
    """Create the schema, tables and hourly rollup if missing, in one transaction under an
    advisory lock (concurrent first runs create them once)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ddl:{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for spec in TABLES.values():
            create_table(conn, schema, spec, caps, retention_days=retention_days)
        create_hourly_rollup(conn, dsn, schema, caps)


def create_table(
    conn: psycopg.Connection,
    schema: str,
    spec: TableSpec,
    caps: Capabilities,
    *,
    retention_days: int,
) -> None:
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
            qualified(schema, spec.name), columns, key, partitioned
        )
    )
    if not caps.timescaledb:
        return
    name = f"{schema}.{spec.name}"
    conn.execute(
        "SELECT create_hypertable(%s::regclass, by_range(%s, INTERVAL '1 day'),"
        " if_not_exists => TRUE)",
        (name, spec.time_column),
    )
    if caps.community:
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} SET (timescaledb.compress,"
                " timescaledb.compress_segmentby = {}, timescaledb.compress_orderby = {})"
            ).format(
                qualified(schema, spec.name),
                sql.Literal(spec.segment_by),
                sql.Literal(f"{spec.time_column} DESC"),
            )
        )
        conn.execute(
            "SELECT add_compression_policy(%s::regclass, INTERVAL '7 days', if_not_exists => TRUE)",
            (name,),
        )
        conn.execute(
            "SELECT add_retention_policy(%s::regclass, make_interval(days => %s),"
            " if_not_exists => TRUE)",
            (name, retention_days),
        )


def create_hourly_rollup(
    conn: psycopg.Connection, dsn: str, schema: str, caps: Capabilities
) -> None:
    exists = conn.execute(
        "SELECT 1 FROM pg_matviews WHERE schemaname = %s AND matviewname = %s"
        " UNION ALL SELECT 1 FROM pg_views WHERE schemaname = %s AND viewname = %s",
        (schema, HOURLY_VIEW, schema, HOURLY_VIEW),
    ).fetchone()
    if exists:
        return
    view, source = qualified(schema, HOURLY_VIEW), qualified(schema, "readings_1m")
    if caps.community:
        # A continuous aggregate cannot be created inside a transaction block.
        with psycopg.connect(dsn, autocommit=True) as auto:
            auto.execute(
                sql.SQL(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {} WITH (timescaledb.continuous) AS"
                    " SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, machine_id,"
                    " metric, sum(count) AS count, min(min) AS min, max(max) AS max,"
                    " sum(mean * count) / sum(count) AS mean FROM {}"
                    " GROUP BY 1, 2, 3 WITH NO DATA"
                ).format(view, source)
            )
            auto.execute(
                "SELECT add_continuous_aggregate_policy(%s::regclass,"
                " start_offset => INTERVAL '30 days', end_offset => INTERVAL '1 hour',"
                " schedule_interval => INTERVAL '15 minutes', if_not_exists => TRUE)",
                (f"{schema}.{HOURLY_VIEW}",),
            )
        return
    conn.execute(
        sql.SQL(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {} AS"
            " SELECT date_trunc('hour', bucket) AS bucket, machine_id, metric,"
            " sum(count) AS count, min(min) AS min, max(max) AS max,"
            " sum(mean * count) / sum(count) AS mean FROM {} GROUP BY 1, 2, 3"
        ).format(view, source)
    )
    conn.execute(
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (machine_id, metric, bucket)").format(
            sql.Identifier(f"{HOURLY_VIEW}_key"), view
        )
    )


def refresh_hourly_rollup(conn: psycopg.Connection, schema: str, caps: Capabilities) -> None:
    """Without TimescaleDB the hourly rollup is a plain materialized view: refresh it."""
    if caps.community:
        return  # the continuous aggregate refreshes itself by policy
    conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(qualified(schema, HOURLY_VIEW)))


def drop_schema(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
