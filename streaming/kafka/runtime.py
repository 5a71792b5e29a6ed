"""The consumer runtime: one consume loop that drives a sink, exactly once.

The sink, not the consumer group, holds the offsets: on every assignment the runtime asks it where
each partition resumes and seeks there, drops what is still in the fetch queue below that point,
and tells it to flush a revoked partition (or to discard a lost one) before the partition goes.
In between it consumes in batches within the run's bounds, decodes and validates each batch in one
call, dead-letters the invalid messages when the sink wants that, reports progress and lag, and
on a stop signal lets the sink make everything durable before it closes.

A sink implements `Sink`; the lander (Parquet lake) and the state writer (Redis) are two.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streaming.events import DecodedBatch, decode_batch, dlq_headers, fit_dead_letter
from streaming.kafka.config import (
    DEAD_LETTER_MAX_BYTES,
    PREFETCH_MB,
    admin_config,
    consumer_config,
    lag,
)
from streaming.kafka.lifecycle import Bounds, ConsumerFailed, JsonLog, Progress, StopFlag
from streaming.kafka.producer import ConfirmedProducer
from streaming.kafka.rebalance import ClientLog, describe_group, group_changes
from streaming.observability import metrics
from streaming.observability.logs import log_context
from streaming.settings import Settings


class DeadLettersNotConfirmed(ConsumerFailed):
    """The DLQ did not confirm every dead letter: making the covering data durable would lose
    them. The process exits with one line (a supervisor restarts it); nothing is lost, the data
    that records them was not made durable."""


# How long a sink waits for the dead-letter topic while the cluster cannot take the letters yet
# (brokers down, fewer in-sync replicas than min.insync.replicas): below max.poll.interval.ms.
DEAD_LETTER_PATIENCE_S = 180.0


class SinkUnavailable(RuntimeError):
    """The sink's store cannot be reached now (Redis timed out or refused, ...). A sink raises it
    from `resume`, `write`, `tick` or `progress`; a batch whose `write` raised it counts as not
    taken. The runtime then stops consuming (partitions paused), retries behind a `Breaker`, and
    once `resume` answers again seeks every partition to what the sink says: a sink that raises
    it must hold nothing beyond what its `resume` will report (the state writer holds nothing)."""


@dataclass
class Breaker:
    """A circuit breaker with exponential backoff and jitter: open after a failure, one probe
    when the delay is over, closed after a success. The delay doubles per failure from `base_s`
    up to `cap_s`, and is drawn from its upper half, so retries never spin and processes that
    failed together do not retry together."""

    base_s: float = 0.25
    cap_s: float = 10.0
    failures: int = 0
    opened_at: float | None = None
    retry_at: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def trip(self, now: float) -> float:
        """A failure at `now`: open (or stay open); returns the delay before the next probe."""
        self.failures += 1
        if self.opened_at is None:
            self.opened_at = now
        ceiling = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        self.retry_at = now + delay
        return delay

    def reset(self, now: float) -> float:
        """A success: closed again; returns how long it was open."""
        down = now - self.opened_at if self.opened_at is not None else 0.0
        self.failures, self.opened_at, self.retry_at = 0, None, 0.0
        return down


# A fenced static member reports `_FATAL` (wrapping FENCED_INSTANCE_ID) while `err.fatal()` says
# False: the client is dead all the same (no callbacks, no messages), so it is known by its code.
FATAL_CODES = frozenset({KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID})
STATS_INTERVAL_MS = 5000  # librdkafka statistics: the partitions' lag for the metrics
REJOIN_BUDGET = 3  # fresh clients within REJOIN_WINDOW_S; one more failure exits the process
REJOIN_WINDOW_S = 300.0
# A fence that follows broker trouble (a transport error, all brokers down) within this many
# seconds is the group coordinator failing over, not another process with the same instance id:
# it does not count against REJOIN_BUDGET (the broker-loss drill at 20,000 readings/s fenced a
# static lander once per fault, four times in 300 s). REJOIN_HARD_BUDGET still bounds them.
FAILOVER_EXCUSE_S = 60.0
REJOIN_HARD_BUDGET = 20


@dataclass
class Rejoins:
    """The fresh clients made after fatal errors, and whether one more is still reasonable."""

    times: list[float] = field(default_factory=list)  # monotonic, every fresh client
    unexplained: list[float] = field(default_factory=list)  # those with no broker trouble before

    def over_budget(self, now: float, trouble_at: float | None) -> tuple[bool, bool]:
        """(give up, explained): explained when broker trouble came within FAILOVER_EXCUSE_S
        before; give up when the unexplained ones, or all of them, spent their budget in
        REJOIN_WINDOW_S."""
        self.times = [t for t in self.times if now - t < REJOIN_WINDOW_S]
        self.unexplained = [t for t in self.unexplained if now - t < REJOIN_WINDOW_S]
        explained = trouble_at is not None and now - trouble_at < FAILOVER_EXCUSE_S
        give_up = len(self.times) >= REJOIN_HARD_BUDGET or (
            not explained and len(self.unexplained) >= REJOIN_BUDGET
        )
        return give_up, explained

    def record(self, now: float, explained: bool) -> int:
        """A fresh client is being made; returns its attempt number within the window."""
        self.times.append(now)
        if not explained:
            self.unexplained.append(now)
        return len(self.times)


def is_fatal(err: KafkaError) -> bool:
    """The client is unusable: a new one must be made (fenced static member, fatal error)."""
    return bool(err.fatal()) or err.code() in FATAL_CODES


@dataclass
class Batch:
    """One consumed batch, decoded: only the messages the sink does not hold yet.

    `messages`, `values`, `partitions` and `offsets` are per kept message, in consume order (so
    offsets ascend within each partition); `decoded.valid_index` says which became valid rows.
    """

    messages: list[Message]
    values: list[bytes | None]
    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    decoded: DecodedBatch
    ingest_ms: int  # wall clock when the batch was decoded
    started: float  # perf_counter when the batch arrived


@dataclass(frozen=True)
class Membership:
    """How a process joins its group and consumes: the options every consumer has."""

    group: str
    instance_id: str | None = None  # static member id: a restart rejoins at once
    batch_size: int = 20_000  # messages per consume call
    poll_timeout: float = 0.5  # seconds per consume call
    session_timeout_ms: int = 10_000
    prefetch_mb: int = PREFETCH_MB  # read-ahead bound of the client (memory while catching up)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Membership:
        """From the options of `lifecycle.consumer_parser`."""
        return cls(
            group=args.group,
            instance_id=args.instance_id,
            batch_size=args.batch_size,
            poll_timeout=args.poll_timeout,
            session_timeout_ms=args.session_timeout_ms,
            prefetch_mb=args.prefetch_mb,
        )


@dataclass
class RuntimeStats:
    consumed: int = 0
    dead_lettered: int = 0
    skipped: int = 0  # messages the sink already held, still in the fetch queue after a seek
    first_batch_at: float | None = None  # for rates that leave the group join out
    finished_at: float | None = None


class Sink(Protocol):
    """Where a consumed stream goes. The runtime calls these from its one thread."""

    command: str  # the summary's "command" (`ot land` -> "land")

    def resume(self, partitions: list[int]) -> dict[int, int | None]:
        """Assigned partitions: the next offset the sink wants per partition (None: it holds
        nothing of it, start from the beginning)."""
        ...

    def revoke(self, partitions: list[int]) -> None:
        """The partitions go to another member: make what is held of them durable now."""
        ...

    def lose(self, partitions: list[int]) -> None:
        """The partitions may already be someone else's: discard what is held of them."""
        ...

    def write(self, batch: Batch) -> None:
        """Take one decoded batch."""
        ...

    def tick(self, now: float) -> None:
        """After every consume call (`now`: monotonic): time-driven work, e.g. due flushes."""
        ...

    def progress(self, now: float, elapsed: float) -> dict[str, Any]:
        """The figures of a progress line after `consumed` (`elapsed`: seconds of the run)."""
        ...

    def drain(self) -> None:
        """Stopping: make everything held durable."""
        ...

    def finish(self, rate: float, lag: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run is over (`rate`: messages/s over it): the sink's counts and timings for the
        JSON summary, which lists them around the rate and the lag."""
        ...

    def close(self) -> None:
        """Release what the sink holds (threads, connections)."""
        ...


class ConsumerRuntime:
    """One consumer group member that subscribes `settings.topics.readings` for `sink`.

    With `dead_letter_stage` the runtime sends every invalid message to the dead-letter topic
    (unchanged, with the contract's `dlq_headers`; cut to fit by `fit_dead_letter` if too big to
    forward whole) and the sink must `confirm_dead_letters()`
    before it makes data covering their offsets durable.
    """

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        membership: Membership,
        log: JsonLog,
        *,
        dead_letter_stage: str | None = None,
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.readings
        self.sink = sink
        self.batch_size = membership.batch_size
        self.poll_timeout = membership.poll_timeout
        self.dead_letter_stage = dead_letter_stage
        self.log = log
        self.stats = RuntimeStats()
        # Next offset the sink wants per assigned partition (-1: it holds nothing, take any).
        self.positions: dict[int, int] = {}
        self.backlog = False  # the last consume call filled its batch: catching up
        # Monotonic time of the last sign that this consumer may not be current: an assignment,
        # a Kafka error (broker down, transport), a fresh client, a full batch. A sink that
        # judges silence (the state writer's OFFLINE sweep) waits until this is long enough ago.
        self.disturbed_at = time.monotonic()
        self.membership = membership
        self.failed: KafkaError | None = None  # a fatal error: the client must be replaced
        self.foreign: str | None = None  # assigned another topic's partitions: exit, say why
        self.rejoins = Rejoins()  # the fresh clients made after fatal errors
        self.kafka_trouble_at: float | None = None  # monotonic, the last non-fatal Kafka error
        self.breaker = Breaker()  # open while the sink's store cannot be reached
        # Rebalances in the logs: this client's name, librdkafka's reasons, the group's view.
        self.client_id = f"ot-{sink.command}-{os.getpid()}@{socket.gethostname()}"
        self.client_log = ClientLog(log)
        self.admin = AdminClient(admin_config(settings.kafka_bootstrap_servers))
        self.view: dict[str, list[int]] = {}  # member -> partitions, as last described
        self.previously: list[int] = []  # the partitions held before the last release
        self.describe_due: tuple[float, int] | None = None  # when, tries left
        self.me = membership.instance_id or self.client_id  # the member id once joined
        self.leaving = False
        self.producer = ConfirmedProducer(settings)
        # Metrics per batch, never per message; lag from librdkafka's statistics (no requests).
        group = membership.group
        self.m_consumed = metrics.CONSUMED.labels(group)
        self.m_batch = metrics.BATCH_SECONDS.labels(group)
        self.m_last = metrics.LAST_BATCH.labels(group)
        self.m_assigned = metrics.ASSIGNED.labels(group)
        self.lag_partitions: set[int] = set()
        self.batches = 0
        self.consumer = self._join()

    def _join(self) -> Consumer:
        """A fresh client in the group, subscribed with the rebalance callbacks."""
        m = self.membership
        config = consumer_config(
            self.settings,
            m.group,
            instance_id=m.instance_id,
            session_timeout_ms=m.session_timeout_ms,
            prefetch_mb=m.prefetch_mb,
        )
        consumer = Consumer(
            {
                **config,
                "client.id": self.client_id,
                "error_cb": self._client_error,
                "logger": self.client_log.logger(self.client_id),
                **self._statistics_config(),
            }
        )
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        return consumer

    # -- rebalance callbacks: the sink, not the group, says where each partition resumes ------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        foreign = sorted({tp.topic for tp in partitions} - {self.topic})
        if foreign:
            # A static member that rejoins a group used for another topic before its session
            # expired gets the group's old assignment back (the broker skips the rebalance), and
            # would read nothing for good. Exit instead: a restart after the session timeout
            # gets a fresh assignment.
            self.foreign = (
                f"group {self.membership.group} assigned partitions of {', '.join(foreign)} "
                f"while this consumer reads {self.topic} (a static member rejoining a group "
                "that was used for another topic); give each topic a group of its own"
            )
            self.log.error("foreign_assignment", topics=foreign, why=self.foreign)
            return
        try:
            resume: dict[int, int | None] | None = self.sink.resume(
                [tp.partition for tp in partitions]
            )
        except SinkUnavailable as exc:
            # The sink cannot say now: take the partitions paused (from the group's committed
            # offset, never ahead of the sink) and ask it again once it is back.
            resume = None
            self._unavailable(exc, time.monotonic())
        for tp in partitions:
            if resume is None:
                tp.offset, self.positions[tp.partition] = OFFSET_STORED, -1
                continue
            nxt = resume[tp.partition]
            tp.offset = OFFSET_BEGINNING if nxt is None else nxt
            self.positions[tp.partition] = -1 if nxt is None else nxt
        consumer.assign(partitions)
        self.disturbed_at = time.monotonic()
        if self.breaker.open:
            consumer.pause(partitions)
        else:
            # A breaker trip paused the partitions; if they were lost while it was open and the
            # sink came back before they were assigned again, nothing resumed them: the
            # network-partition drill's state writer fetched nothing for minutes (twice).
            consumer.resume(partitions)
        mine = sorted(tp.partition for tp in partitions)
        self.m_assigned.set(len(self.positions))
        self.log(
            "assigned",
            partitions={tp.partition: tp.offset for tp in partitions},
            topic=partitions[0].topic if partitions else self.topic,
            member=self._member(consumer),
            gained=sorted(set(mine) - set(self.previously)),
            gave_up=sorted(set(self.previously) - set(mine)),
        )
        self.describe_due = (time.monotonic() + 0.2, 20)  # then: who else, and what moved

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        released = [tp.partition for tp in partitions]
        self.sink.revoke(released)  # durable before anyone else can get them (eager rebalance)
        # Eager protocol: every member gives everything back whenever the group changes.
        why = "leaving the group" if self.leaving else "group rebalance (a member joined or left)"
        self._release(consumer, released, "revoked", why)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        released = [tp.partition for tp in partitions]
        self.sink.lose(released)  # the sink's record tells the next owner where to go on
        why = self.client_log.reason() or (str(self.failed) if self.failed else None)
        self._release(consumer, released, "lost", why or "session lost (timed out or fenced)")

    def _release(self, consumer: Consumer, released: list[int], event: str, why: str) -> None:
        for p in released:
            self.positions.pop(p, None)
        self.m_assigned.set(len(self.positions))
        self.previously = sorted(released)
        consumer.unassign()
        self.log(event, partitions=released, reason=why, member=self.me)

    def _member(self, consumer: Consumer) -> str:
        """This member as the group knows it (`rebalance` events use the same names)."""
        if self.membership.instance_id:
            return self.membership.instance_id
        with contextlib.suppress(Exception):  # no member id while not joined
            self.me = str(consumer.memberid() or self.me)
        return self.me

    def _describe(self, now: float) -> None:
        """After an assignment, once the group is stable: log every member's partitions and
        what changed since the last view (who joined, who left, which partitions moved)."""
        if self.describe_due is None or now < self.describe_due[0]:
            return
        _, tries = self.describe_due
        view = describe_group(self.admin, self.membership.group, self.topic, timeout=2.0)
        if view is None:
            self.describe_due = (now + 0.5, tries - 1) if tries > 1 else None
            return
        self.describe_due = None
        changes = group_changes(self.view, view)
        self.view = view
        self.log("rebalance", member=self._member(self.consumer), members=view, **changes)

    # -- what a sink may ask of the runtime -----------------------------------------------------
    def advance(self, partition: int, next_offset: int) -> None:
        """The sink holds everything before `next_offset` (ignored once the partition is gone)."""
        if partition in self.positions:
            self.positions[partition] = next_offset

    def seek(self, partition: int, next_offset: int) -> None:
        """Go back (or on) to `next_offset`: the sink's own record says so."""
        self.positions[partition] = next_offset
        self.consumer.seek(TopicPartition(self.topic, partition, next_offset))

    def commit(self, partition: int, next_offset: int) -> None:
        """Report progress to the group (only for lag: the sink holds the truth)."""
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, partition, next_offset)], asynchronous=True
            )
        except Exception as exc:
            self.log("commit_failed", partition=partition, error=str(exc))

    def confirm_dead_letters(self) -> None:
        """Every dead letter sent so far is in the log, or DeadLettersNotConfirmed. While they
        are still in flight and none failed for good (the cluster is recovering), wait up to
        DEAD_LETTER_PATIENCE_S, saying so, instead of giving up after the first 30 s."""
        started = time.monotonic()
        unconfirmed = self.producer.flush(30.0)
        while (
            unconfirmed
            and not self.producer.last_failures
            and time.monotonic() - started < DEAD_LETTER_PATIENCE_S
        ):
            self.log(
                "dead_letters_waiting",
                unconfirmed=unconfirmed,
                waited_s=round(time.monotonic() - started, 1),
            )
            unconfirmed = self.producer.flush(10.0)
        if unconfirmed:
            raise DeadLettersNotConfirmed(
                f"{unconfirmed} dead letters unconfirmed, "
                f"failures: {self.producer.last_failures[:3]}"
            )

    def lag(self) -> int:
        return lag(self.consumer, dict(self.positions), self.topic)

    def _statistics_config(self) -> dict[str, Any]:
        if not metrics.ENABLED:
            return {}
        return {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self._statistics}

    def _statistics(self, raw: str) -> None:
        """librdkafka's statistics (every STATS_INTERVAL_MS, from the consume call): the lag of
        each assigned partition against its high watermark, for `ot_consumer_lag_messages`."""
        try:
            parts = json.loads(raw)["topics"][self.topic]["partitions"]
        except (ValueError, KeyError, TypeError):
            return
        group = self.membership.group
        seen = set()
        for p, nxt in list(self.positions.items()):
            info = parts.get(str(p))
            if not info or info.get("hi_offset", -1) < 0:
                continue
            behind = info["hi_offset"] - nxt if nxt >= 0 else info.get("consumer_lag", -1)
            if behind >= 0:
                metrics.LAG.labels(group, str(p)).set(behind)
                seen.add(p)
        for p in self.lag_partitions - seen - set(self.positions):
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(group, str(p))
        self.lag_partitions = (self.lag_partitions | seen) & set(self.positions)

    # -- one batch --------------------------------------------------------------------------
    def decode(self, messages: list[Message]) -> Batch | None:
        """Decode a consumed batch, leaving out what the sink already holds; dead-letter the
        invalid messages if the sink wants that. None if nothing is left."""
        started = time.perf_counter()
        good = [m for m in messages if m.error() is None]
        if len(good) != len(messages):
            for m in messages:
                err = m.error()
                if err is not None:
                    self._kafka_error(err)
            if self.failed is not None:
                return None  # the partitions may be someone else's already: leave them be
        n = len(good)
        if not n:
            return None
        parts = np.fromiter((m.partition() for m in good), dtype=np.int32, count=n)
        offsets = np.fromiter((m.offset() for m in good), dtype=np.int64, count=n)
        values = [m.value() for m in good]
        self.stats.consumed += n
        self.m_consumed.inc(n)
        # Drop what the sink already holds (prefetched before a seek) or is no longer ours.
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
                return None
        ingest_ms = int(time.time() * 1000)
        decoded = decode_batch(
            values,
            ingest_ms,
            max_future_ms=self.settings.max_future_ms,
            max_age_ms=self.settings.max_age_ms,
        )
        if self.dead_letter_stage and decoded.rejected:
            self._dead_letter(good, decoded, parts, offsets, self.dead_letter_stage)
            for reason, count in decoded.reason_counts().items():
                metrics.DEAD_LETTERS.labels(self.dead_letter_stage, reason).inc(count)
        return Batch(good, values, parts, offsets, decoded, ingest_ms, started)

    def _dead_letter(
        self,
        messages: list[Message],
        decoded: DecodedBatch,
        partitions: np.ndarray,
        offsets: np.ndarray,
        stage: str,
    ) -> None:
        """The invalid messages go to the DLQ unchanged, their reason and source in headers."""
        for r in decoded.rejected:
            m = messages[r.index]
            headers = dlq_headers(
                r.reason,
                stage,
                self.topic,
                int(partitions[r.index]),
                int(offsets[r.index]),
                r.detail,
            )
            value, key, headers = fit_dead_letter(
                m.value(), m.key(), headers, DEAD_LETTER_MAX_BYTES
            )
            self.producer.send(self.settings.topics.dlq, value, key, headers)
        self.stats.dead_lettered += len(decoded.rejected)
        self.producer.poll()

    def undisturbed_for(self, now: float) -> float:
        """Seconds this consumer has been reading without error, assignment or backlog."""
        return now - self.disturbed_at

    def _kafka_error(self, err: KafkaError) -> None:
        self.disturbed_at = time.monotonic()
        if is_fatal(err):
            self.failed = self.failed or err
            self.log("kafka_fatal", code=err.name(), error=str(err))
            return
        self.kafka_trouble_at = self.disturbed_at
        self.log("kafka_error", code=err.name(), error=str(err))

    def _client_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (global errors, e.g. all brokers down): same handling."""
        self._kafka_error(err)

    def rejoin(self) -> None:
        """The client failed fatally (e.g. fenced when the group coordinator was lost): drop it,
        tell the sink its partitions are lost, and join again with a fresh client; whoever owns a
        partition next resumes where the sink's record says, so this is exact. A client that
        keeps failing raises ConsumerFailed instead: REJOIN_BUDGET fresh clients within
        REJOIN_WINDOW_S with no broker trouble before them (another live process with the same
        --instance-id, a broken configuration), or REJOIN_HARD_BUDGET in all."""
        err, self.failed = self.failed, None
        now = self.disturbed_at = time.monotonic()
        lost = sorted(self.positions)
        self.sink.lose(lost)
        self.positions.clear()
        try:
            self.consumer.close()
        except Exception as exc:  # a fatally failed client may refuse to close cleanly
            self.log("close_failed", error=str(exc))
        reason = f"{err.name()}: {err.str()}" if err is not None else "unknown"
        give_up, after_trouble = self.rejoins.over_budget(now, self.kafka_trouble_at)
        if give_up:
            why = (
                f"Kafka client failed fatally {len(self.rejoins.times) + 1} times within "
                f"{REJOIN_WINDOW_S:.0f} s (last: {reason})"
            )
            if self.membership.instance_id:
                why += f"; does another process use --instance-id {self.membership.instance_id}?"
            raise ConsumerFailed(why)
        time.sleep(0.5 * len(self.rejoins.times))  # a little more patience after each failure
        attempt = self.rejoins.record(now, after_trouble)
        metrics.REJOINS.labels(self.membership.group).inc()
        self.log(
            "rejoining",
            reason=reason,
            lost=lost,
            attempt=attempt,
            after_broker_trouble=after_trouble,
        )
        self.consumer = self._join()

    # -- running ----------------------------------------------------------------------------
    def run(
        self, bounds: Bounds, stop: StopFlag, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Consume until a stop signal or a bound, then drain the sink, close, and return the
        JSON summary."""
        started = time.monotonic()
        reason: str | None = None
        try:
            while True:
                now = time.monotonic()
                if not self.positions or self.breaker.open:
                    # Waiting for partitions (e.g. for a dead member's session to expire) or
                    # for the sink's store is not idle: idle time counts only while partitions
                    # are assigned and the sink takes batches.
                    bounds.hold_idle(now)
                reason = stop.signal or bounds.reached(self.stats.consumed, now)
                if reason:
                    break
                if self.breaker.open:
                    self._wait_for_sink(now)
                    bounds.hold_idle(time.monotonic())  # a probe may have waited for a reply
                    continue
                want = bounds.remaining(self.stats.consumed, self.batch_size)
                messages = self.consumer.consume(num_messages=want, timeout=self.poll_timeout)
                if self.foreign is not None:  # before any of its messages reach the sink
                    raise ConsumerFailed(self.foreign)
                now = time.monotonic()
                self.backlog = len(messages) >= want
                if self.backlog:
                    self.disturbed_at = now
                try:
                    if messages:
                        bounds.saw_messages(now)
                        if self.stats.first_batch_at is None:
                            self.stats.first_batch_at = now
                        self.batches += 1
                        with log_context(batch=self.batches):
                            batch = self.decode(messages)
                            if batch is not None:
                                self._write(batch)
                                self.m_batch.observe(time.perf_counter() - batch.started)
                        self.m_last.set(time.time())
                    if self.failed is not None:
                        self.rejoin()
                        continue
                    self.sink.tick(now)
                    self._describe(now)
                    if progress and progress.due(now):
                        figures = self.sink.progress(now, max(now - started, 1e-9))
                        progress.show(now, consumed=self.stats.consumed, **figures)
                except SinkUnavailable as exc:
                    self._unavailable(exc, now)
            self.sink.drain()
            self.stats.finished_at = time.monotonic()
        finally:
            if progress:
                progress.done()
        elapsed = max(time.monotonic() - started, 1e-9)
        behind = self.lag()
        rate = self.stats.consumed / elapsed
        counts, timings = self.sink.finish(rate, behind)
        self.close()
        return {
            "command": self.sink.command,
            "consumed": self.stats.consumed,
            **counts,
            "rate": round(rate, 1),
            "lag": behind,
            **timings,
            "elapsed_s": round(elapsed, 2),
            # From the first batch to the end: the rate without start-up and the group join.
            "consuming_s": (
                round(self.stats.finished_at - self.stats.first_batch_at, 3)
                if self.stats.first_batch_at is not None and self.stats.finished_at is not None
                else None
            ),
            "stopped_by": reason,
        }

    # -- when the sink's store cannot be reached ---------------------------------------------
    def _write(self, batch: Batch) -> None:
        try:
            self.sink.write(batch)
        except SinkUnavailable:
            self.stats.consumed -= len(batch.messages)  # not taken: consumed again later
            raise

    def _unavailable(self, exc: SinkUnavailable, now: float) -> None:
        """Stop consuming (pause every partition) and wait for the breaker's next probe."""
        first = not self.breaker.open
        delay = self.breaker.trip(now)
        metrics.SINK_UNAVAILABLE.labels(self.membership.group).inc()
        if first:
            self.consumer.pause(self.consumer.assignment())
        self.log(
            "sink_unavailable" if first else "sink_still_unavailable",
            error=str(exc),
            failures=self.breaker.failures,
            retry_in_s=round(delay, 2),
        )

    def _wait_for_sink(self, now: float) -> None:
        """While the breaker is open: probe the sink when due, else keep serving the group
        (heartbeats, rebalances; paused partitions deliver nothing). Waiting is not idle."""
        if now >= self.breaker.retry_at:
            self._probe(now)
            if not self.breaker.open:
                return
        wait = max(0.0, min(self.poll_timeout, self.breaker.retry_at - now))
        for m in self.consumer.consume(num_messages=self.batch_size, timeout=wait):
            err = m.error()
            if err is not None:
                self._kafka_error(err)
            # A message fetched before its partition was paused is dropped: once the sink is
            # back, every partition seeks to where the sink says.
        if self.failed is not None:
            self.rejoin()

    def _probe(self, now: float) -> None:
        """Ask the sink where every assigned partition resumes: if it answers, it is back; seek
        each partition there (its store may have moved back, e.g. Redis restarted from its
        append-only file) and consume again."""
        assigned = self.consumer.assignment()
        try:
            resume = self.sink.resume(sorted(tp.partition for tp in assigned))
        except SinkUnavailable as exc:
            self._unavailable(exc, now)
            return
        for tp in assigned:
            nxt = resume.get(tp.partition)
            self.positions[tp.partition] = -1 if nxt is None else nxt
            tp.offset = OFFSET_BEGINNING if nxt is None else nxt
        try:
            for tp in assigned:
                self.consumer.seek(tp)
            self.consumer.resume(assigned)
        except Exception as exc:  # not fetching yet: a fresh assignment takes the offsets too
            self.log("seek_failed", error=str(exc))
            self.consumer.assign(assigned)
        down = self.breaker.reset(now)
        self.log(
            "sink_recovered",
            down_s=round(down, 2),
            partitions={tp.partition: tp.offset for tp in assigned},
        )

    def close(self) -> None:
        self.sink.close()
        if self.dead_letter_stage:
            self.confirm_dead_letters()
        else:
            self.producer.flush(30.0)
        self._commit_positions()
        self.leaving = True
        self.log(
            "leaving",
            member=self.me,
            partitions=sorted(self.positions),
            # A static member's partitions wait for its session to time out (or for it).
            static=bool(self.membership.instance_id),
        )
        self.consumer.close()

    def _commit_positions(self) -> None:
        """Last report to the group before leaving, synchronously: the asynchronous commits of
        the last batches may still be in flight."""
        held = [TopicPartition(self.topic, p, o) for p, o in self.positions.items() if o >= 0]
        if not held:
            return
        try:
            self.consumer.commit(offsets=held, asynchronous=False)
        except Exception as exc:
            self.log("commit_failed", partitions=[tp.partition for tp in held], error=str(exc))
