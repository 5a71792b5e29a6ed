"""`ot land`: land `sensor-readings` into micro-batch Parquet files, exactly once.

Offsets live in the file names (`p{partition}-{first}-{last}.parquet`): the lake, not the consumer
group, is the source of truth. On every assignment a partition resumes one past its highest landed
offset, a file becomes visible only once complete (temp name, fsync, rename), and Kafka commits
follow the rename only to report lag. Invalid messages go to the dead-letter topic unchanged, and
their delivery is confirmed before the file whose offset range covers them is renamed, so every
offset of a partition ends in exactly one landed row or one recorded dead letter.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streaming.consumers.landing import FlushPolicy, PartitionBuffer, over_budget, slices
from streaming.kafka.lifecycle import ConsumerFailed, JsonLog, consumer_parser, serve
from streaming.kafka.probe import require_kafka
from streaming.kafka.runtime import Batch, ConsumerRuntime, Membership
from streaming.lake import Lake, write_atomically
from streaming.lake.footer import footer
from streaming.observability import metrics
from streaming.settings import ServiceUnavailable, Settings


class LakeUnwritable(ConsumerFailed):
    """A landing file could not be written (disk full, read-only): the process exits with one
    line (a supervisor restarts it); the temporary file is removed on the next start."""


GROUP = "lake-lander"
STAGE = "lander"
MEMBERSHIP = Membership(GROUP, poll_timeout=0.5)  # `ot land` defaults
# Tables handed to the one writer thread and not yet written: enough to keep it busy while the
# loop consumes, few enough that a slow disk holds back consuming instead of growing memory.
MAX_PENDING_WRITES = 2


@dataclass
class LanderStats:
    landed: int = 0
    files: int = 0
    fenced: int = 0  # buffers dropped because another lander landed that range first
    flush_seconds: list[float] = field(default_factory=list)


@dataclass
class _Pending:
    future: Future[int | None]
    partition: int
    buffer: PartitionBuffer
    rows: int
    dead_lettered: int
    reason: str
    started: float


class Lander:
    """One lander process, a sink of the consumer runtime: any number of them share the
    partitions of one group."""

    command = "land"

    def __init__(
        self,
        settings: Settings,
        membership: Membership | None = None,
        *,
        policy: FlushPolicy | None = None,
        log: JsonLog | None = None,
    ) -> None:
        self.lake = Lake(settings.lake_dir)
        self.policy = policy or FlushPolicy()
        self.log = log or JsonLog("lander")
        self.stats = LanderStats()
        self.buffers: dict[int, PartitionBuffer] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lander-writer")
        self._pending: list[_Pending] = []
        self.runtime = ConsumerRuntime(
            settings, self, membership or MEMBERSHIP, self.log, dead_letter_stage=STAGE
        )
        self.run = self.runtime.run  # consume within bounds; returns the JSON summary

    # -- rebalance: the lake, not the group, says where each partition resumes ----------------
    def resume(self, partitions: list[int]) -> dict[int, int | None]:
        resume: dict[int, int | None] = {}
        for p in partitions:
            self._remove_temp_files(p)
            resume[p] = self.lake.next_offset(p)
        return resume

    def revoke(self, partitions: list[int]) -> None:
        # Flush what we hold (it continues the lake exactly), then let the partitions go.
        for p in partitions:
            self._land(p, "revoke")
        self.settle(wait=True)
        for p in partitions:
            self.buffers.pop(p, None)

    def lose(self, partitions: list[int]) -> None:
        # Someone else may own them already: discard, the lake tells the next owner where to go
        # (writes already handed over finish behind the fence).
        self.settle(wait=True)
        for p in partitions:
            dropped = self.buffers.pop(p, None)
            if dropped:
                self.log("discarded", partition=p, messages=dropped.messages)

    def _remove_temp_files(self, partition: int) -> None:
        """Leftovers of a crash: only the partition's owner writes its temp files."""
        for tmp in self.lake.partition_dir(partition).glob("*.tmp"):
            tmp.unlink(missing_ok=True)
            self.log("removed_temp_file", path=str(tmp))

    # -- consuming ---------------------------------------------------------------------------
    def write(self, batch: Batch) -> None:
        """Buffer a decoded batch per partition (its dead letters are on their way to the DLQ)."""
        sizes = np.fromiter(
            (len(v) if v else 0 for v in batch.values), dtype=np.int64, count=len(batch.values)
        )
        decoded = batch.decoded
        positions = self.runtime.positions
        now = time.monotonic()
        for piece in slices(
            decoded.valid,
            decoded.valid_index,
            batch.partitions,
            batch.offsets,
            sizes,
            batch.ingest_ms,
        ):
            buf = self.buffers.get(piece.partition)
            if buf is None:
                expected = positions.get(piece.partition, -1)
                first = piece.first_offset if expected < 0 else expected
                if expected >= 0 and piece.first_offset != expected:
                    # Offsets without a record (transaction markers, retention): the file's range
                    # still starts at the resume point, so file names stay a gapless cover.
                    self.log(
                        "offset_gap",
                        partition=piece.partition,
                        expected=expected,
                        got=piece.first_offset,
                    )
                buf = self.buffers[piece.partition] = PartitionBuffer(piece.partition, first, now)
            buf.add(piece)

    def tick(self, now: float) -> None:
        self.flush_due(now)
        self.settle(wait=False)

    # -- landing -----------------------------------------------------------------------------
    def flush_due(self, now: float) -> None:
        for p, buf in list(self.buffers.items()):
            reason = buf.due(self.policy, now)
            if reason:
                self._land(p, reason)
        for p in over_budget(self.buffers, self.policy):
            self._land(p, "memory")

    def flush_all(self, reason: str) -> None:
        for p in list(self.buffers):
            self._land(p, reason)

    def _land(self, partition: int, reason: str) -> None:
        """Hand one partition's buffer to the writer thread (Parquet encoding releases the GIL,
        so consuming goes on meanwhile). Files of a partition land in order: one writer."""
        buf = self.buffers.pop(partition, None)
        if buf is None or not buf.messages:
            return
        started = time.perf_counter()
        dead = buf.dead_lettered_offsets()
        if len(dead):
            self.runtime.confirm_dead_letters()  # before the file that records them lands
        table = buf.table()
        table = table.replace_schema_metadata(
            footer(table, buf.first_offset, buf.last_offset, dead)
        )
        self.runtime.advance(partition, buf.last_offset + 1)
        future = self._pool.submit(self._write, partition, buf.first_offset, buf.last_offset, table)
        self._pending.append(
            _Pending(future, partition, buf, table.num_rows, len(dead), reason, started)
        )
        while len(self._pending) > MAX_PENDING_WRITES:
            self._settle(self._pending[0])

    def _write(self, partition: int, first: int, last: int, table: pa.Table) -> int | None:
        """Writer thread: land the file unless fenced; returns the lake's next offset if fenced."""
        path = self.lake.landed_path(partition, first, last)
        with self._partition_lock(partition):
            # Fence: the file must continue the lake exactly, else another lander (a zombie
            # of an old rebalance) got there first and this range must not land twice.
            nxt = self.lake.next_offset(partition)
            if nxt is not None and nxt != first:
                return nxt
            write_atomically(path, lambda tmp: _write_parquet(table, tmp))
        return None

    def settle(self, wait: bool) -> None:
        """Account for finished writes: stats, commit, log; on a fence, seek to the lake."""
        while self._pending and (wait or self._pending[0].future.done()):
            self._settle(self._pending[0])

    def _settle(self, done: _Pending) -> None:
        self._pending.remove(done)
        try:
            fenced_at = done.future.result()
        except OSError as exc:  # disk full, read-only, gone: nothing was committed or renamed
            raise LakeUnwritable(
                f"lake: cannot write {self.lake.root} ({exc.strerror or exc}); nothing from "
                f"offset {done.buffer.first_offset} of partition {done.partition} on has landed, "
                "a restart resumes there once the lake is writable"
            ) from exc
        p, buf = done.partition, done.buffer
        if fenced_at is not None:
            self.stats.fenced += 1
            metrics.FENCED.inc()
            self.log("fenced", partition=p, first=buf.first_offset, lake_next=fenced_at)
            if p in self.runtime.positions:
                self.buffers.pop(p, None)
                self.runtime.seek(p, fenced_at)
            return
        self.stats.files += 1
        self.stats.landed += done.rows
        elapsed = time.perf_counter() - done.started
        self.stats.flush_seconds.append(elapsed)
        metrics.LANDED_FILES.inc()
        metrics.LANDED_ROWS.inc(done.rows)
        metrics.FLUSH_SECONDS.observe(elapsed)
        self.runtime.commit(p, buf.last_offset + 1)  # only reports lag: the lake holds the truth
        self.log(
            "landed",
            partition=p,
            first=buf.first_offset,
            last=buf.last_offset,
            rows=done.rows,
            dead_lettered=done.dead_lettered,
            reason=done.reason,
            seconds=round(elapsed, 4),
        )

    @contextmanager
    def _partition_lock(self, partition: int) -> Iterator[None]:
        d = self.lake.partition_dir(partition)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- stopping ----------------------------------------------------------------------------
    def progress(self, now: float, elapsed: float) -> dict[str, Any]:
        return {
            "landed": self.stats.landed,
            "dead_lettered": self.runtime.stats.dead_lettered,
            "files": self.stats.files,
            "rate": round(self.runtime.stats.consumed / elapsed),
        }

    def drain(self) -> None:
        self.flush_all("shutdown")
        self.settle(wait=True)

    def finish(self, rate: float, lag: int) -> tuple[dict[str, Any], dict[str, Any]]:
        flushes = sorted(self.stats.flush_seconds)
        counts = {
            "landed": self.stats.landed,
            "dead_lettered": self.runtime.stats.dead_lettered,
            "files": self.stats.files,
            "skipped": self.runtime.stats.skipped,
            "fenced": self.stats.fenced,
        }
        return counts, {"flush_p50_s": round(flushes[len(flushes) // 2], 4) if flushes else None}

    def close(self) -> None:
        self.settle(wait=True)
        self._pool.shutdown()


def _write_parquet(table: pa.Table, path: Any) -> None:
    pq.write_table(table, path, compression="zstd", compression_level=1)


def require_writable_lake(root: Path) -> None:
    """Refuse to start on a lake folder that cannot be created or written: the first flush would
    fail after consuming, and the files would never land."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".ot-write-check-"):
            pass
    except OSError as exc:
        raise ServiceUnavailable(
            f"lake: cannot write to {root} ({exc.strerror or exc}); set OT_LAKE_DIR to a "
            "writable folder"
        ) from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = consumer_parser("ot land", __doc__, GROUP, poll_timeout=MEMBERSHIP.poll_timeout)
    metrics.add_metrics_options(p, "land")
    p.add_argument("--flush-rows", type=int, default=FlushPolicy.max_rows)
    p.add_argument("--flush-bytes", type=int, default=FlushPolicy.max_bytes)
    p.add_argument("--flush-age", type=float, default=FlushPolicy.max_age_s, help="seconds")
    p.add_argument(
        "--buffer-mb",
        type=int,
        default=FlushPolicy.max_buffered_bytes // 2**20,
        help="MiB of messages buffered over all partitions before the largest buffers are "
        "written early (default %(default)s)",
    )
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.from_env()
    policy = FlushPolicy(args.flush_rows, args.flush_bytes, args.flush_age, args.buffer_mb * 2**20)
    require_writable_lake(settings.lake_dir)
    require_kafka(settings.kafka_bootstrap_servers)

    def build(log: JsonLog) -> Lander:
        return Lander(settings, Membership.from_args(args), policy=policy, log=log)

    return serve("lander", args, settings.topics.readings, build, lake=str(settings.lake_dir))
