"""The alert lifecycle scripts against the real Redis: escalation reads its index of the alerts
waiting for an acknowledgement, which opening, acknowledging, clearing and escalating keep exact."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from streaming.alert_lifecycle import AlertScripts, encode_record, opened_record
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

pytestmark = pytest.mark.stack

T0 = 1_800_000_000_000
AFTER = 600_000


@pytest.fixture
def rig(stack: Settings) -> Iterator[tuple[redis.Redis, RedisKeys, AlertScripts]]:
    client = redis.Redis.from_url(stack.redis_url)
    keys = RedisKeys(f"t-lifecycle-{uuid.uuid4().hex[:10]}:")
    try:
        yield client, keys, AlertScripts(client, keys, feed_maxlen=1000)
    finally:
        found = list(client.scan_iter(match=keys.scan_all, count=1000))
        if found:
            client.delete(*found)


def record(machine: str, partition: int, severity: str = "HIGH", created: int = T0) -> dict:
    event = {
        "alert_id": f"pressure_hard|{machine}|pressure|{partition}|1",
        "rule": "pressure_hard",
        "machine_id": machine,
        "metric": "pressure",
        "severity": severity,
        "value": 45.0,
        "threshold": 40.0,
        "opened_ms": created - 5,
        "kafka_partition": partition,
        "event": "opened",
    }
    return opened_record(event, line_id="line-a", manual_clear=True, now_ms=created)


def waiting(client: redis.Redis, keys: RedisKeys, partition: int) -> dict[str, int]:
    found = client.zrange(f"{keys.escalation_prefix}{partition}", 0, -1, withscores=True)
    return {member.decode(): int(score) for member, score in found}


def active(client: redis.Redis, keys: RedisKeys, alert_id: str) -> dict[str, Any]:
    raw = client.hget(keys.alerts_active, alert_id)
    assert raw is not None
    found: dict[str, Any] = json.loads(raw)
    return found


def test_escalation_raises_only_the_due_unacknowledged_alerts_of_its_partitions(rig) -> None:
    client, keys, scripts = rig
    a, b, c = record("m-a", 0), record("m-b", 0), record("m-c", 0)
    late = record("m-late", 0, created=T0 + 60_000)
    other = record("m-other", 1)
    for r in (a, b, c, late, other):
        assert scripts.open(r) == 1
    assert scripts.open(a) == 0  # a replay of the same alert changes nothing
    assert waiting(client, keys, 0) == {
        a["alert_id"]: T0,
        b["alert_id"]: T0,
        c["alert_id"]: T0,
        late["alert_id"]: T0 + 60_000,
    }
    scripts.transition("ack", b["alert_id"], T0 + 1, "alice")
    scripts.transition("clear", c["alert_id"], T0 + 2, "alice")
    assert set(waiting(client, keys, 0)) == {a["alert_id"], late["alert_id"]}

    assert scripts.escalate(T0 + AFTER - 1, AFTER, [0, 1]) == 0  # not yet
    assert scripts.escalate(T0 + AFTER, AFTER, [0]) == 1  # a only: late is not due, 1 not ours
    risen = active(client, keys, a["alert_id"])
    assert (risen["severity"], risen["original_severity"], risen["escalations"]) == (
        "CRITICAL",
        "HIGH",
        1,
    )
    assert active(client, keys, other["alert_id"])["severity"] == "HIGH"
    assert active(client, keys, b["alert_id"])["severity"] == "HIGH"  # acknowledged
    # CRITICAL is the top: a leaves the index; the others wait on.
    assert waiting(client, keys, 0) == {late["alert_id"]: T0 + 60_000}
    assert scripts.escalate(T0 + 10 * AFTER, AFTER, [0]) == 1  # late
    assert waiting(client, keys, 0) == {}
    assert active(client, keys, a["alert_id"])["escalations"] == 1
    assert scripts.escalate(T0 + AFTER, AFTER, [1]) == 1  # the other partition's owner
    assert waiting(client, keys, 1) == {}


def test_an_escalated_alert_waits_again_from_its_escalation(rig) -> None:
    client, keys, scripts = rig
    low = record("m-low", 2, severity="LOW")
    scripts.open(low)
    assert scripts.escalate(T0 + AFTER, AFTER, [2]) == 1
    assert waiting(client, keys, 2) == {low["alert_id"]: T0 + AFTER}
    assert scripts.escalate(T0 + 2 * AFTER - 1, AFTER, [2]) == 0
    assert scripts.escalate(T0 + 2 * AFTER, AFTER, [2]) == 1
    rec = active(client, keys, low["alert_id"])
    assert (rec["severity"], rec["escalations"], rec["escalated_ms"]) == (
        "HIGH",
        2,
        T0 + 2 * AFTER,
    )
    scripts.transition("ack", low["alert_id"], T0 + 2 * AFTER + 1, "alice")
    assert waiting(client, keys, 2) == {}
    assert scripts.escalate(T0 + 9 * AFTER, AFTER, [2]) == 0


def test_alerts_recorded_before_the_index_existed_are_indexed_once(rig) -> None:
    client, keys, scripts = rig
    old = record("m-old", 3)
    acked = {**record("m-acked", 3), "acknowledged": True, "status": "ACTIVE_ACK"}
    for r in (old, acked):  # written as the lifecycle did before the index
        client.hset(keys.alerts_active, r["alert_id"], encode_record(r))
    assert scripts.escalate(T0 + AFTER, AFTER, [3]) == 1
    assert active(client, keys, old["alert_id"])["severity"] == "CRITICAL"
    assert active(client, keys, acked["alert_id"])["severity"] == "HIGH"
    assert client.get(keys.escalation_indexed) == b"1"
    assert waiting(client, keys, 3) == {}
