"""Pure core of the lander: per-partition buffers, the flush policy and landed rows (the file
footer is the lake's: `streaming.lake.footer`).

No Kafka and no files here. A buffer covers a gapless offset range of one partition: every
consumed offset of the range is either a landed row or a dead-lettered offset recorded in the
footer, so the lake's file names are a gapless cover of each partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from streaming.lake import LANDED_SCHEMA


@dataclass(frozen=True)
class FlushPolicy:
    """A buffer is written when any limit is reached (rows counts every consumed message), and
    the largest buffers are written early while all of them together hold more than
    `max_buffered_bytes` of messages: a catch-up over many partitions stays within a fixed memory
    budget (buffered rows cost about twice their message bytes as Arrow columns)."""

    max_rows: int = 200_000
    max_bytes: int = 32 * 2**20
    max_age_s: float = 10.0
    max_buffered_bytes: int = 48 * 2**20


@dataclass(frozen=True)
class Slice:
    """What one consumed batch brought for one partition."""

    partition: int
    first_offset: int
    last_offset: int
    messages: int
    nbytes: int
    rows: pa.Table  # LANDED_SCHEMA
    dead_lettered: np.ndarray  # offsets (int64)


@dataclass
class PartitionBuffer:
    partition: int
    first_offset: int  # first offset the file will cover (the partition's resume point)
    opened_at: float
    last_offset: int = -1
    messages: int = 0
    nbytes: int = 0
    rows: int = 0
    tables: list[pa.Table] = field(default_factory=list)
    dead_lettered: list[np.ndarray] = field(default_factory=list)

    def add(self, piece: Slice) -> None:
        self.last_offset = piece.last_offset
        self.messages += piece.messages
        self.nbytes += piece.nbytes
        self.rows += piece.rows.num_rows
        if piece.rows.num_rows:
            self.tables.append(piece.rows)
        if len(piece.dead_lettered):
            self.dead_lettered.append(piece.dead_lettered)

    def due(self, policy: FlushPolicy, now: float) -> str | None:
        """Why the buffer should be written now, or None."""
        if not self.messages:
            return None
        if self.messages >= policy.max_rows:
            return "rows"
        if self.nbytes >= policy.max_bytes:
            return "bytes"
        if now - self.opened_at >= policy.max_age_s:
            return "age"
        return None

    def table(self) -> pa.Table:
        if not self.tables:
            return LANDED_SCHEMA.empty_table()
        return pa.concat_tables(self.tables).combine_chunks()

    def dead_lettered_offsets(self) -> np.ndarray:
        if not self.dead_lettered:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(self.dead_lettered)


def over_budget(buffers: dict[int, PartitionBuffer], policy: FlushPolicy) -> list[int]:
    """The partitions to write now, largest first, so that the rest holds at most
    `policy.max_buffered_bytes` of messages together."""
    total = sum(b.nbytes for b in buffers.values())
    out: list[int] = []
    for p, buf in sorted(buffers.items(), key=lambda item: -item[1].nbytes):
        if total <= policy.max_buffered_bytes:
            break
        out.append(p)
        total -= buf.nbytes
    return out


def slices(
    valid: pa.Table,
    valid_index: np.ndarray,
    partitions: np.ndarray,
    offsets: np.ndarray,
    sizes: np.ndarray,
    ingest_ms: int,
) -> list[Slice]:
    """Split one decoded batch by partition and add the Kafka columns to the valid rows.

    `partitions`, `offsets` and `sizes` are per consumed message (in consume order, so offsets
    ascend within each partition); `valid_index` says which of them became rows of `valid`.
    """
    n = len(partitions)
    is_valid = np.zeros(n, dtype=bool)
    is_valid[valid_index] = True
    valid_partitions = partitions[valid_index]
    ingest = pa.scalar(ingest_ms, pa.timestamp("ms", tz="UTC"))
    out: list[Slice] = []
    for p in np.unique(partitions):
        mine = partitions == p
        mine_offsets = offsets[mine]
        rows_at = np.flatnonzero(valid_partitions == p)
        table = valid.take(pa.array(rows_at)) if len(rows_at) != valid.num_rows else valid
        k = table.num_rows
        rows = pa.Table.from_arrays(
            [
                *table.columns,
                pa.array(np.full(k, p, dtype=np.int32)),
                pa.array(offsets[valid_index[rows_at]]),
                pa.array(np.full(k, ingest_ms, dtype=np.int64)).cast(ingest.type),
            ],
            schema=LANDED_SCHEMA,
        )
        out.append(
            Slice(
                partition=int(p),
                first_offset=int(mine_offsets[0]),
                last_offset=int(mine_offsets[-1]),
                messages=int(mine.sum()),
                nbytes=int(sizes[mine].sum()),
                rows=rows,
                dead_lettered=offsets[mine & ~is_valid],
            )
        )
    return out
