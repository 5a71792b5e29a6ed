"""`GET /api/v1/machines` and `GET /api/v1/machines/{id}`: the live state in Redis.

Both answer from the fleet snapshot (fleet.py): the machine index (`{p}machines`), every machine
hash (`{p}machine:{id}`) and the open alerts, read whole once (one Lua call) and kept current by
applying the change feed's entries as the API's feed reader reads them, so a request never waits
for Redis. Filters, sort and the cursor are applied here, and each distinct page is encoded once
per change of the snapshot. The status
is the state writer's (`ONLINE`, `ANOMALY`, `FAULT`, `OFFLINE`), except that a machine silent for
more than `OT_OFFLINE_AFTER_SECONDS` is `OFFLINE` even before the writer's sweep says so (or
while the writer is down).
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any

import orjson
import redis
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from streaming.api.keys import ApiKey
from streaming.api.operator.fleet import Snapshot, alerts_by_machine, fleet_of, machine_view
from streaming.api.operator.models import Json, MachineDetail, MachinePage, errors
from streaming.api.operator.params import (
    DEFAULT_LIMIT,
    MACHINE_ID,
    MAX_LIMIT,
    READ,
    LineId,
    decode_cursor,
    encode_cursor,
    now_ms,
    operator,
    unavailable,
)
from streaming.api.operator.resources import Operator
from streaming.api.problems import Problem
from streaming.events.model import MachineType

router = APIRouter(tags=["machines"])


class Status(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    ANOMALY = "ANOMALY"
    FAULT = "FAULT"


class MachineSort(StrEnum):
    ID = "id"
    ID_DESC = "-id"
    LAST_SEEN = "last_seen"
    LAST_SEEN_DESC = "-last_seen"
    STATUS = "status"
    STATUS_DESC = "-status"
    TYPE = "type"
    TYPE_DESC = "-type"
    LINE = "line"
    LINE_DESC = "-line"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _sort_key(sort: MachineSort, item: dict[str, Any]) -> list[Any]:
    field = sort.value.lstrip("-")
    if field == "id":
        return [item["machine_id"]]
    if field == "last_seen":
        return [item["last_seen"] or 0, item["machine_id"]]
    return [item[field] or "", item["machine_id"]]


@router.get(
    "/machines",
    response_model=MachinePage,
    summary="Machines with status, last_seen and latest values (filter, sort, pages)",
    description="Filters combine with AND; a filter given several times matches any of its "
    "values (`status=ANOMALY&status=FAULT`). `sort` is a field, `-field` for descending; "
    "ties go by id. Pass `next_cursor` back as `cursor` (with the same filters and sort) for "
    "the next page; it is null on the last one. Live state from Redis, one round trip.",
    responses=errors(400, 401, 403, 422, 503),  # type: ignore[arg-type]
)
async def list_machines(
    key: Annotated[ApiKey, Depends(READ)],
    op: Annotated[Operator, Depends(operator)],
    type: Annotated[list[MachineType] | None, Query(description="machine type")] = None,
    line: Annotated[list[LineId] | None, Query(description="line id")] = None,
    status: Annotated[list[Status] | None, Query(description="status")] = None,
    sort: MachineSort = MachineSort.ID,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    body = await list_body(op, sort, type, line, status, limit, cursor)
    return Response(body, media_type="application/json")


async def list_body(
    op: Operator,
    sort: MachineSort,
    type: list[MachineType] | None,
    line: list[str] | None,
    status: list[Status] | None,
    limit: int,
    cursor: str | None,
) -> bytes:
    """The encoded answer of the list (also served by fast.py); Problem 400 for a bad cursor."""
    kind = _cursor_kind(sort, type, line, status)
    after = decode_cursor(cursor, kind)["after"] if cursor else None
    snap = await fleet_of(op).snapshot()
    page_key = (kind, limit, orjson.dumps(after))
    return fleet_of(op).encoded(
        snap, page_key, lambda: _page(snap, sort, type, line, status, limit, after, kind)
    )


def _page(
    snap: Snapshot,
    sort: MachineSort,
    type: list[MachineType] | None,
    line: list[str] | None,
    status: list[Status] | None,
    limit: int,
    after: Any,
    kind: str,
) -> dict[str, Any]:
    types = {str(t) for t in type or ()}
    lines = set(line or ())
    statuses = {str(s) for s in status or ()}
    items = [
        i
        for i in snap.views
        if (not types or i["type"] in types)
        and (not lines or i["line"] in lines)
        and (not statuses or i["status"] in statuses)
    ]
    descending = sort.value.startswith("-")
    if sort is not MachineSort.ID:  # the snapshot is sorted by id already
        items.sort(key=lambda i: _sort_key(sort, i), reverse=descending)
    if after is not None:
        if descending:
            items = [i for i in items if _sort_key(sort, i) < after]
        else:
            items = [i for i in items if _sort_key(sort, i) > after]
    page = items[:limit]
    next_cursor = None
    if len(items) > limit:
        next_cursor = encode_cursor({"k": kind, "after": _sort_key(sort, page[-1])})
    return {"items": page, "next_cursor": next_cursor}


def _cursor_kind(sort: MachineSort, *filters: list[Any] | None) -> str:
    """A cursor is only valid for the list (sort and filters) that made it."""
    text = json.dumps([sort.value, *[sorted(map(str, f or ())) for f in filters]])
    return "machines:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@router.get(
    "/machines/{machine_id}",
    response_model=MachineDetail,
    summary="One machine: every latest metric with its time, status and open alerts",
    responses=errors(401, 403, 404, 503),  # type: ignore[arg-type]
)
async def get_machine(
    machine_id: Annotated[str, Path(pattern=MACHINE_ID)],
    key: Annotated[ApiKey, Depends(READ)],
    op: Annotated[Operator, Depends(operator)],
) -> Json:
    snap = await fleet_of(op).snapshot()
    view = snap.by_id.get(machine_id)
    if view is not None:
        alerts = snap.alerts.get(machine_id, [])
    else:  # not in the snapshot: a machine newer than it, or one the index does not list
        view, alerts = await _read_machine(op, machine_id)
    return Json(detail(view, alerts))


def detail(view: dict[str, Any], alerts: list[Any]) -> dict[str, Any]:
    """One machine's answer: its view, how long it has been silent, its open alerts."""
    last_seen = view["last_seen"]
    silent = now_ms() - last_seen if last_seen is not None else None
    return {**view, "silent_ms": silent, "alerts": alerts}


async def _read_machine(op: Operator, machine_id: str) -> tuple[dict[str, Any], list[Any]]:
    """One machine straight from Redis (its hash and the open alerts); 404 when it has none."""
    try:
        async with op.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(op.keys.machine(machine_id))
            pipe.hvals(op.keys.alerts_active)
            raw_fields, raw_alerts = await pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise unavailable("redis", exc) from None
    if not raw_fields:
        raise Problem(
            404,
            "unknown-machine",
            f"no live state for machine {machine_id[:64]!r} (never seen, or silent longer than "
            "the state writer keeps it)",
        )
    fields = {_text(k): _text(v) for k, v in raw_fields.items()}
    view = machine_view(machine_id, fields, now_ms(), int(op.settings.offline_after_seconds * 1000))
    return view, alerts_by_machine([_text(a) for a in raw_alerts]).get(machine_id, [])
