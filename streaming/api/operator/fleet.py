"""The live state of the whole fleet, held in memory and kept up to date per change from the change
feed, so that a request never waits for Redis.

Every write of the state writer and every alert transition appends to the change feed in the same
transaction (streaming/change_feed.py), and the entry carries what changed: a `machines` entry
each changed machine's fields (applied in order they give its hash), an `alert` entry the alert's
record after the event (the record `{p}alerts:active` holds, or none once it is cleared). The
API's one change-feed reader (`ChangeFeed`, streaming/api/fanout.py) hands every entry to the
fleet as it reads it, before its position moves, and the fleet applies it to the snapshot: the
changed machines' fields and views, the alert into or out of the open ones. So the snapshot holds
every change up to the reader's position at any time, and a request reads it as it is: one
machine is a lookup, a list page is encoded once per change of the fleet (not per request).

A full read is one Lua call: the machine index, every machine hash, the open alerts and the feed's
last entry id (its *tag*), atomically. It makes the first snapshot and is the safety net for what
changes without a feed entry (a hash expiring after a day of silence, the index dropping such
machines; a feed trimmed under a reader that fell that far behind): a request that finds the
snapshot's full read half `MAX_AGE_S` old starts the next one in the background and is answered
from the current snapshot. The new one is built in slices that yield to the event loop (a machine
whose hash did not change keeps its view), the entries read meanwhile are applied on top of it
(those after its tag), and it replaces the current one in one step. A machine whose silence
crosses `OT_OFFLINE_AFTER_SECONDS` turns OFFLINE on read (its view is made again, no Redis read).

Requests wait for a full read (and share it) only when there is no snapshot to follow the feed
with: before the first one, without a reader that follows the feed, after an entry the fleet
cannot apply, after a background read failed (Redis down: they get 503 as before), or when the
last full read is `MAX_AGE_S` old (no request for that long). So an answer holds every change up
to the feed position the reader has reached, and what changed without an entry after at most
`MAX_AGE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from streaming.api.fanout import ChangeFeed, parse_id
from streaming.api.operator.params import now_ms, unavailable
from streaming.api.operator.resources import Operator
from streaming.events.model import Metric

# The safety net: a full read starts in the background once the snapshot's is MAX_AGE_S / 2
# old, and a request waits for one when it is MAX_AGE_S old (no request for that long).
MAX_AGE_S = 1.0
MAX_ENCODED = 256  # encoded answers kept per version of the snapshot (distinct query strings)
BUILD_SLICE = 100  # machine views a full read builds before it yields to the event loop
_METRIC_ORDER = tuple(sorted(str(m) for m in Metric))
_METRICS = frozenset(_METRIC_ORDER)
STATUSES = frozenset({"ONLINE", "OFFLINE", "ANOMALY", "FAULT"})
_NEVER = 2**62

# Index, every hash, the open alerts and the feed's last id, in one call, as one JSON text:
# [[[id, [field, value, ...]], ...], [[alert id, alert JSON], ...], last id]  (cjson encodes it
# in C; orjson decodes it in C). Empty tables encode as {} in cjson: read as empty lists.
SNAPSHOT_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local machines = {}
for i = 1, #ids do
  machines[i] = {ids[i], redis.call('HGETALL', ARGV[1] .. ids[i])}
end
local all = redis.call('HGETALL', KEYS[2])
local alerts = {}
for i = 1, #all, 2 do alerts[#alerts + 1] = {all[i], all[i + 1]} end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local tag = '0-0'
if #last > 0 then tag = last[1][1] end
return cjson.encode({machines, alerts, tag})
"""

