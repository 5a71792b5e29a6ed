"""MQTT bridge benchmark (`ot bench mqtt`): QoS 1 messages per second from Mosquitto through
`ot bridge mqtt` into Kafka, every message acknowledged only after Kafka confirmed it.

The load generator is `ot simulate --sink mqtt` in its own process (the simulated fleet in
fast-forward, device-like JSON payloads, QoS 1 with the broker's full window). Two figures:

- backlog: the fleet publishes while the bridge is away (its persistent session queues), then
  the bridge drains the queue: the bridge's own ceiling;
- live: the fleet publishes while the bridge runs in another process, both competing for the
  same cores with Mosquitto and Kafka: the rate a plant would see.

The rate is the bridge's: messages acknowledged / (last acknowledgement - first message taken).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from typing import Any

from streaming.bridge.client import MqttAddress, MqttClient, end_session
from streaming.bridge.mqtt import BridgeOptions, MqttBridge
from streaming.kafka.lifecycle import Bounds, JsonLog, Progress, StopFlag
from streaming.settings import Settings, Topics
from streaming.stack.topics import create_topics, delete_topics


def _simulate(settings: Settings, machines: int, hours: float) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MQTT_URL": settings.mqtt_url,
        "OT_MQTT_TOPIC_ROOT": settings.mqtt_topic_root,
        "OT_TOPIC_READINGS": settings.topics.readings,
        "OT_TOPIC_DLQ": settings.topics.dlq,
        "OT_TOPIC_ALERTS": settings.topics.alerts,
        "OT_TOPIC_FAULTS": settings.topics.faults,
    }
    fleet = ("--machines", str(machines), "--hours", str(hours), "--chaos", "none")
    return subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "simulate", "--sink", "mqtt", *fleet],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _finished(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"ot simulate --sink mqtt exited {proc.returncode}: {out[-300:]}")
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


def _bridge(settings: Settings, client_id: str) -> MqttBridge:
    quiet = JsonLog("bench-bridge", open(os.devnull, "w"))  # noqa: SIM115
    return MqttBridge(settings, BridgeOptions(client_id=client_id), quiet)


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    # 50 machines, ~4 metrics each, one reading a second: 0.25 h is ~180k messages.
    hours = 0.1 if quick else 0.5
    figures: dict[str, Any] = {}
    for phase in ("backlog", "live"):
        suffix = uuid.uuid4().hex[:8]
        topics = Topics(
            readings=f"bench-mqtt-{suffix}",
            dlq=f"bench-mqtt-{suffix}.dlq",
            alerts=f"bench-mqtt-alerts-{suffix}",
            faults=f"bench-mqtt-faults-{suffix}",
        )
        create_topics(settings.kafka_bootstrap_servers, topics, replication_factor=1)
        bench = replace(settings, topics=topics, mqtt_topic_root=f"bench-{suffix}/factory")
        client_id = f"bench-bridge-{suffix}"
        address = MqttAddress.from_url(settings.mqtt_url)
        try:
            bridge = _bridge(bench, client_id)
            if phase == "backlog":
                session = MqttClient(address, client_id, clean_start=False, session_expiry=600)
                session.connect()
                session.subscribe(bridge.subscriptions)
                session.disconnect()
                sim = _finished(_simulate(bench, 50, hours))
                summary = bridge.run(Bounds(until_idle=2.0), StopFlag(), Progress(bridge.log, 3600))
            else:
                # The bridge connects first (in this process), then the fleet starts.
                bridge.connect()
                load = _simulate(bench, 50, hours)
                summary = bridge.run(
                    Bounds(until_idle=10.0), StopFlag(), Progress(bridge.log, 3600)
                )
                sim = _finished(load)
            if (
                summary["acknowledged"] != sim["mqtt_published"]
                or summary["readings"] != (sim["readings"])
            ):
                raise RuntimeError(f"{phase}: lost messages: {summary} vs {sim}")
            figures[f"{phase}_messages"] = summary["acknowledged"]
            figures[f"{phase}_bridge_msgs_per_s"] = summary["forwarding_per_s"]
            figures[f"{phase}_publisher_msgs_per_s"] = sim["readings_per_s"]
            figures[f"{phase}_mean_batch"] = round(summary["acknowledged"] / summary["batches"])
        finally:
            end_session(address, client_id)
            delete_topics(settings.kafka_bootstrap_servers, topics.all())
    figures["qos"] = 1
    figures["target_msgs_per_s"] = 20_000
    return figures
