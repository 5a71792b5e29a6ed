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
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from streaming.consumers.kafka_clients import consumer_config, lag, producer_config
from streaming.consumers.landing import FlushPolicy, PartitionBuffer, slices
from streaming.consumers.lifecycle import (
    Bounds,
    JsonLog,
    Progress,
    StopFlag,
    consumer_parser,
    run_bounded,
)
from streaming.events import decode_batch, dlq_headers
from streaming.lake import Lake, write_atomically
from streaming.lake.footer import footer
from streaming.settings import Settings

GROUP = "lake-lander"
STAGE = "lander"


class DeadLettersNotConfirmed(RuntimeError):
    """The DLQ did not confirm every dead letter: landing the covering file would lose them."""


@dataclass
class LanderStats:
    consumed: int = 0
    landed: int = 0
    dead_lettered: int = 0
    files: int = 0
    skipped: int = 0  # already-landed messages still in the fetch queue after a seek
    fenced: int = 0  # buffers dropped because another lander landed that range first
    flush_seconds: list[float] = field(default_factory=list)
    first_batch_at: float | None = None  # for rates that leave the group join out
    finished_at: float | None = None


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
    """One lander process: any number of them share the partitions of one group."""

    def __init__(
        self,
        settings: Settings,
        *,
        group: str = GROUP,
        instance_id: str | None = None,
        policy: FlushPolicy | None = None,
        batch_size: int = 20_000,
        poll_timeout: float = 0.5,
        session_timeout_ms: int = 10_000,
        log: JsonLog | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.readings
        self.lake = Lake(settings.lake_dir)
        self.policy = policy or FlushPolicy()
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.log = log or JsonLog("lander")
        self.stats = LanderStats()
        self.buffers: dict[int, PartitionBuffer] = {}
        # Next offset to land per assigned partition (-1: nothing landed yet, take what comes).
        self.positions: dict[int, int] = {}
        self._dlq_failures: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lander-writer")
        self._pending: list[_Pending] = []
        self.consumer = Consumer(
            consumer_config(
                settings, group, instance_id=instance_id, session_timeout_ms=session_timeout_ms
            )
        )
        self.dlq = Producer(producer_config(settings))
        self.consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    # -- rebalance callbacks -----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._remove_temp_files(tp.partition)
            nxt = self.lake.next_offset(tp.partition)
            tp.offset = OFFSET_BEGINNING if nxt is None else nxt
            self.positions[tp.partition] = -1 if nxt is None else nxt
        consumer.assign(partitions)
        self.log("assigned", partitions={tp.partition: tp.offset for tp in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Flush what we hold (it continues the lake exactly), then let the partitions go.
        for tp in partitions:
            self._land(tp.partition, "revoke")
        self.settle(wait=True)
        for tp in partitions:
            self.positions.pop(tp.partition, None)
            self.buffers.pop(tp.partition, None)
        consumer.unassign()
        self.log("revoked", partitions=[tp.partition for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Someone else may own them already: discard, the lake tells the next owner where to go
        # (writes already handed over finish behind the fence).
        self.settle(wait=True)
        for tp in partitions:
            self.positions.pop(tp.partition, None)
            dropped = self.buffers.pop(tp.partition, None)
            if dropped:
                self.log("discarded", partition=tp.partition, messages=dropped.messages)
        consumer.unassign()
        self.log("lost", partitions=[tp.partition for tp in partitions])

    def _remove_temp_files(self, partition: int) -> None:
        """Leftovers of a crash: only the partition's owner writes its temp files."""
        for tmp in self.lake.partition_dir(partition).glob("*.tmp"):
            tmp.unlink(missing_ok=True)
            self.log("removed_temp_file", path=str(tmp))

    # -- consuming ---------------------------------------------------------------------------
    def handle(self, messages: list[Message]) -> None:
        """Decode a consumed batch, dead-letter the invalid messages, buffer the rest."""
        good = [m for m in messages if m.error() is None]
        if len(good) != len(messages):
            for m in messages:
                err = m.error()
                if err is not None:
                    self._kafka_error(err)
        if not good:
            return
        n = len(good)
        parts = np.fromiter((m.partition() for m in good), dtype=np.int32, count=n)
        offsets = np.fromiter((m.offset() for m in good), dtype=np.int64, count=n)
        values = [m.value() for m in good]
        self.stats.consumed += n
        # Drop what is already landed (prefetched before a seek) or no longer ours.
        floor = np.full(int(parts.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
        for p, nxt in self.positions.items():
            if p < len(floor):
                floor[p] = nxt
        keep = offsets >= floor[parts]
        if not keep.all():
            self.stats.skipped += int((~keep).sum())
            idx = np.flatnonzero(keep)
            good = [good[i] for i in idx]
            values = [values[i] for i in idx]
            parts, offsets = parts[keep], offsets[keep]
            if not good:
                return
        sizes = np.fromiter((len(v) if v else 0 for v in values), dtype=np.int64, count=len(values))
        ingest_ms = int(time.time() * 1000)
        decoded = decode_batch(
            values,
            ingest_ms,
            max_future_ms=self.settings.max_future_ms,
            max_age_ms=self.settings.max_age_ms,
        )
        for r in decoded.rejected:
            m = good[r.index]
            self.dlq.produce(
                self.settings.topics.dlq,
                value=m.value(),
                key=m.key(),
                headers=cast(
                    "list[tuple[str, str | bytes | None]]",
                    dlq_headers(
                        r.reason,
                        STAGE,
                        self.topic,
                        int(parts[r.index]),
                        int(offsets[r.index]),
                        r.detail,
                    ),
                ),
                on_delivery=self._dlq_delivered,
            )
        if decoded.rejected:
            self.stats.dead_lettered += len(decoded.rejected)
            self.dlq.poll(0)
        now = time.monotonic()
        for piece in slices(decoded.valid, decoded.valid_index, parts, offsets, sizes, ingest_ms):
            buf = self.buffers.get(piece.partition)
            if buf is None:
                expected = self.positions.get(piece.partition, -1)
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

    def _dlq_delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._dlq_failures.append(str(err))

    def _kafka_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise RuntimeError(f"fatal Kafka error: {err}")
        self.log("kafka_error", error=str(err))

    # -- landing -----------------------------------------------------------------------------
    def flush_due(self, now: float) -> None:
        for p, buf in list(self.buffers.items()):
            reason = buf.due(self.policy, now)
            if reason:
                self._land(p, reason)

    def flush_all(self, reason: str) -> None:
        for p in list(self.buffers):
            self._land(p, reason)

    def _confirm_dead_letters(self) -> None:
        remaining = self.dlq.flush(30.0)
        if remaining or self._dlq_failures:
            raise DeadLettersNotConfirmed(
                f"{remaining} dead letters unconfirmed, failures: {self._dlq_failures[:3]}"
            )

    def _land(self, partition: int, reason: str) -> None:
        """Hand one partition's buffer to the writer thread (Parquet encoding releases the GIL,
        so consuming goes on meanwhile). Files of a partition land in order: one writer."""
        buf = self.buffers.pop(partition, None)
        if buf is None or not buf.messages:
            return
        started = time.perf_counter()
        dead = buf.dead_lettered_offsets()
        if len(dead):
            self._confirm_dead_letters()
        table = buf.table()
        table = table.replace_schema_metadata(
            footer(table, buf.first_offset, buf.last_offset, dead)
        )
        if partition in self.positions:
            self.positions[partition] = buf.last_offset + 1
        future = self._pool.submit(self._write, partition, buf.first_offset, buf.last_offset, table)
        self._pending.append(
            _Pending(future, partition, buf, table.num_rows, len(dead), reason, started)
        )
        while len(self._pending) > 4:
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
        fenced_at = done.future.result()  # a write error propagates: nothing was committed
        p, buf = done.partition, done.buffer
        if fenced_at is not None:
            self.stats.fenced += 1
            self.log("fenced", partition=p, first=buf.first_offset, lake_next=fenced_at)
            if p in self.positions:
                self.buffers.pop(p, None)
                self.positions[p] = fenced_at
                self.consumer.seek(TopicPartition(self.topic, p, fenced_at))
            return
        self.stats.files += 1
        self.stats.landed += done.rows
        elapsed = time.perf_counter() - done.started
        self.stats.flush_seconds.append(elapsed)
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, buf.last_offset + 1)], asynchronous=True
            )
        except Exception as exc:  # commits only report lag; the lake already holds the truth
            self.log("commit_failed", partition=p, error=str(exc))
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

    # -- running -----------------------------------------------------------------------------
    def run(
        self, bounds: Bounds, stop: StopFlag, progress: Progress | None = None
    ) -> dict[str, Any]:
        started = time.monotonic()
        reason: str | None = None
        try:
            while True:
                now = time.monotonic()
                reason = stop.signal or bounds.reached(self.stats.consumed, now)
                if reason:
                    break
                want = bounds.remaining(self.stats.consumed, self.batch_size)
                messages = self.consumer.consume(num_messages=want, timeout=self.poll_timeout)
                now = time.monotonic()
                if messages:
                    bounds.saw_messages(now)
                    if self.stats.first_batch_at is None:
                        self.stats.first_batch_at = now
                    self.handle(messages)
                self.flush_due(now)
                self.settle(wait=False)
                if progress and progress.due(now):
                    elapsed = max(now - started, 1e-9)
                    progress.show(
                        now,
                        consumed=self.stats.consumed,
                        landed=self.stats.landed,
                        dead_lettered=self.stats.dead_lettered,
                        files=self.stats.files,
                        rate=round(self.stats.consumed / elapsed),
                    )
            self.flush_all("shutdown")
            self.settle(wait=True)
            self.stats.finished_at = time.monotonic()
        finally:
            if progress:
                progress.done()
        elapsed = max(time.monotonic() - started, 1e-9)
        behind = lag(self.consumer, dict(self.positions), self.topic)
        self.close()
        flushes = sorted(self.stats.flush_seconds)
        return {
            "command": "land",
            "consumed": self.stats.consumed,
            "landed": self.stats.landed,
            "dead_lettered": self.stats.dead_lettered,
            "files": self.stats.files,
            "skipped": self.stats.skipped,
            "fenced": self.stats.fenced,
            "rate": round(self.stats.consumed / elapsed, 1),
            "lag": behind,
            "flush_p50_s": round(flushes[len(flushes) // 2], 4) if flushes else None,
            "elapsed_s": round(elapsed, 2),
            "stopped_by": reason,
        }

    def close(self) -> None:
        self.settle(wait=True)
        self._pool.shutdown()
        self._confirm_dead_letters()
        self.consumer.close()


def _write_parquet(table: pa.Table, path: Any) -> None:
    pq.write_table(table, path, compression="zstd", compression_level=1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = consumer_parser("ot land", __doc__, GROUP, poll_timeout=0.5)
    p.add_argument("--flush-rows", type=int, default=FlushPolicy.max_rows)
    p.add_argument("--flush-bytes", type=int, default=FlushPolicy.max_bytes)
    p.add_argument("--flush-age", type=float, default=FlushPolicy.max_age_s, help="seconds")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.from_env()
    log = JsonLog("lander")
    stop = StopFlag().install()
    lander = Lander(
        settings,
        group=args.group,
        instance_id=args.instance_id,
        policy=FlushPolicy(args.flush_rows, args.flush_bytes, args.flush_age),
        batch_size=args.batch_size,
        poll_timeout=args.poll_timeout,
        session_timeout_ms=args.session_timeout_ms,
        log=log,
    )
    log("started", topic=settings.topics.readings, group=args.group, lake=str(settings.lake_dir))
    return run_bounded(lander, args, stop, log)
