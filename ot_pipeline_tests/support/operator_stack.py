"""The operator API's test rig: `ot api` as a child process (the real server) and a state writer
running in a thread of the test with a clock the test can move, both on the test's own topics and
Redis prefix; readings produced to Kafka the way devices do."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from ot_pipeline_tests.support.ports import free_port
from ot_tools import drills
from streaming.api.keys import Role, new_key
from streaming.consumers.state_writer import MEMBERSHIP, StateWriter
from streaming.events import encode_avro_many, event_id_for
from streaming.kafka.config import producer_config
from streaming.kafka.lifecycle import Bounds, JsonLog, StopFlag
from streaming.settings import Settings

READ_SECRET, READER = new_key("wall-display", Role.READ)
OPERATE_SECRET, OPERATOR = new_key("alice-shift-a", Role.OPERATE)
INGEST_SECRET, INGESTER = new_key("plant-a", Role.INGEST)
KEY_ENTRIES = f"{READER.entry},{OPERATOR.entry},{INGESTER.entry}"


@contextmanager
def running_api(
    settings: Settings, log: Path, keys: str, *args: str, **env: str
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """`ot api` (with `args`) as a real process on a free port with these settings and
    `OT_API_KEYS` entries; yields a client bound to it (once `/health` answers) and the
    process; SIGTERM at the end."""
    port = free_port()
    child_env = {**drills.child_env(settings), "OT_API_KEYS": keys, **env}
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streaming.cli", "api", "--port", str(port), *args],
            env=child_env,
            stdout=err,
            stderr=err,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ot api did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield client, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


@contextmanager
def api_server(settings: Settings, log: Path, **env: str) -> Iterator[httpx.Client]:
    """`ot api` on a free port with these settings and the three keys above."""
    escalate = str(settings.alert_escalate_after_seconds)
    with running_api(
        settings, log, KEY_ENTRIES, OT_ALERT_ESCALATE_AFTER_SECONDS=escalate, **env
    ) as (client, _):
        yield client


class MovableClock:
    """time.time() plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@contextmanager
def state_writer(
    settings: Settings,
    log: Path,
    clock: Callable[[], float] = time.time,
    sweep_every_s=0.2,
    group: str | None = None,
) -> Iterator[StateWriter]:
    """A state writer consuming in a thread until the block ends; yields once it has its
    partitions. Another `group` starts from its own (empty) offsets: a replay of the topic."""
    group = group or f"state-{settings.topics.readings}"
    with open(log, "a") as out:
        writer = StateWriter(
            settings,
            replace(MEMBERSHIP, group=group, poll_timeout=0.05),
            sweep_every_s=sweep_every_s,
            log=JsonLog("state-writer", out),
            clock=clock,
        )
        stop = StopFlag()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                writer.run(Bounds(), stop)
            except BaseException as exc:  # surfaced in the test's thread
                failure.append(exc)

        thread = threading.Thread(target=run, name="state-writer", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not writer.runtime.positions:
            if failure or time.monotonic() > deadline:
                raise RuntimeError(f"state writer got no partitions: {failure}")
            time.sleep(0.05)
        try:
            yield writer
        finally:
            stop.signal = "test-end"
            thread.join(30)
            if failure:
                raise failure[0]


def record(
    machine: str,
    seq: int,
    metric: str = "temperature",
    unit: str = "°C",
    value: float = 70.0,
    *,
    status: int = 0,
    line: str = "line-a",
    machine_type: str = "MOTOR",
) -> dict[str, Any]:
    return {
        "event_id": event_id_for(machine, seq),
        "machine_id": machine,
        "machine_type": machine_type,
        "line_id": line,
        "metric": metric,
        "unit": unit,
        "value": value,
        "ts": int(time.time() * 1000),
        "seq": seq,
        "status_code": status,
        "quality": "GOOD",
    }


class Devices:
    """Produces readings to the test's readings topic, keyed by machine, at once (no linger)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.readings
        self.producer = Producer(producer_config(settings, **{"linger.ms": 0}))

    def send(self, *records: dict[str, Any]) -> float:
        """Produce and wait for the broker's acknowledgement; returns the time (time.time())
        just before the first message was handed to the producer."""
        started = time.time()
        for r, value in zip(records, encode_avro_many(list(records)), strict=True):
            self.producer.produce(self.topic, value=value, key=r["machine_id"].encode())
        if self.producer.flush(30):
            raise RuntimeError("readings not acknowledged by Kafka")
        return started


def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def read_topic(settings: Settings, topic: str) -> list[Message]:
    """Every message of a topic, from the start (up to the high watermarks at the call)."""
    marks = drills.watermarks(settings, topic)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "t-operator-read"}
    )
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in marks.items()])
    need = sum(high - low for low, high in marks.values())
    got: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < need and time.monotonic() < deadline:
            got += [m for m in consumer.consume(1000, timeout=0.2) if m.error() is None]
    finally:
        consumer.close()
    return got
