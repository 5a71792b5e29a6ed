"""`GET /api/v1/anomalies`: the anomaly rollup table (`anomalies` in PostgreSQL), newest first,
filtered by machine, metric, time and severity, one page at a time (a keyset cursor on
`(ts, event_id)`, so pages stay right while new anomalies are loaded)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query
from psycopg import sql

from streaming.api.keys import ApiKey
from streaming.api.operator.models import AnomalyPage, Json, errors
from streaming.api.operator.params import (
    DAY_MS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MS,
    READ,
    MachineId,
    decode_cursor,
    encode_cursor,
    operator,
    time_range,
    unavailable,
)
from streaming.api.operator.resources import Missing, Operator
from streaming.api.problems import Problem
from streaming.consumers.alerting import Severity
from streaming.events.model import Metric
from streaming.warehouse_schema import TABLES

router = APIRouter(tags=["anomalies"])

TABLE = "anomalies"
COLUMNS = [c for c in TABLES[TABLE].column_names if c != "ts"]
DEFAULT_SPAN_MS = 7 * DAY_MS
MAX_SPAN_MS = 366 * DAY_MS


@router.get(
    "/anomalies",
    response_model=AnomalyPage,
    summary="Anomalies the pipeline detected (from the rollups), newest first",
    description="`from`/`to` default to the last 7 days. `machine`, `metric` and `severity` "
    "may be given several times (any of them). Pass `next_cursor` back as `cursor` with the "
    "same filters for the next page.",
    responses=errors(400, 401, 403, 422, 503),  # type: ignore[arg-type]
)
async def list_anomalies(
    key: Annotated[ApiKey, Depends(READ)],
    op: Annotated[Operator, Depends(operator)],
    machine: Annotated[list[MachineId] | None, Query()] = None,
    metric: Annotated[list[Metric] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Json:
    frm, to = time_range(start, end, DEFAULT_SPAN_MS, MAX_SPAN_MS)
    filters = {
        "machine": sorted(machine or ()),
        "metric": sorted(map(str, metric or ())),
        "severity": sorted(map(str, severity or ())),
        "from": start,  # as given: a default `to` (now) moves from page to page
        "to": end,
    }
    kind = "anomalies:" + hashlib.sha256(json.dumps(filters).encode()).hexdigest()[:16]
    where = [sql.SQL("ts >= {}").format(MS), sql.SQL("ts < {}").format(MS)]
    params: list[Any] = [frm, to]
    for column in ("machine", "metric", "severity"):
        if filters[column]:
            name = "machine_id" if column == "machine" else column
            where.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(name)))
            params.append(filters[column])
    if cursor:
        after = decode_cursor(cursor, kind)["after"]
        if not (isinstance(after, list) and len(after) == 2 and isinstance(after[0], int)):
            raise Problem(400, "invalid-cursor", "cursor is not one this list returned")
        where.append(sql.SQL("(ts, event_id) < ({}, %s)").format(MS))
        params += [after[0], str(after[1])]
    statement = sql.SQL(
        "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, {} FROM {} WHERE {}"
        " ORDER BY ts DESC, event_id DESC LIMIT %s"
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        op.table(TABLE),
        sql.SQL(" AND ").join(where),
    )
    params.append(limit + 1)
    try:
        rows = await op.query(statement, params)
    except Missing:
        rows = []
    except (psycopg.OperationalError, TimeoutError) as exc:
        raise unavailable("postgres", exc) from None
    items = [{"ts": r[0], **dict(zip(COLUMNS, r[1:], strict=True))} for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor({"k": kind, "after": [last["ts"], last["event_id"]]})
    return Json({"items": items, "next_cursor": next_cursor})
