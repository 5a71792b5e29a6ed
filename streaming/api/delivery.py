"""Kafka adapter of the gateway: produce a request's messages and wait, without blocking the event
loop, until the broker acknowledged every one of them (idempotent producer, acks=all).

One thread serves librdkafka's delivery reports (`poll`); each report counts down the request it
belongs to, and the last one (or the first failure) wakes that request's coroutine. A message
not acknowledged within `message.timeout.ms` fails, so a request never waits longer than that.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers | None = None


class KafkaUnavailable(Exception):
    """Not every message was acknowledged; the request must not report anything accepted."""


class _Pending:
    """Delivery reports still expected for one request (counted by the poll thread only)."""

    __slots__ = ("done", "error", "future", "loop", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = count
        self.error: str | None = None
        self.done = False

    def report(self, err: KafkaError | None, _msg: Message) -> None:
        if self.done:
            return
        if err is not None:
            self.error = err.name()
        else:
            self.remaining -= 1
            if self.remaining:
                return
        self.done = True  # the last acknowledgement, or the first failure
        self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():  # cancelled: the client went away
            return
        if self.error is not None:
            self.future.set_exception(KafkaUnavailable(self.error))
        else:
            self.future.set_result(None)


class AckedProducer:
    """`await send(messages)` returns once Kafka acknowledged all of them, or raises
    `KafkaUnavailable` (a failed or timed-out delivery, or a full local queue)."""

    def __init__(self, config: dict[str, Any], timeout_s: float) -> None:
        # librdkafka fails a message after message.timeout.ms; the wait here is a safety net.
        self._config = {
            **config,
            "message.timeout.ms": int(timeout_s * 1000),
            "error_cb": self._on_error,
        }
        self.timeout_s = timeout_s
        self.fatal: str | None = None
        self.last_error: str | None = None
        self._producer = Producer(self._config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-acks", daemon=True)
        self._poller.start()

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.name()
        if err.fatal():  # e.g. the idempotent sequence broke: only a new producer recovers
            self.fatal = err.name()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        if self.fatal is not None:
            self._producer = Producer(self._config)  # the poll thread picks it up
            self.fatal = None
        pending = _Pending(asyncio.get_running_loop(), len(messages))
        produce = self._producer.produce
        try:
            for m in messages:
                produce(m.topic, m.value, m.key, headers=m.headers, on_delivery=pending.report)
        except (BufferError, KafkaException) as exc:
            # Those already queued may still land: at least once, and a resend keeps event_ids.
            reason = "QUEUE_FULL" if isinstance(exc, BufferError) else str(exc)[:80]
            raise KafkaUnavailable(reason) from None
        try:
            await asyncio.wait_for(pending.future, self.timeout_s + 5.0)
        except TimeoutError:
            raise KafkaUnavailable("NO_DELIVERY_REPORT") from None

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is queued (up to `timeout_s`), stop polling; returns how many are unsent."""
        left = int(self._producer.flush(timeout_s))
        self._stop.set()
        self._poller.join(timeout=5)
        return left
