"""The live stream (`/api/v1/stream`) against the real stack: readings produced to Kafka reach a
WebSocket client through the state writer's change feed within a second; a reconnecting client
resumes where it stopped; a slow client gets the latest state coalesced; auth errors are
problems."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from ot_pipeline_tests.support.operator_stack import (
    INGEST_SECRET,
    READ_SECRET,
    Devices,
    api_server,
    record,
    state_writer,
    wait_for,
)
from streaming import change_feed
from streaming.api.fanout import parse_id
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

pytestmark = pytest.mark.stack


def ws_url(client: httpx.Client, **params: Any) -> str:
    base = str(client.base_url).replace("http://", "ws://")
    return f"{base}/api/v1/stream" + (f"?{urlencode(params)}" if params else "")


@contextmanager
def subscribe(client: httpx.Client, **params: Any) -> Iterator[ClientConnection]:
    with connect(ws_url(client, **params), max_size=None, open_timeout=10) as ws:
        yield ws


def frame(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def opening(ws: ClientConnection) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `subscribed` frame and the next one (snapshot, or the first changes on a resume)."""
    subscribed = frame(ws)
    assert subscribed["type"] == "subscribed", subscribed
    return subscribed, frame(ws)


class Watcher:
    """Applies frames to a local picture of the plant, as a dashboard would."""

    def __init__(self) -> None:
        self.machines: dict[str, dict[str, Any]] = {}
        self.alert_events: list[dict[str, Any]] = []
        self.items = 0
        self.frames = 0
        self.last_id: str | None = None

    def apply(self, message: dict[str, Any]) -> None:
        self.last_id = message.get("last_id", self.last_id)
        if message["type"] == "snapshot":
            self.machines = {m["machine_id"]: m for m in message["machines"]}
        elif message["type"] == "changes":
            self.frames += 1
            for change in message["changes"]:
                self.items += 1
                data = change["data"]
                if change["type"] == "machine":
                    old = self.machines.get(data["machine_id"], {"values": {}})
                    values = {**old.get("values", {}), **data.get("values", {})}
                    self.machines[data["machine_id"]] = {**old, **data, "values": values}
                else:
                    self.alert_events.append(data)

    def read_until(self, ws: ClientConnection, done: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("stream: timed out")
            self.apply(frame(ws, timeout=left))


def test_a_client_sees_an_alert_open_within_a_second_of_the_reading(
    isolated: Settings, tmp_path: Path
) -> None:
    devices = Devices(isolated)
    with (
        state_writer(isolated, tmp_path / "state.log"),
        api_server(isolated, tmp_path / "api.log") as client,
    ):
        devices.send(record("press-07", 1, value=70.0))  # the machine exists, nothing is wrong
        with subscribe(client, key=READ_SECRET, machines="press-07,press-08") as ws:
            subscribed, snapshot = opening(ws)
            assert subscribed["subscription"]["machines"] == ["press-07", "press-08"]
            assert snapshot["type"] == "snapshot" and snapshot["reason"] == "initial"
            watcher = Watcher()
            watcher.apply(snapshot)
            if "press-07" not in watcher.machines:  # the first reading was still on its way
                watcher.read_until(ws, lambda: "press-07" in watcher.machines)
            latencies = []
            for seq in range(2, 7):
                machine = "press-07" if seq % 2 else "press-08"
                produced = devices.send(record(machine, seq, value=130.0 + seq))
                watcher.read_until(
                    ws,
                    lambda m=machine: any(
                        e["event"] == "opened" and e["machine_id"] == m
                        for e in watcher.alert_events
                    ),
                )
                latencies.append(time.time() - produced)
                devices.send(record(machine, seq + 100, value=70.0))  # clears it again
                watcher.read_until(
                    ws,
                    lambda m=machine: any(
                        e["event"] == "cleared" and e["machine_id"] == m
                        for e in watcher.alert_events
                    ),
                )
                watcher.alert_events.clear()
            assert max(latencies) < 1.0, latencies
            assert watcher.machines["press-08"]["values"]["temperature"]["value"] == 70.0
            assert watcher.machines["press-07"]["line_id"] == "line-a"


def test_a_reconnecting_client_resumes_without_losing_changes(
    isolated: Settings, tmp_path: Path
) -> None:
    devices = Devices(isolated)
    machines = [f"m{i:02d}" for i in range(12)]
    rdb = redis.Redis.from_url(isolated.redis_url)
    keys = RedisKeys(isolated.redis_prefix)
    with (
        state_writer(isolated, tmp_path / "state.log"),
        api_server(isolated, tmp_path / "api.log") as client,
    ):
        devices.send(
            *[record(m, 0, value=60.0, line=f"line-{i % 2}") for i, m in enumerate(machines)]
        )
        watcher = Watcher()
        with subscribe(client, key=READ_SECRET, lines="line-0,line-1") as ws:
            _, snapshot = opening(ws)
            watcher.apply(snapshot)
            devices.send(
                *[record(m, 1, value=61.0, line=f"line-{i % 2}") for i, m in enumerate(machines)]
            )
            watcher.read_until(
                ws,
                lambda: all(
                    watcher.machines.get(m, {})
                    .get("values", {})
                    .get("temperature", {})
                    .get("value")
                    == 61.0
                    for m in machines
                ),
            )
        resume_from = watcher.last_id
        assert resume_from is not None
        # While the client is away: new values, an alert opened and one cleared.
        for seq in range(2, 12):
            devices.send(
                *[
                    record(
                        m,
                        seq,
                        value=62.0 + seq + (70 if (m, seq) == ("m03", 5) else 0),
                        line=f"line-{i % 2}",
                    )
                    for i, m in enumerate(machines)
                ]
            )
        wait_for(
            lambda: rdb.hget(keys.machine("m11"), "temperature") == b"73.0", what="all applied"
        )
        with subscribe(client, key=READ_SECRET, lines="line-0,line-1", since=resume_from) as ws:
            subscribed, first = opening(ws)
            assert first["type"] == "changes", first  # no snapshot: a resume
            watcher.apply(first)
            final = subscribed["last_id"]
            watcher.read_until(
                ws,
                lambda: (
                    watcher.last_id is not None and parse_id(watcher.last_id) >= parse_id(final)
                ),
            )
    for m in machines:
        assert watcher.machines[m]["values"]["temperature"]["value"] == 73.0
        assert watcher.machines[m]["status"] == "ONLINE"
    assert [(e["event"], e["machine_id"]) for e in watcher.alert_events] == [
        ("opened", "m03"),
        ("cleared", "m03"),
    ]
    # A position the stream no longer holds (trimmed away): a snapshot, never a silent gap.
    rdb.xtrim(keys.changes, maxlen=1, approximate=False)
    with (
        api_server(isolated, tmp_path / "api2.log") as client,
        subscribe(client, key=READ_SECRET, since=resume_from) as ws,
    ):
        _, first = opening(ws)
        assert (first["type"], first["reason"]) == ("snapshot", "gap")
        assert {m["machine_id"] for m in first["machines"]} == set(machines)


def test_a_slow_client_gets_the_latest_state_coalesced(isolated: Settings, tmp_path: Path) -> None:
    rdb = redis.Redis.from_url(isolated.redis_url)
    keys = RedisKeys(isolated.redis_prefix)
    machines = [f"m{i:02d}" for i in range(10)]
    padding = base64.b64encode(os.urandom(12000)).decode()  # large, incompressible changes
    total, burst = 2000, 20
    with api_server(isolated, tmp_path / "api.log") as client:
        slow_sock = socket.socket()
        slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow_sock.connect((client.base_url.host, client.base_url.port))
        with (
            connect(  # reads ahead at most one message, into a 4 KiB socket buffer
                ws_url(client, key=READ_SECRET, machines="*"),
                sock=slow_sock,
                max_size=None,
                max_queue=1,
            ) as slow,
            subscribe(client, key=READ_SECRET, machines="*") as fast,
        ):
            slow_watcher, fast_watcher = Watcher(), Watcher()
            for ws, w in ((slow, slow_watcher), (fast, fast_watcher)):
                _, snapshot = opening(ws)
                w.apply(snapshot)
            pipe = rdb.pipeline(transaction=False)
            last_id = b""
            for n in range(total):
                m = machines[n % len(machines)]
                payload = {
                    "machine_id": m,
                    "status": "ONLINE",
                    "note": padding,
                    "values": {"rpm": {"value": float(n), "ts": n}},
                }
                pipe.xadd(keys.changes, change_feed.machines_entry(orjson.dumps([payload])))
                if n % burst == burst - 1:  # a burst, then a pause: a frame for the fast one
                    last_id = pipe.execute()[-1]
                    time.sleep(0.03)
            final = last_id.decode()
            # The fast client keeps up while the slow one reads nothing meanwhile.
            fast_watcher.read_until(fast, lambda: fast_watcher.last_id == final, timeout=60)
            time.sleep(0.5)
            slow_watcher.read_until(slow, lambda: slow_watcher.last_id == final, timeout=60)
    # Both end with the latest value of every machine.
    for watcher in (fast_watcher, slow_watcher):
        for i, m in enumerate(machines):
            rpm = watcher.machines[m]["values"]["rpm"]["value"]
            assert rpm == float(total - len(machines) + i)
    # The slow one got them in far fewer changes than were made (the socket buffers hold a few
    # MB, then everything else merged while it waited).
    assert slow_watcher.items < total / 3, slow_watcher.items
    # What waited for either client never exceeded one change per machine.
    closed = [
        json.loads(line)
        for line in (tmp_path / "api.log").read_text().splitlines()
        if '"stream_closed"' in line
    ]
    assert len(closed) == 2 and all(c["offered"] == total for c in closed)
    assert max(c["max_waiting"] for c in closed) <= len(machines)


def test_stream_auth_and_subscription_errors_are_problems(
    isolated: Settings, tmp_path: Path
) -> None:
    with api_server(isolated, tmp_path / "api.log") as client:
        for params, status, kind in [
            ({"machines": "*"}, 401, "unauthorized"),
            ({"key": "ot_wrong"}, 401, "unauthorized"),
            ({"key": INGEST_SECRET}, 403, "forbidden"),
            ({"key": READ_SECRET, "since": "yesterday"}, 422, "invalid-subscription"),
            ({"key": READ_SECRET, "machines": "Not An Id"}, 422, "invalid-subscription"),
        ]:
            with pytest.raises(InvalidStatus) as refused:
                connect(ws_url(client, **params), open_timeout=10)
            response = refused.value.response
            assert response.status_code == status
            assert response.headers["content-type"] == "application/problem+json"
            body = json.loads(response.body or b"{}")
            assert body["type"] == f"urn:ot:problem:{kind}" and body["detail"], body

        # The key in the first message (browsers): a wrong one is an error frame and a close.
        with connect(ws_url(client), open_timeout=10) as ws:
            ws.send(json.dumps({"type": "subscribe", "key": INGEST_SECRET}))
            error = frame(ws)
            assert error["type"] == "error" and error["problem"]["status"] == 403
            assert error["problem"]["type"] == "urn:ot:problem:forbidden"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        with connect(ws_url(client), open_timeout=10) as ws:
            ws.send(json.dumps({"type": "subscribe", "key": READ_SECRET, "lines": ["line-a"]}))
            subscribed, snapshot = opening(ws)
            assert subscribed["key"] == "wall-display"
            assert subscribed["subscription"]["lines"] == ["line-a"]
            assert snapshot["type"] == "snapshot"
    with (
        api_server(isolated, tmp_path / "api.log", OT_API_ANONYMOUS_READ="true") as client,
        subscribe(client, machines="*") as ws,
    ):
        subscribed, _ = opening(ws)
        assert subscribed["key"] == "anonymous"
