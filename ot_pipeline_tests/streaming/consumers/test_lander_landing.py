"""The lander's pure core: splitting batches by partition, flush policy."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from streaming.consumers.landing import FlushPolicy, PartitionBuffer, over_budget, slices
from streaming.events import DecodedBatch, decode_batch, encode_avro_many, event_id_for
from streaming.lake import LANDED_SCHEMA

NOW_MS = int(datetime(2026, 11, 22, 13, 30, tzinfo=UTC).timestamp() * 1000)


def _record(i: int, ts: int) -> dict[str, object]:
    return {
        "event_id": event_id_for(f"m{i % 3}", i),
        "machine_id": f"m{i % 3}",
        "machine_type": "PUMP",
        "line_id": "line-1",
        "metric": "pressure",
        "unit": "bar",
        "value": 5.0 + i,
        "ts": ts,
        "seq": i,
        "status_code": 0,
        "quality": "GOOD",
    }


def _decoded(n: int, bad: set[int]) -> tuple[list[bytes], DecodedBatch]:
    payloads = encode_avro_many([_record(i, NOW_MS - 60_000 + i) for i in range(n)])
    for i in bad:
        payloads[i] = b"garbage"
    batch = decode_batch(payloads, NOW_MS, max_future_ms=300_000, max_age_ms=86_400_000)
    return payloads, batch


def test_lander_slices_keep_every_consumed_offset_as_row_or_dead_letter() -> None:
    payloads, batch = _decoded(12, bad={1, 6})
    partitions = np.array([0, 1] * 6, dtype=np.int32)
    offsets = np.array([100 + i // 2 for i in range(12)], dtype=np.int64)
    sizes = np.array([len(p) for p in payloads], dtype=np.int64)

    pieces = {
        s.partition: s
        for s in slices(batch.valid, batch.valid_index, partitions, offsets, sizes, NOW_MS)
    }

    assert sorted(pieces) == [0, 1]
    p0, p1 = pieces[0], pieces[1]
    assert (p0.first_offset, p0.last_offset, p0.messages) == (100, 105, 6)
    assert p0.rows.column("kafka_offset").to_pylist() == [100, 101, 102, 104, 105]
    assert p0.dead_lettered.tolist() == [103]
    assert p1.rows.column("kafka_offset").to_pylist() == [101, 102, 103, 104, 105]
    assert p1.dead_lettered.tolist() == [100]
    assert p0.rows.schema.equals(LANDED_SCHEMA)
    assert set(p1.rows.column("kafka_partition").to_pylist()) == {1}
    assert p0.rows.column("ingest_ts").cast(pa.int64()).to_pylist() == [NOW_MS] * 5
    # Event fields travel with their own offset: row with offset 104 of partition 0 is message 8.
    assert p0.rows.column("seq").to_pylist() == [0, 2, 4, 8, 10]


def test_lander_flush_policy_triggers_on_rows_bytes_or_age() -> None:
    payloads, batch = _decoded(4, bad=set())
    sizes = np.array([len(p) for p in payloads], dtype=np.int64)
    (piece,) = slices(
        batch.valid,
        batch.valid_index,
        np.zeros(4, np.int32),
        np.arange(4, dtype=np.int64),
        sizes,
        NOW_MS,
    )
    buf = PartitionBuffer(0, 0, opened_at=10.0)
    assert buf.due(FlushPolicy(max_rows=1), 10.0) is None  # nothing buffered, nothing to write
    buf.add(piece)
    assert buf.due(FlushPolicy(max_rows=4, max_bytes=10**9, max_age_s=60), 10.0) == "rows"
    assert (
        buf.due(FlushPolicy(max_rows=99, max_bytes=int(sizes.sum()), max_age_s=60), 10.0) == "bytes"
    )
    assert buf.due(FlushPolicy(max_rows=99, max_bytes=10**9, max_age_s=5), 15.0) == "age"
    assert buf.due(FlushPolicy(max_rows=99, max_bytes=10**9, max_age_s=5), 14.9) is None
    assert buf.table().num_rows == 4


def test_lander_writes_the_largest_buffers_early_once_all_together_pass_the_budget() -> None:
    def holding(partition: int, nbytes: int) -> PartitionBuffer:
        buf = PartitionBuffer(partition, 0, opened_at=0.0)
        buf.messages, buf.nbytes = 1, nbytes
        return buf

    buffers = {0: holding(0, 30), 1: holding(1, 50), 2: holding(2, 20)}
    assert over_budget(buffers, FlushPolicy(max_buffered_bytes=100)) == []
    assert over_budget(buffers, FlushPolicy(max_buffered_bytes=99)) == [1]
    assert over_budget(buffers, FlushPolicy(max_buffered_bytes=40)) == [1, 0]
    assert over_budget({}, FlushPolicy(max_buffered_bytes=0)) == []
