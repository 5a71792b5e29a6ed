"""The change feed's fan-out without servers: subscribers share each change (one object, its JSON
encoded once), and coalescing in one subscriber never alters what another one gets."""

from __future__ import annotations

import orjson

from streaming.api.fanout import ChangeFeed, Selection, Subscriber
from streaming.change_feed import machines_entry
from streaming.kafka.lifecycle import JsonLog


def entry(*machines: dict) -> dict[bytes, bytes]:
    fields = machines_entry(orjson.dumps(list(machines)))
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def change(machine: str, metric: str, value: float, ts: int, line: str = "line-a") -> dict:
    return {"machine_id": machine, "line_id": line, "values": {metric: {"value": value, "ts": ts}}}


def sent(sub: Subscriber) -> list[dict]:
    items, _ = sub.take()
    return [orjson.loads(i.json()) for i in items]


def test_subscribers_share_each_change_and_coalesce_on_their_own() -> None:
    feed = ChangeFeed(None, "changes", JsonLog("test"))  # type: ignore[arg-type]
    fast, slow, slow_too = Subscriber(Selection()), Subscriber(Selection()), Subscriber(Selection())
    line_b = Subscriber(Selection(machines=frozenset(), lines=frozenset({"line-b"})))
    for sub in (fast, slow, slow_too, line_b):
        feed.add(sub)
        sub.caught_up(feed.position)
    feed.dispatch([(b"1-0", entry(change("m1", "temperature", 70.0, 1)))])
    assert fast.pending.items["m:m1"] is slow.pending.items["m:m1"]  # shared, not copied
    first = sent(fast)
    assert first == [
        {
            "id": "1-0",
            "type": "machine",
            "data": change("m1", "temperature", 70.0, 1),
        }
    ]
    feed.dispatch(
        [
            (b"2-0", entry(change("m1", "vibration", 2.5, 2), change("m2", "rpm", 900.0, 2))),
            (b"3-0", entry(change("m2", "rpm", 950.0, 3, line="line-b"))),
        ]
    )
    # Two clients that fell behind alike share the merged change too (merged once).
    assert slow.pending.items["m:m1"] is slow_too.pending.items["m:m1"]
    assert slow.pending.items["m:m1"] is not fast.pending.items["m:m1"]
    # The slow client, which took nothing yet, gets m1 once with both metrics (merged) ...
    got = {c["data"]["machine_id"]: c for c in sent(slow)}
    assert got["m1"]["id"] == "2-0"
    assert got["m1"]["data"]["values"] == {
        "temperature": {"value": 70.0, "ts": 1},
        "vibration": {"value": 2.5, "ts": 2},
    }
    assert got["m2"]["id"] == "3-0" and got["m2"]["data"]["values"]["rpm"]["value"] == 950.0
    # ... while the fast one, which took the first change, gets only what came after it.
    after = {c["data"]["machine_id"]: c["data"]["values"] for c in sent(fast)}
    assert after == {
        "m1": {"vibration": {"value": 2.5, "ts": 2}},
        "m2": {"rpm": {"value": 950.0, "ts": 3}},
    }
    # The line subscriber saw only the change that named its line.
    assert [c["id"] for c in sent(line_b)] == ["3-0"]
    assert slow.position == fast.position == "3-0"
