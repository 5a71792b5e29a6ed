"""Facts about the landing files, from their names and footers alone: which hours they touch,
whether each Kafka partition's offsets are contiguous, which files retention may remove."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class OffsetGap:
    partition: int
    expected_first: int  # the offset the next file should have started at
    found_first: int


def offset_gaps(ranges: Iterable[tuple[int, int, int]]) -> list[OffsetGap]:
    """Gaps and overlaps between consecutive landing files of each partition.

    `ranges` are (partition, first_offset, last_offset) of the files. Offsets live in file names:
    file n+1 must start right after file n, from the first retained file on. A gap means records
    lost between Kafka and the lake; an overlap means records landed twice.
    """
    gaps: list[OffsetGap] = []
    last: dict[int, int] = {}
    for partition, first, last_offset in sorted(ranges):
        previous = last.get(partition)
        if previous is not None and first != previous + 1:
            gaps.append(OffsetGap(partition, previous + 1, first))
        last[partition] = last_offset
    return gaps


def contiguous_ranges(keys: Sequence[str], all_keys: Sequence[str]) -> list[tuple[str, str]]:
    """Group partition keys into runs that are contiguous in `all_keys` order, so a sensor can
    request one run per range instead of one run per hour."""
    position = {k: i for i, k in enumerate(all_keys)}
    ordered = sorted({k for k in keys if k in position}, key=position.__getitem__)
    ranges: list[tuple[str, str]] = []
    for key in ordered:
        if ranges and position[key] == position[ranges[-1][1]] + 1:
            ranges[-1] = (ranges[-1][0], key)
        else:
            ranges.append((key, key))
    return ranges


def removable_files(
    file_days: Mapping[str, set[str]],
    file_age_days: Mapping[str, float],
    archived_days: set[str],
    retention_days: float,
) -> list[str]:
    """Landing files retention may delete: older than the retention, and every day they hold
    events of has a checked archive (so the data lives on in `archive/`)."""
    return sorted(
        path
        for path, days in file_days.items()
        if file_age_days.get(path, 0.0) > retention_days and days and days <= archived_days
    )


@dataclass(frozen=True)
class FileAccount:
    """One landing file's offsets by name, and what it holds: rows, and dead letters recorded
    in its footer (None when the writer recorded none)."""

    partition: int
    first_offset: int
    last_offset: int
    rows: int
    dead_lettered: int | None

    @property
    def balanced(self) -> bool:
        """Every offset of the file's range is one landed row or one dead letter."""
        if self.dead_lettered is None:
            return self.rows <= self.last_offset - self.first_offset + 1
        return self.rows + self.dead_lettered == self.last_offset - self.first_offset + 1