Entry = tuple[str, Mapping[bytes, bytes]]  # a change-feed entry: its id and its fields


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def machine_view(
    machine_id: str, fields: Mapping[str, str], now: int, offline_ms: int
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


def _opened_order(alert: Mapping[str, Any]) -> tuple[int, str]:
    return alert.get("opened_ms") or 0, str(alert.get("alert_id"))


def _decoded(doc: str) -> dict[str, Any] | None:
    try:
        alert = orjson.loads(doc)
    except orjson.JSONDecodeError:
        return None
    return alert if isinstance(alert, dict) else None


def alerts_by_machine(docs: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Open alert records per machine, oldest first (a record that does not decode is skipped)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        alert = _decoded(doc)
        if alert is not None and isinstance(alert.get("machine_id"), str):
            out.setdefault(alert["machine_id"], []).append(alert)
    for alerts in out.values():
        alerts.sort(key=_opened_order)
    return out


def hash_update(fields: dict[str, str], change: Mapping[str, Any]) -> None:
    """A machine payload of the feed applied to the machine's hash fields, as the state writer
    wrote them in the same transaction (streaming/consumers/live_state.py)."""
    for key, name in (("machine_type", "type"), ("line_id", "line"), ("status", "status")):
        value = change.get(key)
        if value is not None:  # the OFFLINE sweep's entry names the line it may not know
            fields[name] = str(value)
    for name in ("status_code", "last_seen"):
        if name in change:
            fields[name] = str(change[name])
    for metric, reading in (change.get("values") or {}).items():
        fields[metric] = repr(float(reading["value"]))
        fields[metric + "_ts"] = str(reading["ts"])


@dataclass
class Snapshot:
    """The fleet at one feed position (`tag`); the fleet changes it in place as the feed moves."""

    by_id: dict[str, dict[str, Any]]  # each machine's view
    fields: dict[str, dict[str, str]]  # each machine's hash (the stream's snapshot)
    open: dict[str, str]  # the open alerts: id -> record (JSON), as `{p}alerts:active` holds it
    alerts: dict[str, list[dict[str, Any]]]  # the open alert records per machine, oldest first
    tag: tuple[int, int]  # the change feed's last entry it holds
    read_ms: int  # wall clock of the full read it comes from
    offline_check_ms: int  # wall clock: the first time a view may turn OFFLINE by silence
    encoded: dict[Any, bytes] = field(default_factory=dict)  # answers of this version
    _views: list[dict[str, Any]] | None = None

    @property
    def views(self) -> list[dict[str, Any]]:
        """The machine views sorted by id."""
        if self._views is None:
            self._views = [self.by_id[m] for m in sorted(self.by_id)]
        return self._views

    @property
    def alert_docs(self) -> list[str]:
        return list(self.open.values())

    def _changed(self) -> None:
        self._views = None
        self.encoded.clear()

    def set_view(self, machine: str, now: int, offline_ms: int) -> None:
        """The view of `machine` made again from its fields."""
        self.put_view(
            machine, machine_view(machine, self.fields[machine], now, offline_ms), offline_ms
        )

    def put_view(self, machine: str, view: dict[str, Any], offline_ms: int) -> None:
        self.by_id[machine] = view
        if view["status"] != "OFFLINE" and view["last_seen"] is not None:
            self.offline_check_ms = min(self.offline_check_ms, view["last_seen"] + offline_ms + 1)
        self._changed()

    def turn_offline(self, now: int, offline_ms: int) -> None:
        """The views of machines whose silence crossed the limit since they were made."""
        if now < self.offline_check_ms:
            return
        self.offline_check_ms = _NEVER
        for machine, view in list(self.by_id.items()):
            if view["status"] == "OFFLINE":
                continue
            last_seen = view["last_seen"]
            if last_seen is None or now - last_seen > offline_ms:
                self.set_view(machine, now, offline_ms)
            else:
                self.offline_check_ms = min(self.offline_check_ms, last_seen + offline_ms + 1)

    def apply(self, entry: Entry, now: int, offline_ms: int) -> bool:
        """One feed entry (ignored if the snapshot holds it already). False: it could not be
        applied (the snapshot no longer says what Redis holds)."""
        position = parse_id(entry[0])
        if position <= self.tag:
            return True
        self.tag = position
        fields = entry[1]
        kind = fields.get(b"t", b"")
        raw = fields.get(b"d", b"")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return False
        if kind == b"machines":
            return isinstance(doc, list) and all(
                [self._machine(change, now, offline_ms) for change in doc]
            )
        if kind == b"alert":
            alert_id = fields.get(b"a", b"").decode()
            return isinstance(doc, dict) and bool(alert_id) and self._alert(alert_id, raw, doc)
        return False

    def _machine(self, change: Any, now: int, offline_ms: int) -> bool:
        machine = change.get("machine_id") if isinstance(change, dict) else None
        if not isinstance(machine, str):
            return False
        fields = self.fields.get(machine)
        if fields is None:
            if "last_seen" not in change:  # not a batch's write: Redis knows the rest
                return False
            fields = self.fields[machine] = {}
        try:
            hash_update(fields, change)
        except (KeyError, TypeError, ValueError):
            return False
        self.set_view(machine, now, offline_ms)
        return True

    def _alert(self, alert_id: str, raw: bytes, record: dict[str, Any]) -> bool:
        machines = set()
        old = self.open.pop(alert_id, None)
        if old is not None:
            machines.add((_decoded(old) or {}).get("machine_id"))
        if record.get("cleared_ms") is None:  # cleared: the scripts moved it out of the open ones
            self.open[alert_id] = raw.decode()
            machines.add(record.get("machine_id"))
        for machine in machines:
            if not isinstance(machine, str):
                continue
            mine = [a for a in self.alerts.get(machine, ()) if a.get("alert_id") != alert_id]
            if alert_id in self.open and record.get("machine_id") == machine:
                mine.append(record)
            mine.sort(key=_opened_order)
            if mine:
                self.alerts[machine] = mine
            else:
                self.alerts.pop(machine, None)
        return True


async def build(
    raw: bytes,
    now: int,
    offline_ms: int,
    pause: Callable[[], Awaitable[None]] | None = None,
    previous: Snapshot | None = None,
) -> Snapshot:
    """A snapshot from the full read's answer; `pause` is awaited every `BUILD_SLICE` machines
    (lets the event loop serve requests in between). A machine whose hash equals what `previous`
    holds keeps its view from it (views are replaced, never changed in place)."""
    machines, alerts, tag = orjson.loads(raw)
    snap = Snapshot(
        by_id={},
        fields={},
        open={alert_id: doc for alert_id, doc in alerts or ()},
        alerts={},
        tag=parse_id(tag),
        read_ms=now,
        offline_check_ms=_NEVER,
    )
    snap.alerts = alerts_by_machine(snap.open.values())
    for i, (machine, pairs) in enumerate(machines or ()):
        if pause is not None and i and i % BUILD_SLICE == 0:
            await pause()
        if not pairs:  # an empty table: the hash expired, the index entry not yet swept
            continue
        fields = snap.fields[machine] = dict(zip(pairs[::2], pairs[1::2], strict=True))
        view = previous.by_id.get(machine) if previous is not None else None
        if view is None or previous is None or previous.fields.get(machine) != fields:
            view = machine_view(machine, fields, now, offline_ms)
        snap.put_view(machine, view, offline_ms)
    snap.turn_offline(now, offline_ms)  # the views it kept were made at an earlier time
    return snap


async def _yield() -> None:
    await asyncio.sleep(0)


class Fleet:
    """The current snapshot of one `Operator`, the feed entries that keep it current, and the
    full read that makes or replaces it."""

    def __init__(self, op: Operator, feed: ChangeFeed | None) -> None:
        self.op = op
        self.feed = feed
        self.offline_ms = int(op.settings.offline_after_seconds * 1000)
        self.max_age_ms = int(MAX_AGE_S * 1000)
        self.current: Snapshot | None = None  # None: requests wait for a full read
        self.pending: asyncio.Future[Snapshot] | None = None  # the full read in flight
        self.backlog: list[Entry] | None = None  # entries read while it is in flight
        self.reads = 0
        self.applied = 0
        self._script = op.redis.register_script(SNAPSHOT_LUA)
        if feed is not None:
            feed.watch(self.follow)

    def follow(self, entries: Sequence[Entry]) -> None:
        """The entries the change-feed reader just read, in order (called before it moves)."""
        if self.backlog is not None:
            self.backlog.extend(entries)
        snap = self.current
        if snap is None:
            return
        now = now_ms()
        try:
            for entry in entries:
                if not snap.apply(entry, now, self.offline_ms):
                    self.current = None  # the next request waits for a full read
                    return
                self.applied += 1
        except Exception:
            self.current = None
            raise

    async def snapshot(self) -> Snapshot:
        snap = self.current
        now = now_ms()
        if snap is not None and now - snap.read_ms < self.max_age_ms:
            if now - snap.read_ms >= self.max_age_ms // 2 and not self._reading():
                self._start_read().add_done_callback(_retrieved)  # the safety net, not awaited
            snap.turn_offline(now, self.offline_ms)
            return snap
        if not self._reading():
            self._start_read()
        assert self.pending is not None
        return await asyncio.shield(self.pending)

    def _reading(self) -> bool:
        return self.pending is not None and not self.pending.done()

    def _start_read(self) -> asyncio.Future[Snapshot]:
        self.pending = asyncio.ensure_future(self._read())
        return self.pending

    async def _read(self) -> Snapshot:
        following = self.feed is not None and self.feed.following
        if following:
            self.backlog = []  # every entry after the read's tag is read from now on
        try:
            k = self.op.keys
            try:
                raw = await self._script(
                    keys=[k.machines, k.alerts_active, k.changes], args=[k.machine_prefix]
                )
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.current = None
                raise unavailable("redis", exc) from None
            pause = _yield if following else None
            snap = await build(raw, now_ms(), self.offline_ms, pause, self.current)
            self.reads += 1
            if following:
                now = now_ms()
                complete = all(snap.apply(e, now, self.offline_ms) for e in self.backlog or ())
                self.current = snap if complete else None
            return snap
        finally:
            self.backlog = None

    @staticmethod
    def encoded(snap: Snapshot, key: Any, render: Callable[[], Any]) -> bytes:
        """The answer `render` makes from `snap` for the request `key`, encoded once per version
        of the snapshot."""
        found = snap.encoded.get(key)
        if found is None:
            found = orjson.dumps(render())
            if len(snap.encoded) < MAX_ENCODED:
                snap.encoded[key] = found
        return found


def _retrieved(done: asyncio.Future[Snapshot]) -> None:
    """A background read's failure is not lost in a warning: the next request reads again."""
    if not done.cancelled():
        with contextlib.suppress(Exception):
            done.exception()


def fleet_of(op: Operator) -> Fleet:
    found = op.shared.get("fleet")
    if found is None:
        found = Fleet(op, op.feed)
        op.shared["fleet"] = found
    fleet: Fleet = found
    return fleet
