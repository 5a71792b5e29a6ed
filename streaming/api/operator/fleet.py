"""The live state of the whole fleet, read from Redis once per change rather than once per request.

A snapshot is one Lua call: the machine index, every machine hash, the open alerts and the change
feed's last entry id (its *tag*), atomically. Every write of the state writer and every alert
transition appends to the change feed in the same transaction (streaming/change_feed.py), and the
API's one change-feed reader (`ChangeFeed`, streaming/api/fanout.py) follows the feed; so a
snapshot stays exact while the reader has seen no entry after its tag. It is read again when the
reader has, when a machine's silence crosses `OT_OFFLINE_AFTER_SECONDS` (the status turns OFFLINE
on read, before the writer's sweep), and at the latest after `MAX_AGE_S` (what changes without a
feed entry: a hash expiring after a day of silence, the index dropping such machines; and a
reader that is down or behind). Requests that arrive while a read is in flight share it.

Each snapshot keeps the machine views sorted by id, the open alerts per machine, and the encoded
answers it has served (a page of the list is encoded once per snapshot, not once per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from streaming.api.fanout import parse_id
from streaming.api.operator.params import now_ms, unavailable
from streaming.api.operator.resources import Operator
from streaming.events.model import Metric

MAX_AGE_S = 1.0
MAX_ENCODED = 256  # encoded answers kept per snapshot (distinct query strings)
_METRIC_ORDER = tuple(sorted(str(m) for m in Metric))
STATUSES = frozenset({"ONLINE", "OFFLINE", "ANOMALY", "FAULT"})

# Index, every hash, the open alerts and the feed's last id, in one call, as one JSON text:
# [[[id, [field, value, ...]], ...], [alert JSON, ...], last id]  (cjson encodes it in C; orjson
# decodes it in C). Empty tables encode as {} in cjson: the reader treats them as empty lists.
SNAPSHOT_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local machines = {}
for i = 1, #ids do
  machines[i] = {ids[i], redis.call('HGETALL', ARGV[1] .. ids[i])}
end
local alerts = redis.call('HVALS', KEYS[2])
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local tag = '0-0'
if #last > 0 then tag = last[1][1] end
return cjson.encode({machines, alerts, tag})
"""


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def machine_view(
    machine_id: str, fields: dict[str, str], now: int, offline_ms: int
) -> dict[str, Any]:
    """The answer for one machine hash: metadata, status (OFFLINE after silence) and values."""
    last_seen = _int(fields.get("last_seen"))
    status = fields.get("status", "ONLINE")
    if status not in STATUSES:
        status = "ONLINE"
    if last_seen is None or now - last_seen > offline_ms:
        status = "OFFLINE"
    values: dict[str, dict[str, Any]] = {}
    for name in _METRIC_ORDER:
        raw = fields.get(name)
        if raw is None:
            continue
        try:
            values[name] = {"value": float(raw), "ts": _int(fields.get(name + "_ts"))}
        except ValueError:
            continue
    return {
        "machine_id": machine_id,
        "type": fields.get("type"),
        "line": fields.get("line"),
        "status": status,
        "status_code": _int(fields.get("status_code")),
        "last_seen": last_seen,
        "values": values,
    }


def alerts_by_machine(docs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Open alert records per machine, oldest first (a record that does not decode is skipped)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        try:
            alert = orjson.loads(doc)
        except orjson.JSONDecodeError:
            continue
        if isinstance(alert, dict) and isinstance(alert.get("machine_id"), str):
            out.setdefault(alert["machine_id"], []).append(alert)
    for alerts in out.values():
        alerts.sort(key=lambda a: (a.get("opened_ms") or 0, str(a.get("alert_id"))))
    return out


@dataclass
class Snapshot:
    views: list[dict[str, Any]]  # sorted by machine id
    by_id: dict[str, dict[str, Any]]
    alerts: dict[str, list[dict[str, Any]]]
    tag: tuple[int, int]  # the change feed's last entry when read
    fresh_until_ms: int  # wall clock: the first OFFLINE flip, or MAX_AGE_S after the read
    fields: dict[str, dict[str, str]]  # each machine's hash as read (the stream's snapshot)
    alert_docs: list[str]  # the open alerts' records as read
    encoded: dict[Any, bytes] = field(default_factory=dict)


def build(raw: bytes, now: int, offline_ms: int, max_age_ms: int) -> Snapshot:
    machines, alert_docs, tag = orjson.loads(raw)
    views = []
    hashes = {}
    fresh_until = now + max_age_ms
    for machine, pairs in machines or ():
        if not pairs:  # an empty table: the hash expired, the index entry not yet swept
            continue
        hashes[machine] = dict(zip(pairs[::2], pairs[1::2], strict=True))
        view = machine_view(machine, hashes[machine], now, offline_ms)
        views.append(view)
        if view["status"] != "OFFLINE" and view["last_seen"] is not None:
            fresh_until = min(fresh_until, view["last_seen"] + offline_ms + 1)
    views.sort(key=lambda v: v["machine_id"])
    docs = list(alert_docs or ())
    return Snapshot(
        views=views,
        by_id={v["machine_id"]: v for v in views},
        alerts=alerts_by_machine(docs),
        tag=parse_id(tag),
        fresh_until_ms=fresh_until,
        fields=hashes,
        alert_docs=docs,
    )


class Fleet:
    """The current snapshot of one `Operator`, and the read that replaces it."""

    def __init__(self, op: Operator, position: Callable[[], str] | None) -> None:
        self.op = op
        self.position = position  # the change-feed reader's position (None: no reader)
        self.offline_ms = int(op.settings.offline_after_seconds * 1000)
        self.max_age_ms = int(MAX_AGE_S * 1000)
        self.current: Snapshot | None = None
        self.pending: asyncio.Future[Snapshot] | None = None
        self.reads = 0
        self._script = op.redis.register_script(SNAPSHOT_LUA)

    def fresh(self, snap: Snapshot) -> bool:
        if now_ms() >= snap.fresh_until_ms:
            return False
        if self.position is None:
            return False
        return parse_id(self.position()) <= snap.tag

    async def snapshot(self) -> Snapshot:
        snap = self.current
        if snap is not None and self.fresh(snap):
            return snap
        if self.pending is None or self.pending.done():
            self.pending = asyncio.ensure_future(self._read())
        return await asyncio.shield(self.pending)

    async def _read(self) -> Snapshot:
        k = self.op.keys
        try:
            raw = await self._script(
                keys=[k.machines, k.alerts_active, k.changes], args=[k.machine_prefix]
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable("redis", exc) from None
        snap = build(raw, now_ms(), self.offline_ms, self.max_age_ms)
        self.reads += 1
        self.current = snap
        return snap

    @staticmethod
    def encoded(snap: Snapshot, key: Any, render: Callable[[], Any]) -> bytes:
        """The answer `render` makes from `snap` for the request `key`, encoded once."""
        found = snap.encoded.get(key)
        if found is None:
            found = orjson.dumps(render())
            if len(snap.encoded) < MAX_ENCODED:
                snap.encoded[key] = found
        return found


def fleet_of(op: Operator) -> Fleet:
    found = op.shared.get("fleet")
    if found is None:
        feed = op.feed
        found = Fleet(op, (lambda: feed.position) if feed is not None else None)
        op.shared["fleet"] = found
    fleet: Fleet = found
    return fleet
