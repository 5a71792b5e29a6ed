"""`GET /api/v1/machines` and `GET /api/v1/machines/{id}`: the live state in Redis.

The list is one round trip: a Lua script reads the machine index (`{p}machines`) and every
machine hash (`{p}machine:{id}`) in one call, so the answer is one consistent snapshot. Filters,
sort and the cursor are applied here. The status is the state writer's (`ONLINE`, `ANOMALY`,
`FAULT`, `OFFLINE`), except that a machine silent for more than `OT_OFFLINE_AFTER_SECONDS` is
`OFFLINE` even before the writer's sweep says so (or while the writer is down).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any

import orjson
import redis
from fastapi import APIRouter, Depends, Path, Query

from streaming.api.keys import ApiKey
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
from streaming.events.model import MachineType, Metric

router = APIRouter(tags=["machines"])

_METRIC_ORDER = tuple(sorted(str(m) for m in Metric))


class Status(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    ANOMALY = "ANOMALY"
    FAULT = "FAULT"


_STATUSES = frozenset(s.value for s in Status)


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


# Index then every hash, in one call, as one JSON text: [[id, [field, value, ...]], ...]
# (cjson in Redis encodes it in C; orjson here decodes it in C).
_SNAPSHOT = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for i = 1, #ids do
  out[i] = {ids[i], redis.call('HGETALL', ARGV[1] .. ids[i])}
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


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
    if status not in _STATUSES:
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


async def snapshot(op: Operator) -> list[tuple[str, dict[str, str]]]:
    """Every machine of the index with its hash fields (machines whose hash expired are left
    out), in one round trip."""
    script = op.redis.register_script(_SNAPSHOT)
    try:
        raw = await script(keys=[op.keys.machines], args=[op.keys.machine_prefix])
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise unavailable("redis", exc) from None
    return [
        (machine, dict(zip(pairs[::2], pairs[1::2], strict=True)))
        for machine, pairs in orjson.loads(raw)
        if pairs  # an empty table: the hash expired, the index entry not yet swept
    ]


async def fleet(op: Operator) -> list[dict[str, Any]]:
    """The views of every machine, now. Requests that arrive while a read is in flight share
    it (one Redis call and one decoding for all of them), so nothing is older than one round
    trip and a burst of requests costs one snapshot."""
    pending: asyncio.Future[list[dict[str, Any]]] | None = op.shared.get("fleet")
    if pending is None or pending.done():
        pending = asyncio.ensure_future(_fleet(op))
        op.shared["fleet"] = pending
    return await asyncio.shield(pending)


async def _fleet(op: Operator) -> list[dict[str, Any]]:
    found = await snapshot(op)
    now = now_ms()
    offline_ms = int(op.settings.offline_after_seconds * 1000)
    return [machine_view(m, f, now, offline_ms) for m, f in found]


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
) -> Json:
    kind = _cursor_kind(sort, type, line, status)
    after = decode_cursor(cursor, kind)["after"] if cursor else None
    items = await fleet(op)
    types = {str(t) for t in type or ()}
    lines = set(line or ())
    statuses = {str(s) for s in status or ()}
    items = [
        i
        for i in items
        if (not types or i["type"] in types)
        and (not lines or i["line"] in lines)
        and (not statuses or i["status"] in statuses)
    ]
    descending = sort.value.startswith("-")
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
    return Json({"items": page, "next_cursor": next_cursor})


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
    try:
        async with op.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(op.keys.machine(machine_id))
            pipe.hgetall(op.keys.alerts_active)
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
    now = now_ms()
    view = machine_view(machine_id, fields, now, int(op.settings.offline_after_seconds * 1000))
    alerts = []
    for doc in raw_alerts.values():
        try:
            alert = json.loads(doc)
        except ValueError:
            continue
        if isinstance(alert, dict) and alert.get("machine_id") == machine_id:
            alerts.append(alert)
    alerts.sort(key=lambda a: (a.get("opened_ms") or 0, str(a.get("alert_id"))))
    last_seen = view["last_seen"]
    return Json(
        {**view, "silent_ms": now - last_seen if last_seen is not None else None, "alerts": alerts}
    )
