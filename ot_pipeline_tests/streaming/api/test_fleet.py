"""The fleet snapshot follows the change feed: applying the feed's entries gives what the state
writer and the alert scripts wrote to Redis, without reading Redis again (pure, on the writer's own
functions; and on the real stack: a state writer thread, Kafka, Redis and the API's feed reader)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
import redis.asyncio as aioredis

from ot_pipeline_tests.support.operator_stack import Devices, record, state_writer
from streaming.alert_lifecycle import AlertScripts
from streaming.api.fanout import ChangeFeed
from streaming.api.operator.fleet import Fleet, Snapshot, build, fleet_of
from streaming.api.operator.resources import Operator
from streaming.change_feed import machines_entry
from streaming.consumers.live_state import machine_changes, machine_fields, summarise
from streaming.kafka.lifecycle import JsonLog
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

OFFLINE_MS = 30_000


def _batch(rows: list[tuple[str, str, float, int]], line: str = "line-a") -> pl.DataFrame:
    """Readings (machine, metric, value, kafka ts) as the state writer's batch frame."""
    return pl.DataFrame(
        {
            "machine_id": [r[0] for r in rows],
            "machine_type": ["PUMP"] * len(rows),
            "line_id": [line] * len(rows),
            "metric": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "ts": [r[3] - 5 for r in rows],
            "status_code": [len(r[0]) % 3 for r in rows],
            "kafka_partition": [0] * len(rows),
            "kafka_offset": list(range(len(rows))),
            "kafka_ts": [r[3] for r in rows],
        }
    )


def _entry(i: int, fields: dict[str, Any]) -> tuple[str, dict[bytes, bytes]]:
    return f"{1000 + i}-0", {
        k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()
    }


def _empty(now: int) -> Snapshot:
    raw = b'[[],[],"999-0"]'
    return asyncio.run(build(raw, now, OFFLINE_MS))


def test_machine_entries_give_the_hashes_the_writer_wrote() -> None:
    now = int(time.time() * 1000)
    snap = _empty(now)
    hashes: dict[str, dict[str, str]] = {}
    batches = [
        [
            ("p1", "temperature", 60.25, now),
            ("p1", "pressure", 1.0 / 3, now),
            ("p2", "rpm", 7e22, now),
        ],
        [("p1", "temperature", 61.0, now + 10), ("p3", "current", -0.0, now + 10)],
        [("p2", "rpm", 1500.0, now + 20), ("p2", "vibration", 2.5, now + 20)],
    ]
    statuses = ["ONLINE", "ANOMALY", "FAULT"]
    for i, rows in enumerate(batches):
        batch = summarise(_batch(rows))
        status = pl.DataFrame({"machine_id": batch.machines["machine_id"], "status": statuses[i]})
        for machine, mapping in machine_fields(batch, status).items():  # HSET, as the writer
            hashes.setdefault(machine, {}).update(mapping)
        feed = machines_entry(machine_changes(batch, status))
        assert snap.apply(_entry(i, feed), now + 30, OFFLINE_MS)
    # the OFFLINE sweep's entry: status only (its line may be unknown)
    hashes["p3"]["status"] = "OFFLINE"
    sweep = machines_entry(b'[{"machine_id": "p3", "line_id": null, "status": "OFFLINE"}]')
    assert snap.apply(_entry(9, sweep), now + 30, OFFLINE_MS)

    whole = _snapshot_of(hashes, now + 30)
    assert snap.by_id == whole.by_id
    assert snap.views == whole.views and [v["machine_id"] for v in snap.views] == ["p1", "p2", "p3"]
    assert {m: _no_partition(f) for m, f in snap.fields.items()} == {
        m: _no_partition(f) for m, f in whole.fields.items()
    }
    assert snap.by_id["p2"]["values"]["rpm"] == {"value": 1500.0, "ts": now + 15}
    assert snap.by_id["p3"]["status"] == "OFFLINE" and snap.by_id["p2"]["status"] == "FAULT"
    # a full read keeps the views of the machines whose hash did not change
    hashes["p2"]["rpm"] = "1.0"
    again = _snapshot_of(hashes, now + 40, previous=whole)
    assert again.by_id["p1"] is whole.by_id["p1"] and again.by_id["p2"] is not whole.by_id["p2"]
    assert again.by_id["p2"]["values"]["rpm"]["value"] == 1.0
    assert again.by_id == _snapshot_of(hashes, now + 40).by_id
    # an entry it holds already changes nothing; one it cannot apply says so
    before = dict(snap.by_id)
    held = machines_entry(b'[{"machine_id": "p1", "last_seen": 1, "values": {}}]')
    assert snap.apply(_entry(0, held), now, OFFLINE_MS) and snap.by_id == before
    unknown = machines_entry(b'[{"machine_id": "p9", "status": "OFFLINE"}]')
    assert not snap.apply(_entry(10, unknown), now, OFFLINE_MS)


