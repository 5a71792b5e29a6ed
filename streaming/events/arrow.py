"""The Arrow schema of an event: the 11 contract fields as the consumers decode them.

The lake's landed schema (`streaming.lake.schema.LANDED_SCHEMA`) extends this one with where and
when each row was landed, so the event contract, not the storage, owns these columns.
"""

from __future__ import annotations

import pyarrow as pa

from streaming.events.model import FIELDS

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("machine_id", pa.string(), nullable=False),
        pa.field("machine_type", pa.string(), nullable=False),
        pa.field("line_id", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("status_code", pa.int32(), nullable=False),
        pa.field("quality", pa.string(), nullable=False),
    ]
)
assert tuple(EVENT_SCHEMA.names) == FIELDS
