"""Operator API: the live stream, WebSocket `/api/v1/stream` (protocol in docs/api.md).

A client subscribes to all machines, some lines and/or a list of machine ids, to their state
changes and/or their alert events; it gets a snapshot of the current state (or, when it resumes
with `since`, everything after that position), then frames of changes as the state writer commits
them. The changes come from the process's one change-feed reader (streaming/api/fanout.py).

Authentication: the `read` role, with the key in the `key` query parameter (or an `X-API-Key`
header, for clients that can set one), or in the first message, since browsers cannot set headers
on a WebSocket. A subscription in the query string starts at once; without any query parameter
the server waits for a first `subscribe` message. Errors before the handshake completes are
answered as HTTP problem+json; after it, as an `error` frame (`{"type": "error", "problem":
{...}}`) and a close code of 4000 + the HTTP status (4401, 4403, 4408, 4422, 4503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError

from streaming.alert_lifecycle import decode_record
from streaming.api.auth import authenticate
from streaming.api.fanout import STREAM_ID, ChangeFeed, Item, Selection, Subscriber, parse_id
from streaming.api.keys import ApiKey, KeyRing, Role
from streaming.api.operator.fleet import Snapshot, fleet_of
from streaming.api.problems import Problem
from streaming.change_feed import ALERT, MACHINE, machine_from_hash
from streaming.events.model import MACHINE_ID_RE
from streaming.kafka.lifecycle import JsonLog

router = APIRouter(prefix="/api/v1", tags=["stream"])

FIRST_MESSAGE_TIMEOUT_S = 10.0
HEARTBEAT_S = 15.0
MAX_IDS = 10_000
QUERY_FIELDS = frozenset({"key", "machines", "lines", "alerts", "states", "since"})


class StreamRequest:
    """A parsed subscription: the selection and where to start."""

    def __init__(self, selection: Selection, since: str | None) -> None:
        self.selection = selection
        self.since = since


def _invalid(detail: str) -> Problem:
    return Problem(422, "invalid-subscription", detail)


def _names(value: Any, field: str) -> frozenset[str] | None:
    """`*` -> None (all); a comma-separated string or a list of names -> the set."""
    if value is None:
        return frozenset()
    if value == "*":
        return None
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = value
    else:
        raise _invalid(f"{field} must be '*', a list of names or a comma-separated string")
    if len(names) > MAX_IDS:
        raise _invalid(f"{field}: at most {MAX_IDS} names")
    if field == "machines":
        bad = [n for n in names if not MACHINE_ID_RE.match(n)]
        if bad:
            raise _invalid(f"machines: {bad[:5]} are not machine ids")
    return frozenset(names)


def _flag(value: Any, field: str) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise _invalid(f"{field} must be true or false")


def parse_subscription(source: Mapping[str, Any]) -> StreamRequest:
    """From the query string or a `subscribe` message: machines, lines, states, alerts, since.
    Neither machines nor lines: every machine."""
    machines = _names(source.get("machines"), "machines")
    lines = _names(source.get("lines"), "lines")
    if lines is None:  # `lines=*` means every line: every machine
        machines, lines = None, frozenset()
    if machines is not None and not machines and not lines:
        machines = None
    since = source.get("since")
    if since is not None and (not isinstance(since, str) or not STREAM_ID.match(since)):
        raise _invalid("since must be a change id as the stream gave it (e.g. 1717171717171-0)")
    selection = Selection(
        machines=machines,
        lines=lines,
        states=_flag(source.get("states"), "states"),
        alerts=_flag(source.get("alerts"), "alerts"),
    )
    if not selection.states and not selection.alerts:
        raise _invalid("states and alerts are both false: nothing to send")
    return StreamRequest(selection, since or None)


async def _fail(ws: WebSocket, problem: Problem) -> None:
    """An error after the handshake: an `error` frame, then close with 4000 + status."""
    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps({"type": "error", "problem": problem.body(ws.url.path)}))
        await ws.close(code=4000 + problem.status, reason=problem.kind[:120])


async def _deny(ws: WebSocket, problem: Problem) -> None:
    """An error before the handshake: the HTTP problem+json answer itself."""
    try:
        await ws.send_denial_response(problem.response(ws.url.path))
    except RuntimeError:  # a server without the denial-response extension
        await ws.accept()
        await _fail(ws, problem)


def snapshot(
    fleet: Snapshot, selection: Selection
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The current state of what `selection` watches: machines (from their hashes) and active
    alerts (their records), from the fleet snapshot the REST routes share (one Redis read for
    every client subscribing at the same time; it holds every change up to the feed position
    the client's live changes start from)."""
    machines = []
    if selection.states:
        for machine in sorted(fleet.fields):
            fields: Mapping[Any, Any] = fleet.fields[machine]
            state = machine_from_hash(machine, fields)
            if selection.matches(MACHINE, machine, state.get("line_id", "")):
                machines.append(state)
    alerts = []
    if selection.alerts:
        for raw in fleet.alert_docs:
            record = decode_record(raw)
            machine, line = record.get("machine_id") or "", record.get("line_id") or ""
            if selection.matches(ALERT, machine, line):
                alerts.append(record)
    return machines, alerts


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    state = ws.app.state
    ring: KeyRing = state.keyring
    anonymous: bool = state.anonymous_read
    params = dict(ws.query_params)
    header_key = ws.headers.get("x-api-key")
    if header_key or QUERY_FIELDS & params.keys():
        try:
            key = authenticate(
                ring, params.get("key") or header_key, Role.READ, anonymous_read=anonymous
            )
            request = parse_subscription(params)
        except Problem as problem:
            await _deny(ws, problem)
            return
        await ws.accept()
    else:
        await ws.accept()
        try:
            text = await asyncio.wait_for(ws.receive_text(), FIRST_MESSAGE_TIMEOUT_S)
        except TimeoutError:
            await _fail(
                ws,
                Problem(
                    408,
                    "no-subscription",
                    f"no subscribe message within {FIRST_MESSAGE_TIMEOUT_S:.0f} s "
                    "(or give the subscription in the query string)",
                ),
            )
            return
        except KeyError:  # a binary message
            await _fail(ws, _invalid("the first message must be JSON text"))
            return
        except (WebSocketDisconnect, RuntimeError):
            return
        try:
            message = json.loads(text)
            if not isinstance(message, dict) or message.get("type") != "subscribe":
                raise _invalid('the first message must be {"type": "subscribe", ...}')
            presented = message.get("key")
            if presented is not None and not isinstance(presented, str):
                raise _invalid("key must be a string")
            key = authenticate(ring, presented, Role.READ, anonymous_read=anonymous)
            request = parse_subscription(message)
        except json.JSONDecodeError:
            await _fail(ws, _invalid("the first message is not JSON"))
            return
        except Problem as problem:
            await _fail(ws, problem)
            return
    await serve(ws, request, key)


