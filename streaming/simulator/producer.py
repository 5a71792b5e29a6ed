"""Kafka adapter of the simulator: an idempotent, batched, compressed producer that counts
every delivery failure (nothing is lost silently).

Only failed deliveries are reported back (`delivery.report.only.error`): a Python callback per
successful message would cost about a microsecond each, a sixth of the per-reading budget.
Delivered = produced - failed - still queued after the final flush.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streaming.kafka.config import bulk_producer_config

POLL_EVERY = 20_000  # serve delivery reports every N messages in the tight loop


class SimulatorProducer:
    """Sends keyed byte messages in a tight loop; counts produced messages and failures."""

    def __init__(
        self, bootstrap: str, compression: str = "lz4", queue_messages: int = 1_000_000
    ) -> None:
        self.produced = 0
        self.failed = 0
        self.failure_reasons: Counter[str] = Counter()
        config = bulk_producer_config(bootstrap, compression, queue_messages=queue_messages)
        config["on_delivery"] = self._on_delivery
        config["error_cb"] = self._on_error
        self.client_errors: Counter[str] = Counter()
        self._producer = Producer(config)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            self.failure_reasons[err.name()] += 1

    def _on_error(self, err: KafkaError) -> None:
        self.client_errors[err.name()] += 1

    def send_many(self, topic: str, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Produce every (key, value) in order; waits (polls) while the local queue is full."""
        produce, poll = self._producer.produce, self._producer.poll
        for i in range(len(values)):
            while True:
                try:
                    produce(topic, values[i], keys[i])
                    break
                except BufferError:
                    poll(0.05)  # queue full: let librdkafka send, then retry this message
            if i % POLL_EVERY == 0:
                poll(0)
        self.produced += len(values)

    def send_json(self, topic: str, key: str, obj: dict[str, Any]) -> None:
        value = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        self.send_many(topic, [key.encode()], [value])

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> int:
        """Wait for every message to be delivered or failed; returns how many are still queued."""
        return int(self._producer.flush(timeout_s))
