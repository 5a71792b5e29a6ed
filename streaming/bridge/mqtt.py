"""`ot bridge mqtt`: MQTT (plant devices, edge gateways) -> `sensor-readings` in Kafka.

The guarantee: an MQTT message is acknowledged (PUBACK) only after Kafka acknowledged every
reading, or dead letter, it became. The bridge holds a persistent session (MQTT 5, fixed client
id, clean start off, a session expiry), so everything it has not acknowledged stays with the
broker: when the bridge is killed, the broker redelivers those messages to its next session and
nothing is lost; a redelivered message becomes the same `event_id`, so the copy is a detectable
duplicate (docs/mqtt.md, "QoS and delivery guarantees").

One batch at a time: messages are taken from the socket in batches; a batch is converted
(streaming.bridge.topics, .sparkplug), checked by the contract's batch validator, sent through
the platform's `ConfirmedProducer` (idempotent, `acks=all`), confirmed with one flush, and only
then acknowledged, in arrival order (MQTT requires PUBACKs in the order of the PUBLISHes). While
Kafka confirms a batch the broker keeps sending into the socket (up to the Receive Maximum). If
Kafka does not confirm a batch, the bridge drops the connection without acknowledging it: the
broker redelivers everything unacknowledged when the bridge reconnects.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streaming.bridge import sparkplug
from streaming.bridge.client import ConnectionLost, MqttAddress, MqttClient, MqttError
from streaming.bridge.protocol import ProtocolError, Publish
from streaming.bridge.topics import Bad, PlainLayout, readings_from_message
from streaming.events import decode_batch, dlq_headers, encode_avro, encode_avro_many
from streaming.events.reasons import Reason
from streaming.kafka.lifecycle import Bounds, JsonLog, Progress, StopFlag
from streaming.kafka.producer import ConfirmedProducer
from streaming.observability import metrics
from streaming.settings import Settings

STAGE = "mqtt"
# Dead letters keep the payload unchanged up to this size (Kafka's default message limit is
# 1 MB; a reading is under 4 KiB, so anything near this is garbage anyway): longer ones are cut
# and the detail says so.
MAX_DEAD_LETTER_BYTES = 64 * 1024
NO_PARTITION = -1  # MQTT has no partition or offset: the DLQ headers carry -1 for both
_ERROR_CODE = re.compile(r"code=(\w+)")


@dataclass
class BridgeOptions:
    client_id: str = "ot-bridge"
    session_expiry_s: int = 7 * 24 * 3600  # how long the broker keeps our queue while we are away
    keepalive_s: int = 30
    batch_size: int = 5_000  # MQTT messages per batch, at most ...
    batch_wait_s: float = 0.05  # ... and at most this long after its first message
    max_in_flight: int = 50_000  # MQTT 5 Receive Maximum: sent to us, not yet acknowledged
    poll_timeout_s: float = 0.2
    flush_timeout_s: float = 30.0  # on stop: how long to wait for Kafka before exiting
    # A reading Kafka has not confirmed within this time fails: the bridge then reconnects
    # without acknowledging, and the broker redelivers (librdkafka's default is 5 minutes).
    delivery_timeout_ms: int = 60_000
    status_file: Path | None = None  # heartbeat for the compose healthcheck
    # Sparkplug B groups to read (`+` = all); empty = Sparkplug off.
    sparkplug_groups: tuple[str, ...] = ("+",)


@dataclass
class BridgeStats:
    received: int = 0  # MQTT messages taken from the broker (redeliveries included)
    redelivered: int = 0  # of which the broker marked DUP (sent before, not acknowledged)
    acknowledged: int = 0  # QoS 1 messages acknowledged to the broker
    not_acknowledged: int = 0  # QoS 1 messages given back: the broker redelivers them
    readings: int = 0  # readings Kafka confirmed in the readings topic
    dead_letters: int = 0  # dead letters Kafka confirmed in the DLQ
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    kafka_failures: Counter[str] = field(default_factory=Counter)
    batches: int = 0  # batches forwarded (each one Kafka flush and one write of PUBACKs)
    reconnects: int = 0
    connection_errors: Counter[str] = field(default_factory=Counter)
    first_message_at: float | None = None  # monotonic clock, for throughput figures
    last_ack_at: float | None = None


@dataclass
class _Batch:
    """What one batch became: the packet ids to acknowledge and what Kafka must confirm."""

    packet_ids: list[int]
    readings: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)


class MqttBridge:
    def __init__(
        self,
        settings: Settings,
        options: BridgeOptions | None = None,
        log: JsonLog | None = None,
        producer: ConfirmedProducer | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or BridgeOptions()
        self.log = log or JsonLog("bridge-mqtt")
        self.address = MqttAddress.from_url(settings.mqtt_url)
        self.client = MqttClient(
            self.address,
            self.options.client_id,
            keepalive=self.options.keepalive_s,
            clean_start=False,
            session_expiry=self.options.session_expiry_s,
            receive_maximum=min(65_535, self.options.max_in_flight),
        )
        self.producer = producer or ConfirmedProducer(
            settings,
            **{
                "client.id": f"ot-bridge-{self.options.client_id}",
                "linger.ms": 10,
                "compression.type": "lz4",
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 500_000,
                "message.timeout.ms": self.options.delivery_timeout_ms,
            },
        )
        self.layout = PlainLayout(settings.mqtt_topic_root)
        self.subscriptions = [self.layout.filter]
        self.sparkplug = sparkplug.SparkplugReader()
        if self.options.sparkplug_groups:
            self.subscriptions += sparkplug.filters(self.options.sparkplug_groups)
        self.stats = BridgeStats()
        self.unacked = 0  # QoS 1 messages of the batch being forwarded
        self.session_resumed: bool | None = None
        self.undelivered_at_exit = 0
        self._stop: StopFlag | None = None
        self._next_connect = 0.0
        self._backoff = 0.5
        self._started = time.monotonic()

    # -- the loop ------------------------------------------------------------------------------
    def run(self, bounds: Bounds, stop: StopFlag, progress: Progress) -> dict[str, Any]:
        self._stop = stop
        stopped_by = "signal"
        while not stop.stopped:
            now = time.monotonic()
            why = bounds.reached(self.stats.received, now)
            if why:
                stopped_by = why
                break
            if not self.client.connected:
                self.connect(now)
                if not self.client.connected:
                    self._wait(stop, min(0.2, max(0.0, self._next_connect - now)))
                    continue
            try:
                limit = bounds.remaining(self.stats.received, self.options.batch_size)
                messages = self.client.receive(
                    limit, self.options.poll_timeout_s, self.options.batch_wait_s
                )
                if messages:
                    bounds.saw_messages(time.monotonic())
                    self._forward(messages)
            except (MqttError, ProtocolError) as exc:
                self._lost(exc)
            if progress.due(time.monotonic()):
                progress.show(time.monotonic(), **self._figures())
                self._heartbeat()
        else:
            stopped_by = f"signal:{stop.signal}"
        self._drain()
        progress.done()
        self._heartbeat()
        return self.summary(stopped_by)

    def _wait(self, stop: StopFlag, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not stop.stopped and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def connect(self, now: float | None = None) -> None:
        """Connect and subscribe, unless a failed attempt asked to back off until later."""
        now = time.monotonic() if now is None else now
        if now < self._next_connect:
            return
        try:
            resumed = self.client.connect()
            self.client.subscribe(self.subscriptions, qos=1)
        except (MqttError, OSError) as exc:
            self.client.close()
            self.stats.connection_errors[type(exc).__name__] += 1
            self.log("connect_failed", broker=str(self.address), error=str(exc))
            self._next_connect = now + self._backoff
            self._backoff = min(5.0, self._backoff * 2)
            return
        self._backoff = 0.5
        if self.session_resumed is None:
            self.session_resumed = resumed
        else:
            self.stats.reconnects += 1
        self.log(
            "connected",
            broker=str(self.address),
            client_id=self.options.client_id,
            session_present=resumed,
            subscriptions=self.subscriptions,
        )

    def _lost(self, exc: Exception) -> None:
        """The connection is gone (or we dropped it): what is not acknowledged stays with the
        broker, which redelivers it to the next connection."""
        self.client.close()
        self.stats.connection_errors[type(exc).__name__] += 1
        self.stats.not_acknowledged += self.unacked
        self.log("connection_lost", broker=str(self.address), error=str(exc), unacked=self.unacked)
        self.unacked = 0
        self._next_connect = time.monotonic() + self._backoff
        self._backoff = min(5.0, self._backoff * 2)

    # -- one batch -------------------------------------------------------------------------------
    def _forward(self, messages: list[Publish]) -> None:
        """Convert, send, confirm, acknowledge. Raises ConnectionLost when Kafka did not confirm
        (nothing of the batch is acknowledged then)."""
        stats = self.stats
        if stats.first_message_at is None:
            stats.first_message_at = time.monotonic()
        stats.received += len(messages)
        stats.batches += 1
        stats.redelivered += sum(1 for m in messages if m.dup)
        batch = _Batch([m.packet_id for m in messages if m.qos])
        self.unacked = len(batch.packet_ids)
        self._send(messages, batch)
        failed = self._confirm()
        if failed:
            raise ConnectionLost(
                f"Kafka did not confirm {failed} messages of the batch; reconnecting so that "
                "the broker redelivers what is not acknowledged"
            )
        self.client.ack(batch.packet_ids)
        stats.acknowledged += len(batch.packet_ids)
        stats.last_ack_at = time.monotonic()
        stats.readings += batch.readings
        stats.dead_letters += sum(batch.dead_letters.values())
        stats.dead_letter_reasons.update(batch.dead_letters)
        self.unacked = 0
        # Per batch: received, forwarded as readings, and dead letters by reason.
        metrics.MQTT_MESSAGES.labels("received").inc(len(messages))
        metrics.MQTT_MESSAGES.labels("forwarded").inc(batch.readings)
        for reason, count in batch.dead_letters.items():
            metrics.MQTT_MESSAGES.labels("dead_lettered").inc(count)
            metrics.DEAD_LETTERS.labels(STAGE, reason).inc(count)

    def _send(self, messages: list[Publish], batch: _Batch) -> None:
        received_ms = int(time.time() * 1000)
        records: list[dict[str, Any]] = []
        origin: list[int] = []  # message index of each record
        dead: list[tuple[int, str, str]] = []  # (message index, reason, detail)
        for i, message in enumerate(messages):
            if sparkplug.is_sparkplug(message.topic):
                results = self.sparkplug.readings(message.topic, message.payload, received_ms)
            else:
                results = readings_from_message(
                    message.topic, message.payload, received_ms, self.layout
                )
            for result in results:
                if isinstance(result, Bad):
                    dead.append((i, result.reason, result.detail))
                else:
                    records.append(result)
                    origin.append(i)
        payloads = _encode(records, dead, origin)
        if payloads:
            decoded = decode_batch(
                payloads,
                received_ms,
                max_future_ms=self.settings.max_future_ms,
                max_age_ms=self.settings.max_age_ms,
            )
            topic = self.settings.topics.readings
            for j in decoded.valid_index.tolist():
                self.producer.send(topic, payloads[j], records[j]["machine_id"].encode())
            batch.readings = len(decoded.valid_index)
            for r in decoded.rejected:
                dead.append((origin[r.index], str(r.reason), r.detail))
        for i, reason, detail in sorted(dead):
            self._dead_letter(messages[i], reason, detail)
            batch.dead_letters[reason] += 1

    def _dead_letter(self, message: Publish, reason: str, detail: str) -> None:
        value = message.payload
        if len(value) > MAX_DEAD_LETTER_BYTES:
            detail = f"{detail} (payload cut to {MAX_DEAD_LETTER_BYTES} of {len(value)} bytes)"
            value = value[:MAX_DEAD_LETTER_BYTES]
        headers = dlq_headers(reason, STAGE, message.topic, NO_PARTITION, NO_PARTITION, detail)
        if sparkplug.is_sparkplug(message.topic):
            key = sparkplug.device_of(message.topic)
        else:
            key = self.layout.machine_of(message.topic)
        self.producer.send(self.settings.topics.dlq, value, key.encode(), headers)

    def _confirm(self) -> int:
        """Wait until Kafka confirmed or failed everything sent; returns how many it did not
        confirm. Waits in slices, keeping the MQTT connection alive; gives up after the delivery
        timeout, or `flush_timeout_s` after a stop signal."""
        deadline = time.monotonic() + self.options.delivery_timeout_ms / 1000 + 5
        failed = 0
        while True:
            left = self.producer.flush(0.5)
            for error in self.producer.last_failures:
                code = _ERROR_CODE.search(error)
                self.stats.kafka_failures[code[1] if code else error[:80]] += 1
            failed += len(self.producer.last_failures)
            queued = left - len(self.producer.last_failures)
            if queued <= 0:
                return failed
            now = time.monotonic()
            if self._stop is not None and self._stop.stopped:
                deadline = min(deadline, now + self.options.flush_timeout_s)
            if now >= deadline:
                return failed + queued
            if self.client.connected:
                # A lost connection only means no acknowledgement: Kafka still gets the batch.
                with contextlib.suppress(MqttError):
                    self.client.maintain()

    def _drain(self) -> None:
        """On stop: nothing is half-forwarded (batches complete in `_forward`); leave the
        session cleanly so the broker keeps what comes next for the next bridge."""
        remaining = self.producer.flush(self.options.flush_timeout_s)
        if self.client.connected:
            self.client.disconnect()
        if remaining:
            self.log("kafka_undelivered_at_exit", messages=remaining)
        self.undelivered_at_exit = remaining

    # -- reporting -------------------------------------------------------------------------------
    def _figures(self) -> dict[str, Any]:
        s = self.stats
        elapsed = max(1e-9, time.monotonic() - self._started)
        return {
            "received": s.received,
            "acknowledged": s.acknowledged,
            "readings": s.readings,
            "dead_letters": s.dead_letters,
            "unacked": self.unacked,
            "per_s": round(s.received / elapsed),
            "connected": self.client.connected,
        }

    def _heartbeat(self) -> None:
        if self.options.status_file is None:
            return
        state = {"ts": round(time.time(), 3), **self._figures()}
        tmp = self.options.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.options.status_file)

    def forwarding_rate(self) -> float | None:
        s = self.stats
        if s.first_message_at is None or s.last_ack_at is None:
            return None
        return round(s.acknowledged / max(s.last_ack_at - s.first_message_at, 1e-9), 1)

    def summary(self, stopped_by: str) -> dict[str, Any]:
        s = self.stats
        elapsed = time.monotonic() - self._started
        return {
            "component": "bridge-mqtt",
            "broker": str(self.address),
            "client_id": self.options.client_id,
            "session_resumed": self.session_resumed,
            "received": s.received,
            "redelivered": s.redelivered,
            "acknowledged": s.acknowledged,
            "not_acknowledged": s.not_acknowledged,
            "readings": s.readings,
            "dead_letters": s.dead_letters,
            "dead_letter_reasons": dict(s.dead_letter_reasons),
            "kafka_failures": dict(s.kafka_failures),
            "kafka_undelivered_at_exit": self.undelivered_at_exit,
            "sparkplug_skipped_metrics": self.sparkplug.skipped_metrics,
            "batches": s.batches,
            "reconnects": s.reconnects,
            "connection_errors": dict(s.connection_errors),
            "stopped_by": stopped_by,
            "elapsed_s": round(elapsed, 3),
            "messages_per_s": round(s.received / max(elapsed, 1e-9), 1),
            # From the first message taken to the last acknowledgement: the forwarding rate.
            "forwarding_per_s": self.forwarding_rate(),
        }


def _encode(
    records: list[dict[str, Any]], dead: list[tuple[int, str, str]], origin: list[int]
) -> list[bytes]:
    """Avro wire format of every record (topics.py guarantees encodable records; should one
    still fail, it alone is dead-lettered and dropped from `records` and `origin`)."""
    if not records:
        return []
    try:
        return encode_avro_many(records)
    except ValueError:
        pass
    payloads: list[bytes] = []
    keep: list[int] = []
    for j, record in enumerate(records):
        try:
            payloads.append(encode_avro(record))
            keep.append(j)
        except ValueError as exc:
            dead.append((origin[j], str(Reason.BAD_TYPE), str(exc)[:200]))
    records[:] = [records[j] for j in keep]
    origin[:] = [origin[j] for j in keep]
    return payloads
