"""Fan-out of the change feed to WebSocket clients: ONE reader task per process follows the Redis
Stream (`XREAD BLOCK`) and hands each entry to the clients whose selection it matches.

A client never has an unbounded buffer: what waits for it is at most one change per machine (a
newer change merges into the one still waiting: fields, and values per metric) and its alert
events, queued one by one up to a backlog (1,000) and beyond it merged per alert (the newer record
replaces the older; a record carries every earlier transition's who and when). Changes that reach
the reader together (one XREAD) go out together, so a machine changed twice within one read is
sent once even to a fast client. A slow client gets the latest state, coalesced, at the pace it
can read, and costs memory bounded by what it watches.

Resuming: every frame says the feed position it covers (`last_id`); a client that reconnects with
it gets every entry after it from the stream (`XRANGE`, a page per frame, read at the client's
pace, not coalesced), then the live ones, with nothing lost in between (it is registered for live
entries before the range is read, and live entries are held back, coalesced, until the range is
sent). A position the stream no longer holds (trimmed) is a gap: the client gets a snapshot of the
current state instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streaming.change_feed import ALERT, MACHINE, MACHINES, merge_machine, split_machines
from streaming.kafka.lifecycle import JsonLog

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
START = "0-0"


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True, slots=True)
class Selection:
    """What a client watches: all machines (`machines` None and no `lines`), or the machines
    listed and those of the lines listed; their state changes (`states`) and/or alert events."""

    machines: frozenset[str] | None = None
    lines: frozenset[str] = frozenset()
    states: bool = True
    alerts: bool = True

    @property
    def everything(self) -> bool:
        return self.machines is None and not self.lines

    def matches(self, kind: str, machine: str, line: str) -> bool:
        if kind == MACHINE:
            if not self.states:
                return False
        elif kind != ALERT or not self.alerts:
            return False
        if self.everything:
            return True
        return (self.machines is not None and machine in self.machines) or line in self.lines

    def describe(self) -> dict[str, Any]:
        return {
            "machines": "*" if self.machines is None else sorted(self.machines),
            "lines": sorted(self.lines),
            "states": self.states,
            "alerts": self.alerts,
        }


@dataclass(slots=True)
class Item:
    """One change waiting for clients: the feed entry id, kind, coalescing key, payload. Never
    changed once made: every subscriber the change matches shares it (and its JSON, encoded
    once); a merge makes a new one."""

    id: str
    kind: str
    key: str
    payload: bytes
    encoded: bytes | None = None
    # The merges of this change into older ones, by the older one's identity: subscribers that
    # fell behind alike hold the same older Item, and the merge is made once for all of them.
    merges: dict[int, tuple[Item, Item]] | None = None

    def merged_into(self, older: Item) -> Item:
        """This change on top of `older` (same coalescing key), as a new Item."""
        if self.merges is None:
            self.merges = {}
        found = self.merges.get(id(older))
        if found is not None and found[0] is older:
            return found[1]
        payload = self.payload
        if self.kind == MACHINE:
            payload = merge_machine(older.payload, self.payload)
        merged = Item(self.id, self.kind, self.key, payload)
        self.merges[id(older)] = (older, merged)  # keeps `older` alive: its id stays unique
        return merged

    def json(self) -> bytes:
        if self.encoded is None:
            self.encoded = b'{"id":"%s","type":"%s","data":%s}' % (
                self.id.encode(),
                self.kind.encode(),
                self.payload,
            )
        return self.encoded


def items_of(entry_id: str, fields: dict[bytes, bytes]) -> list[tuple[Item, str, str]]:
    """A feed entry as Items (one per machine of a `machines` entry), with machine and line."""
    kind = _text(fields.get(b"t", b""))
    payload = fields.get(b"d", b"{}")
    if kind == MACHINES:
        return [
            (Item(entry_id, MACHINE, f"m:{machine}", doc), machine, line)
            for machine, line, doc in split_machines(payload)
        ]
    machine = _text(fields.get(b"m", b""))
    line = _text(fields.get(b"l", b""))
    key = f"a:{_text(fields.get(b'a', b''))}"
    return [(Item(entry_id, kind, key, payload), machine, line)]


class Waiting:
    """Changes waiting for one client, in the order they came (the oldest first). Machine changes
    merge per machine; alert events queue one by one up to `alert_backlog` waiting, beyond which
    they merge per alert (its latest record)."""

    def __init__(self, alert_backlog: int) -> None:
        self.items: dict[str, Item] = {}
        self.alerts = 0
        self.alert_backlog = alert_backlog

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Item) -> bool:
        """Returns whether the item merged into one already waiting."""
        key = item.key
        if item.kind == ALERT and self.alerts < self.alert_backlog:
            key = f"{key}@{item.id}"  # queued, not merged
        waiting = self.items.get(key)
        if waiting is None:
            self.items[key] = item
            self.alerts += item.kind == ALERT
            return False
        self.items[key] = item.merged_into(waiting)  # keeps its place
        return True


class Subscriber:
    """One client's waiting changes, bounded: per machine, and per alert beyond a backlog."""

    def __init__(self, selection: Selection, alert_backlog: int = 1000) -> None:
        self.selection = selection
        self.alert_backlog = alert_backlog
        self.pending = Waiting(alert_backlog)
        self.held: Waiting | None = None  # live changes while a resume replays the range
        self.position = START  # the feed position the changes taken so far cover
        self.wake = asyncio.Event()
        self.offered = 0
        self.coalesced = 0
        self.max_waiting = 0

    def offer(self, item: Item) -> None:
        self.offered += 1
        target = self.held if self.held is not None else self.pending
        if target.add(item):
            self.coalesced += 1
        self.max_waiting = max(self.max_waiting, len(target))
        if target is self.pending:
            self.wake.set()

    def hold(self) -> None:
        self.held = Waiting(self.alert_backlog)

    def caught_up(self, position: str) -> None:
        """The replay is sent: held live changes (newer) go on top, live from now on."""
        held, self.held = self.held, None
        for item in (held.items if held is not None else {}).values():
            if self.pending.add(item):
                self.coalesced += 1
        self.position = max(self.position, position, key=parse_id)
        self.wake.set()

    def take(self) -> tuple[list[Item], str]:
        items = list(self.pending.items.values())
        self.pending = Waiting(self.alert_backlog)
        return items, self.position


