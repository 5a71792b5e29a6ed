"""The lake: one small module for every path and file contract, so the root can later move to an
object store without touching the lander or the pipeline.

Landing files are the source of truth for what was consumed: their names carry the Kafka partition
and the first and last offset they hold (zero-padded so names sort in offset order), and a file
only exists under its final name once it is complete and fsynced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

LANDING_TOPIC_DIR = "landing/sensor-readings"
TMP_SUFFIX = ".tmp"
# Key in each landing file's Parquet key-value metadata: the event-time hours the file touches,
# as comma-separated "YYYY-MM-DD-HH:00" keys (Dagster's hourly partition key format). The sensor
# reads only this footer, never the data.
EVENT_HOURS_KEY = b"ot.event_hours"

_LANDED = re.compile(r"^p(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")

# Columns of every landed row: the event fields, then where it came from and when it was landed.
LANDED_SCHEMA = pa.schema(
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
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("ingest_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True, order=True)
class LandedFile:
    partition: int
    first_offset: int
    last_offset: int
    path: Path

    @property
    def count(self) -> int:
        return self.last_offset - self.first_offset + 1


class Lake:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- landing -----------------------------------------------------------------------------
    @property
    def landing_dir(self) -> Path:
        return self.root / LANDING_TOPIC_DIR

    def partition_dir(self, partition: int) -> Path:
        return self.landing_dir / f"partition={partition}"

    def landed_path(self, partition: int, first_offset: int, last_offset: int) -> Path:
        name = f"p{partition}-{first_offset:012d}-{last_offset:012d}.parquet"
        return self.partition_dir(partition) / name

    def landed_files(self, partition: int | None = None) -> list[LandedFile]:
        """Complete landing files (temp files excluded), sorted by partition and offset."""
        dirs = [self.partition_dir(partition)] if partition is not None else self._partition_dirs()
        found: list[LandedFile] = []
        for d in dirs:
            if not d.is_dir():
                continue
            for entry in os.scandir(d):
                m = _LANDED.match(entry.name)
                if m:
                    found.append(
                        LandedFile(
                            int(m["partition"]), int(m["first"]), int(m["last"]), Path(entry.path)
                        )
                    )
        return sorted(found)

    def next_offset(self, partition: int) -> int | None:
        """One past the highest landed offset of a partition; None when nothing has landed."""
        files = self.landed_files(partition)
        return max(f.last_offset for f in files) + 1 if files else None

    def temp_files(self) -> Iterator[Path]:
        for d in self._partition_dirs():
            yield from d.glob(f"*{TMP_SUFFIX}")

    def _partition_dirs(self) -> list[Path]:
        if not self.landing_dir.is_dir():
            return []
        return sorted(p for p in self.landing_dir.iterdir() if p.name.startswith("partition="))

    # -- assets --------------------------------------------------------------------------------
    def asset_dir(self, asset: str) -> Path:
        return self.root / asset

    def hour_path(self, asset: str, hour_key: str) -> Path:
        """One file per hourly partition, e.g. readings/2026-11-22-13:00.parquet (':' -> '')."""
        return self.asset_dir(asset) / f"{hour_key.replace(':', '')}.parquet"

    def archive_path(self, day: str) -> Path:
        return self.root / "archive" / f"readings-{day}.parquet"


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through `write(tmp_path)`, fsync, then rename: readers see a whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    write(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
