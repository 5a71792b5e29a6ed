"""Columns of every landed row: the event contract's fields, then where it came from (Kafka
partition and offset) and when it was landed."""

from __future__ import annotations

import pyarrow as pa

from streaming.events.arrow import EVENT_SCHEMA

LANDED_SCHEMA = pa.schema(
    [
        *EVENT_SCHEMA,
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("ingest_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
LANDED_COLUMNS: tuple[str, ...] = tuple(LANDED_SCHEMA.names)
