"""The exactly-once check: do the lake's landed rows plus its dead-lettered offsets cover every
offset of every partition exactly once? Used by the tests, the drills and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from streaming.lake import Lake
from streaming.lake.footer import read_footer


@dataclass
class PartitionCoverage:
    partition: int
    low: int
    high: int  # one past the last offset that must be covered
    landed: int = 0
    dead_lettered: int = 0
    missing: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    outside: list[int] = field(default_factory=list)  # offsets a file holds outside its name
    name_gaps: list[tuple[int, int]] = field(default_factory=list)  # (expected first, got first)
    missing_count: int = 0  # all of them (`missing` and `duplicated` list the first 20)
    duplicated_count: int = 0

    @property
    def exact(self) -> bool:
        return not (self.missing or self.duplicated or self.outside or self.name_gaps)


def lake_coverage(
    lake: Lake, watermarks: dict[int, tuple[int, int]]
) -> dict[int, PartitionCoverage]:
    """Per partition: offsets in [low, high) covered by landed rows + footer dead letters."""
    out: dict[int, PartitionCoverage] = {}
    for partition, (low, high) in watermarks.items():
        cov = PartitionCoverage(partition, low, high)
        counts = np.zeros(max(high - low, 0), dtype=np.int64)
        expected_first: int | None = None
        for f in lake.landed_files(partition):
            if expected_first is not None and f.first_offset != expected_first:
                cov.name_gaps.append((expected_first, f.first_offset))
            expected_first = f.last_offset + 1
            dead = np.asarray(read_footer(f.path).dead_lettered_offsets, dtype=np.int64)
            rows = (
                pq.ParquetFile(f.path)
                .read(columns=["kafka_offset"])
                .column("kafka_offset")
                .to_numpy()
            )
            both = np.concatenate([rows.astype(np.int64), dead])
            bad = both[(both < f.first_offset) | (both > f.last_offset)]
            cov.outside.extend(int(x) for x in bad[:20])
            cov.landed += len(rows)
            cov.dead_lettered += len(dead)
            inside = both[(both >= low) & (both < high)]
            np.add.at(counts, inside - low, 1)
        zero, many = np.flatnonzero(counts == 0), np.flatnonzero(counts > 1)
        cov.missing = [int(x) + low for x in zero[:20]]
        cov.duplicated = [int(x) + low for x in many[:20]]
        cov.missing_count = len(zero)
        cov.duplicated_count = int((counts[many] - 1).sum())
        out[partition] = cov
    return out
