"""A direct path for the two reads that dashboards repeat hundreds of times a second:
`GET /api/v1/machines` and `GET /api/v1/machines/{id}`, answered from the fleet snapshot.

The FastAPI route of such a request costs several times more CPU than the answer itself
(routing through every route, dependency solving, parameter validation): at 500 requests/s that
was half a core. This ASGI middleware answers the plain, valid, authorized form of those two
requests itself with the very bytes the routes would send (the same functions of machines.py
make them), and hands every other request to the app untouched: anything it does not recognise
(another path or method, a parameter it would have to judge, a missing, unknown or
under-privileged key, a machine outside the snapshot, Redis failing) goes to the routes, which
answer it, errors included, as documented. It sits inside the request log and CORS middleware,
so those apply to its answers too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from streaming.api.auth import ANONYMOUS
from streaming.api.keys import KeyRing, Role
from streaming.api.operator.fleet import fleet_of
from streaming.api.operator.machines import MachineSort, Status, detail, list_body
from streaming.api.operator.params import DEFAULT_LIMIT, LINE_ID, MACHINE_ID, MAX_LIMIT
from streaming.api.problems import Problem
from streaming.events.model import MachineType

LIST_PATH = "/api/v1/machines"
ONE_PREFIX = LIST_PATH + "/"
_MACHINE = re.compile(MACHINE_ID)
_LINE = re.compile(LINE_ID)
_LIMIT = re.compile(r"^[1-9][0-9]{0,3}$")
_SORTS = {s.value: s for s in MachineSort}
_TYPES = {t.value: t for t in MachineType}
_STATUSES = {s.value: s for s in Status}
_HEADERS = [(b"content-type", b"application/json")]


class FastReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = None
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(LIST_PATH)
        ):
            body = await self.answer(scope)
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def answer(self, scope: Scope) -> bytes | None:
        state = scope["app"].state
        op = getattr(state, "operator", None)
        if op is None or not self.authorized(scope, state):
            return None
        path: str = scope["path"]
        try:
            if path == LIST_PATH:
                query = _list_query(scope["query_string"])
                if query is None:
                    return None
                return await list_body(op, **query)
            machine = path[len(ONE_PREFIX) :]
            if not path.startswith(ONE_PREFIX) or not _MACHINE.match(machine):
                return None
            snap = await fleet_of(op).snapshot()
            view = snap.by_id.get(machine)
            if view is None:
                return None
            return _encode(detail(view, snap.alerts.get(machine, [])))
        except Problem:  # the route answers it (and reads again)
            return None

    @staticmethod
    def authorized(scope: Scope, state: Any) -> bool:
        presented = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                presented = value.decode("latin-1")
                break
        if not presented:
            allowed = bool(getattr(state, "anonymous_read", False))
            key = ANONYMOUS if allowed else None
        else:
            ring: KeyRing = state.keyring
            key = ring.verify(presented)
        if key is None or not key.allows(Role.READ):
            return False
        scope.setdefault("state", {})["key_name"] = key.name  # the request log names it
        return True


def _encode(content: Any) -> bytes:
    return orjson.dumps(content)


def _list_query(raw: bytes) -> dict[str, Any] | None:
    """The list's parameters when every one is plainly valid; None: let the route judge."""
    params: dict[str, Any] = {
        "sort": MachineSort.ID,
        "type": None,
        "line": None,
        "status": None,
        "limit": DEFAULT_LIMIT,
        "cursor": None,
    }
    seen: set[str] = set()
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name in ("limit", "sort", "cursor"):
            if name in seen:
                return None
            seen.add(name)
        if name == "limit":
            if not _LIMIT.match(value) or int(value) > MAX_LIMIT:
                return None
            params["limit"] = int(value)
        elif name == "sort":
            if value not in _SORTS:
                return None
            params["sort"] = _SORTS[value]
        elif name == "cursor":
            if not value or len(value) > 2048:
                return None
            params["cursor"] = value
        elif name == "type":
            if value not in _TYPES:
                return None
            params["type"] = [*(params["type"] or ()), _TYPES[value]]
        elif name == "status":
            if value not in _STATUSES:
                return None
            params["status"] = [*(params["status"] or ()), _STATUSES[value]]
        elif name == "line":
            if not _LINE.match(value):
                return None
            params["line"] = [*(params["line"] or ()), value]
    return params
