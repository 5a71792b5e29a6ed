"""The lake's layout: every path and file name, so the root can later move to an object store
without touching the lander, the pipeline or the notebooks.

    landing/sensor-readings/partition=P/pP-FIRST-LAST.parquet   landing files (the lander)
    <asset>/2026-11-22-1300.parquet                              hourly asset partitions
    <asset>/2026-11-22.parquet                                   daily asset partitions
    archive/readings-2026-11-22.parquet                          daily archive (+ markers)
    ground_truth/faults.parquet, ground_truth/machines.parquet   the simulator's sim.faults

Landing files are the source of truth for what was consumed: their names carry the Kafka partition
and the first and last offset they hold (zero-padded so names sort in offset order), and a file
only exists under its final name once it is complete and fsynced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LANDING_TOPIC_DIR = "landing/sensor-readings"
TMP_SUFFIX = ".tmp"
ARCHIVE_DIR = "archive"
GROUND_TRUTH_DIR = "ground_truth"

_LANDED = re.compile(r"^p(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")


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

    def hour_paths(self, asset: str, hour_keys: Iterable[str]) -> list[Path]:
        """The hour files of `asset` that exist among `hour_keys`, in key order."""
        return [p for p in (self.hour_path(asset, k) for k in hour_keys) if p.exists()]

    def day_path(self, asset: str, day: str) -> Path:
        """One file per daily partition, e.g. detection_scorecard/2026-11-22.parquet."""
        return self.asset_dir(asset) / f"{day}.parquet"

    def asset_glob(self, asset: str) -> Path:
        """Every partition file of an asset, as a glob for DuckDB or Polars."""
        return self.asset_dir(asset) / "*.parquet"

    @property
    def landing_glob(self) -> Path:
        """Every landing file, as a glob for DuckDB or Polars."""
        return self.landing_dir / "*" / "*.parquet"

    # -- archive -------------------------------------------------------------------------------
    @property
    def archive_dir(self) -> Path:
        return self.root / ARCHIVE_DIR

    def archive_path(self, day: str) -> Path:
        return self.archive_dir / f"readings-{day}.parquet"

    @property
    def archive_glob(self) -> Path:
        return self.archive_dir / "*.parquet"

    @property
    def checked_dir(self) -> Path:
        return self.archive_dir / "_checked"

    def checked_marker(self, day: str) -> Path:
        """Exists only while the day's latest archive has passed its blocking checks."""
        return self.checked_dir / day

    def checked_days(self) -> set[str]:
        return {p.name for p in self.checked_dir.iterdir()} if self.checked_dir.is_dir() else set()

    def pruned_marker(self, day: str) -> Path:
        """Exists once retention removed landing files holding events of `day`: from then on the
        day's readings are rebuilt from the archive plus whatever landing files remain."""
        return self.archive_dir / "_pruned" / day

    # -- ground truth (the simulator's sim.faults topic) ---------------------------------------
    @property
    def ground_truth_faults(self) -> Path:
        return self.root / GROUND_TRUTH_DIR / "faults.parquet"

    @property
    def ground_truth_machines(self) -> Path:
        return self.root / GROUND_TRUTH_DIR / "machines.parquet"