async def serve(ws: WebSocket, request: StreamRequest, key: ApiKey) -> None:
    feed: ChangeFeed = ws.app.state.feed
    log: JsonLog = ws.app.state.log
    if not await feed.ready(timeout_s=5.0):
        await _fail(ws, Problem(503, "redis-unavailable", "the change feed cannot be read"))
        return
    sub = Subscriber(request.selection)
    position = feed.add(sub)
    frames = 0
    try:
        await ws.send_text(
            json.dumps(
                {
                    "type": "subscribed",
                    "key": key.name,
                    "subscription": request.selection.describe(),
                    "last_id": position,
                }
            )
        )
        since = request.since
        resumable = (
            since is not None and parse_id(since) <= parse_id(position) and await feed.covers(since)
        )
        if resumable and since is not None:
            async for items, covered in feed.replay(request.selection, since, position):
                await ws.send_text(changes_frame(items, covered))
                frames += 1
        else:
            fleet = await fleet_of(ws.app.state.operator).snapshot()
            machines, alerts = snapshot(fleet, request.selection)
            reason = "initial" if since is None else "gap"
            frame = {
                "type": "snapshot",
                "reason": reason,
                "last_id": position,
                "machines": machines,
                "alerts": alerts,
            }
            await ws.send_text(json.dumps(frame))
        sub.caught_up(position)
        frames += await _pump(ws, sub)
    except RedisError as exc:
        await _fail(ws, Problem(503, "redis-unavailable", f"Redis: {type(exc).__name__}"))
    except Problem as problem:  # the snapshot could not be read
        await _fail(ws, problem)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        feed.remove(sub)
        log(
            "stream_closed",
            key=key.name,
            offered=sub.offered,
            coalesced=sub.coalesced,
            max_waiting=sub.max_waiting,
            frames=frames,
        )


def changes_frame(items: list[Item], position: str) -> str:
    body = b",".join(item.json() for item in items).decode()
    return f'{{"type":"changes","last_id":"{position}","changes":[{body}]}}'


async def _pump(ws: WebSocket, sub: Subscriber) -> int:
    """Send the waiting changes whenever there are some (one frame each time, everything that
    waits), a heartbeat when there were none for a while; until the client goes."""
    frames = 0

    async def send() -> None:
        nonlocal frames
        while True:
            try:
                await asyncio.wait_for(sub.wake.wait(), HEARTBEAT_S)
            except TimeoutError:
                await ws.send_text(f'{{"type":"heartbeat","last_id":"{sub.position}"}}')
                continue
            sub.wake.clear()
            items, position = sub.take()
            if not items:
                continue
            await ws.send_text(changes_frame(items, position))
            frames += 1

    async def receive() -> None:
        while True:  # the client sends nothing we need; this notices it going away
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return

    tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return frames
