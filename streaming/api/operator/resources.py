"""`Operator`: the clients the operator routes share, built from one `Settings` and closed by the
app's lifespan.

- Redis (`redis.asyncio`, hiredis): live state; every route reads it in one round trip.
- PostgreSQL: a psycopg async pool (autocommit, short timeouts) over schema `settings.pg_schema`.
  A missing schema or table (the pipeline has not loaded anything yet) reads as empty.
- The lake: DuckDB over the landing files the footers select (`streaming.lake`), run in worker
  threads so the event loop never waits on Parquet.
- Kafka: one consumer that never subscribes (so it joins no group), for readiness: the broker
  answers, and the lander group's committed offsets against the high watermarks (its lag).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import psycopg
import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from streaming.api.fanout import ChangeFeed
from streaming.api.operator.asset_checks import AssetChecks
from streaming.api.problems import Problem
from streaming.kafka.config import reader_config
from streaming.lake import Lake
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings
from streaming.warehouse_schema import qualified

# The lander's consumer group (`ot land`): its committed offsets say how far the lake is behind.
LANDER_GROUP = "lake-lander"
PG_TIMEOUT_S = 5.0
KAFKA_TIMEOUT_S = 3.0
DUCKDB_THREADS = 2


class Missing(Exception):
    """The warehouse schema or table does not exist yet: nothing has been loaded."""


@dataclass
class Operator:
    settings: Settings
    redis: aioredis.Redis
    pg: AsyncConnectionPool
    lake: Lake
    keys: RedisKeys = field(init=False)
    _duck: duckdb.DuckDBPyConnection = field(init=False)
    _kafka: Consumer | None = field(default=None, init=False)
    _kafka_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    # The process's change-feed reader: the fleet snapshot stays valid until it moves (fleet.py).
    feed: ChangeFeed | None = field(default=None, init=False)
    # State the routes keep between requests (the fleet snapshot, fleet.py).
    shared: dict[str, Any] = field(default_factory=dict, init=False)
    asset_checks: AssetChecks = field(init=False)

    def __post_init__(self) -> None:
        self.keys = RedisKeys(self.settings.redis_prefix)
        self.asset_checks = AssetChecks(self.settings.api.dagster_url)
        self._duck = duckdb.connect(config={"threads": DUCKDB_THREADS})

    @classmethod
    async def open(cls, settings: Settings) -> Operator:
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        pool = AsyncConnectionPool(
            settings.pg_dsn,
            min_size=1,
            max_size=8,
            timeout=PG_TIMEOUT_S,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": int(PG_TIMEOUT_S)},
            name="ot-api",
        )
        await pool.open(wait=False)  # the API starts even while PostgreSQL is down
        return cls(settings, client, pool, Lake(settings.lake_dir))

    async def close(self) -> None:
        await self.pg.close()
        await self.redis.aclose()
        self._duck.close()
        with self._kafka_lock:
            if self._kafka is not None:
                self._kafka.close()
                self._kafka = None

    # -- PostgreSQL ------------------------------------------------------------------------------
    def table(self, name: str) -> sql.Composed:
        return qualified(self.settings.pg_schema, name)

    async def query(
        self, statement: sql.Composed | sql.SQL, params: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """Rows of one statement; `Missing` when the schema or a table is not there yet."""
        try:
            async with self.pg.connection() as conn:
                cur = await conn.execute(statement, params)
                return await cur.fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
            raise Missing(str(exc)) from exc
        except psycopg.DataError as exc:  # a parameter PostgreSQL cannot take
            raise Problem(
                422, "invalid-parameter", f"PostgreSQL refused a parameter: {exc}"
            ) from None

    # -- the lake --------------------------------------------------------------------------------
    async def duck(
        self, statement: str, params: Sequence[Any] | dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """One DuckDB statement in a worker thread (its own cursor: DuckDB cursors are not
        shared between threads)."""

        def run() -> list[tuple[Any, ...]]:
            cur = self._duck.cursor()
            try:
                return cur.execute(statement, params).fetchall()
            finally:
                cur.close()

        return await asyncio.to_thread(run)

    # -- Kafka -----------------------------------------------------------------------------------
    def _probe(self) -> Consumer:
        """The one Kafka client of the health reads (call under `_kafka_lock`)."""
        if self._kafka is None:
            config = reader_config(self.settings.kafka_bootstrap_servers, "api-health")
            config["group.id"] = LANDER_GROUP  # read its commits; never subscribes or commits
            self._kafka = Consumer(config)
        return self._kafka

    def dead_letters(self) -> int | None:
        """Blocking (run it in a thread): messages in the dead-letter topic (high - low watermark,
        summed over its partitions); None when the topic does not exist."""
        topic = self.settings.topics.dlq
        with self._kafka_lock:
            consumer = self._probe()
            meta = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S)
            found = meta.topics.get(topic)
            if found is None or found.error is not None:
                return None
            total = 0
            for p in sorted(found.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=KAFKA_TIMEOUT_S, cached=False
                )
                total += max(0, high - low)
            return total

    def lander_lag(self) -> dict[str, Any]:
        """Blocking (run it in a thread): the broker's topic metadata, then the lander group's
        committed offsets against the high watermarks of the readings topic."""
        topic = self.settings.topics.readings
        with self._kafka_lock:
            consumer = self._probe()
            meta = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S)
            found = meta.topics.get(topic)
            if found is None or found.error is not None:
                return {"brokers": len(meta.brokers), "topic": topic, "topic_exists": False}
            parts = [TopicPartition(topic, p) for p in sorted(found.partitions)]
            committed = consumer.committed(parts, timeout=KAFKA_TIMEOUT_S)
            lag = 0
            for tp in committed:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=KAFKA_TIMEOUT_S, cached=False
                )
                lag += max(0, high - (tp.offset if tp.offset >= 0 else low))
            return {
                "brokers": len(meta.brokers),
                "topic": topic,
                "topic_exists": True,
                "partitions": len(parts),
                "lag": lag,
            }
