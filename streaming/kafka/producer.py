"""The producer side of the platform's services: idempotent, acks=all, and it knows whether
everything it sent is really in the log.

The consumers dead-letter and publish alerts through it; the MQTT bridge and the HTTP gateway are
meant to produce readings through it. A caller that must not make something durable before its
messages are (a landing file before its dead letters) calls `flush` and acts on what it says.
"""

from __future__ import annotations

from typing import Any, cast

from confluent_kafka import KafkaError, Message, Producer

from streaming.kafka.config import producer_config
from streaming.settings import Settings


class ConfirmedProducer:
    """One idempotent producer that counts what the log has not confirmed."""

    def __init__(self, settings: Settings, **extra: Any) -> None:
        self._producer = Producer(producer_config(settings, **extra))
        self._failures: list[str] = []
        self.last_failures: list[str] = []  # delivery errors reported by the last `flush`

    def send(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one message; waits (serving delivery reports) while the local queue is full."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=cast("list[tuple[str, str | bytes | None]] | None", headers),
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def poll(self) -> None:
        """Serve delivery reports without waiting."""
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued message. Returns how many are not confirmed: still queued after
        `timeout_s`, or failed since the previous flush (their errors in `last_failures`)."""
        remaining = int(self._producer.flush(timeout_s))
        self.last_failures, self._failures = self._failures, []
        return remaining + len(self.last_failures)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))