class ChangeFeed:
    """The one reader of the change feed in this process, and its subscribers."""

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        log: JsonLog,
        *,
        block_ms: int = 1000,
        count: int = 2000,
    ) -> None:
        self.client: Any = client  # redis-py's stream result types are too loose to use
        self.key = key
        self.log = log
        self.block_ms = block_ms
        self.count = count
        self.position = START
        self.subscribers: set[Subscriber] = set()
        # Called with every batch of entries read, in order, before the position moves past
        # them (the fleet snapshot of the REST routes follows the feed this way).
        self.watchers: list[Callable[[Sequence[tuple[str, Mapping[bytes, bytes]]]], None]] = []
        self.entries = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the reader task ------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def following(self) -> bool:
        """Whether the reader has its starting position: every entry after it will be read."""
        return self._ready.is_set()

    def watch(self, watcher: Callable[[Sequence[tuple[str, Mapping[bytes, bytes]]]], None]) -> None:
        self.watchers.append(watcher)

    async def ready(self, timeout_s: float = 5.0) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self._ready.is_set()

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                if not self._ready.is_set():
                    last = await self.client.xrevrange(self.key, "+", "-", count=1)
                    self.position = _text(last[0][0]) if last else START
                    self._ready.set()
                answer = await self.client.xread(
                    {self.key: self.position}, count=self.count, block=self.block_ms
                )
                if failing:
                    self.log("change_feed_resumed", position=self.position)
                    failing = False
            except RedisError as exc:
                if not failing:
                    self.log("change_feed_unavailable", error=str(exc)[:200])
                    failing = True
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in answer or ():
                self.dispatch(entries)

    def dispatch(self, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> None:
        read = [(_text(raw_id), fields) for raw_id, fields in entries]
        for watcher in self.watchers:
            try:
                watcher(read)
            except Exception as exc:  # a watcher's bug must not stop the feed for the others
                self.log("change_feed_watcher_failed", error=repr(exc)[:200])
        subscribers = list(self.subscribers)
        last = self.position
        for last, fields in read:
            self.entries += 1
            if not subscribers:
                continue
            for item, machine, line in items_of(last, fields):
                for sub in subscribers:
                    if sub.selection.matches(item.kind, machine, line):
                        sub.offer(item)
        self.position = last
        for sub in subscribers:
            if sub.held is None:
                sub.position = last

    # -- subscribing ----------------------------------------------------------------------------
    def add(self, sub: Subscriber) -> str:
        """Register for live entries (held until `caught_up`); returns the position from which
        they count."""
        sub.hold()
        sub.position = self.position
        self.subscribers.add(sub)
        return self.position

    def remove(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def covers(self, since: str) -> bool:
        """Whether every entry after `since` is still in the stream."""
        if since == self.position:
            return True
        try:
            info = await self.client.xinfo_stream(self.key)
        except RedisError:  # no stream yet: nothing was ever written, nothing was trimmed
            return since == START
        first = info.get("recorded-first-entry-id") or (info.get("first-entry") or [b"0-0"])[0]
        trimmed = int(info.get("entries-added", 0)) > int(info.get("length", 0))
        return not trimmed or parse_id(since) >= parse_id(_text(first))

    async def replay(
        self, selection: Selection, since: str, until: str, page: int = 1000
    ) -> AsyncIterator[tuple[list[Item], str]]:
        """The entries in (since, until] that `selection` matches, a page at a time, each with
        the position it covers; read at the pace the caller consumes them, never coalesced."""
        if parse_id(since) >= parse_id(until):
            return
        start = f"({since}"
        while True:
            entries = await self.client.xrange(self.key, start, until, count=page)
            if not entries:
                return
            items = []
            for raw_id, fields in entries:
                for item, machine, line in items_of(_text(raw_id), fields):
                    if selection.matches(item.kind, machine, line):
                        items.append(item)
            last = _text(entries[-1][0])
            yield items, last
            if len(entries) < page:
                return
            start = f"({last}"
