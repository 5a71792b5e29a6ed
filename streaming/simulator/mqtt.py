"""MQTT adapter of the simulator (`ot simulate --sink mqtt`): the fleet publishes its readings
like plant devices, QoS 1 on the plain topics, and counts every PUBACK (nothing lost silently).

The ground truth (machine records, `sim.faults`) still goes to Kafka: it is the simulator's
knowledge, not something a device would publish.
"""

from __future__ import annotations

from collections.abc import Sequence

from streaming.bridge.client import MqttAddress, MqttClient, MqttError


class SimulatorMqtt:
    """A QoS 1 publisher with a window of unacknowledged messages (the broker's Receive
    Maximum); `published` - `acknowledged` - `rejected` = still unacknowledged."""

    def __init__(self, url: str, client_id: str = "ot-simulate") -> None:
        self.client = MqttClient(MqttAddress.from_url(url), client_id, keepalive=30)
        self.client.connect()
        self.published = 0
        self.errors: list[str] = []

    @property
    def acknowledged(self) -> int:
        return self.client.acked

    @property
    def rejected(self) -> dict[str, int]:
        return dict(self.client.rejected)

    def send(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self.client.publish_many(messages, qos=1)
        self.published += len(messages)

    def poll(self) -> None:
        self.client.wait_for_acks(0.0)

    def flush(self, timeout_s: float = 60.0) -> int:
        """Wait for every PUBACK; returns how many are still missing."""
        try:
            missing = self.client.wait_for_acks(timeout_s)
        except MqttError as exc:
            self.errors.append(str(exc))
            missing = len(self.client.unacked)
        self.client.disconnect()
        return missing