def test_silence_turns_a_view_offline_on_read() -> None:
    now = int(time.time() * 1000)
    snap = _snapshot_of({"a": {"last_seen": str(now), "status": "ANOMALY"}}, now)
    snap.encoded["page"] = b"old"
    snap.turn_offline(now + OFFLINE_MS, OFFLINE_MS)
    assert snap.by_id["a"]["status"] == "ANOMALY" and snap.encoded
    snap.turn_offline(now + OFFLINE_MS + 1, OFFLINE_MS)
    assert snap.by_id["a"]["status"] == "OFFLINE" and not snap.encoded


def _no_partition(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != "partition"}


def _snapshot_of(
    hashes: dict[str, dict[str, str]], now: int, previous: Snapshot | None = None
) -> Snapshot:
    import orjson

    raw = orjson.dumps(
        [[[m, [x for kv in f.items() for x in kv]] for m, f in sorted(hashes.items())], [], "1-0"]
    )
    return asyncio.run(build(raw, now, OFFLINE_MS, previous=previous))


# -- the real stack -------------------------------------------------------------------------------


@pytest.mark.stack
def test_the_fleet_follows_the_feed_to_what_redis_holds(isolated: Settings, tmp_path: Path) -> None:
    """Readings through Kafka and the state writer, alerts opened, acknowledged and cleared: the
    snapshot the feed kept (no second full read) equals a full read of Redis."""
    devices = Devices(isolated)
    keys = RedisKeys(isolated.redis_prefix)
    rdb = redis.Redis.from_url(isolated.redis_url)
    scripts = AlertScripts(rdb, keys, isolated.change_feed_maxlen)

    def _open_alerts(machine: str) -> list[str]:
        return [
            k.decode()
            for k, v in rdb.hgetall(keys.alerts_active).items()
            if json.loads(v)["machine_id"] == machine
        ]

    async def scenario() -> None:
        op = await Operator.open(isolated)
        feed = ChangeFeed(
            aioredis.Redis.from_url(isolated.redis_url), keys.changes, JsonLog("test"), block_ms=50
        )
        op.feed = feed
        await feed.start()
        try:
            assert await feed.ready()
            fleet = fleet_of(op)
            fleet.max_age_ms = 10**9  # no safety net: the feed alone keeps it
            first = await fleet.snapshot()
            assert first.by_id == {} and fleet.reads == 1
            for seq in range(1, 6):
                hot = f"m{seq % 3}"
                devices.send(
                    *[
                        record(f"m{i}", seq * 10 + i, value=70.0 + seq, line=f"line-{i}")
                        for i in range(4)
                    ],
                    record(hot, seq * 10 + 9, "pressure", "bar", value=500.0),  # opens an alert
                )
                await _until(lambda m=hot: _open_alerts(m))
                for alert_id in _open_alerts(hot):
                    scripts.transition("ack", alert_id, int(time.time() * 1000), by="op")
                devices.send(record(hot, seq * 10 + 8, "pressure", "bar", value=5.0))  # clears it
                await _until(lambda m=hot: not _open_alerts(m))
            devices.send(record("m3", 98, "pressure", "bar", value=450.0))  # stays open
            await _until(lambda: _open_alerts("m3"))
            scripts.transition("ack", _open_alerts("m3")[0], int(time.time() * 1000), by="op")
            devices.send(record("m9", 99, value=42.0, line="line-9"))  # a new machine
            await _until(lambda: rdb.hget(keys.machine("m9"), "temperature") == b"42.0")
            last = rdb.xrevrange(keys.changes, count=1)[0][0].decode()
            await _until(lambda: feed.position == last)
            snap = await fleet.snapshot()
            assert fleet.reads == 1 and fleet.applied > 10 and snap is first
            whole = await Fleet(op, None).snapshot()  # a full read now
            assert snap.by_id == whole.by_id and snap.views == whole.views
            assert snap.alerts == whole.alerts and snap.open == whole.open
            assert {m: _no_partition(f) for m, f in snap.fields.items()} == {
                m: _no_partition(f) for m, f in whole.fields.items()
            }
            assert len(snap.by_id) == 5 and snap.by_id["m9"]["line"] == "line-9"
            assert [a["acknowledged"] for a in snap.alerts["m3"]] == [True]
            assert rdb.llen(keys.alerts_log) >= 17  # opened, acknowledged, cleared, 5 times; 1 open
        finally:
            await feed.stop()
            await feed.client.aclose()
            await op.close()

    with state_writer(isolated, tmp_path / "state.log"):
        asyncio.run(scenario())


async def _until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await asyncio.sleep(0.02)
