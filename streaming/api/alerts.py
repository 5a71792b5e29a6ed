"""Operator API: alerts and their lifecycle (`/api/v1/alerts`).

Lists read the records in Redis (`alerts:active`, `alerts:cleared`); acknowledge, assign and clear
run the lifecycle scripts of streaming/alert_lifecycle.py: atomic, idempotent (a repeated request
answers 200 with the same state and `"changed": false`), recorded in the alert log and the change
feed, and published on the `alerts` topic by the state writer of the alert's partition (its
outbox; at least once, within its timer period).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from streaming.alert_lifecycle import (
    AlertScripts,
    AlertStatus,
    Transition,
    decode_record,
    transition_result,
)
from streaming.api.auth import require
from streaming.api.keys import ApiKey, Role
from streaming.api.problems import Problem, problem_schema
from streaming.consumers.alerting import Severity
from streaming.redis_keys import RedisKeys

router = APIRouter(prefix="/api/v1", tags=["alerts"])
SEVERITY_RANK = {str(s): i for i, s in enumerate(Severity)}
MAX_NOTE_CHARS = 2000

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/problem+json": {"schema": schema}}}
    for status, text, schema in [
        (401, "no key, or an unknown one", problem_schema()),
        (403, "the key's role does not allow this", problem_schema()),
        (422, "a parameter or the body does not fit", problem_schema()),
        (503, "Redis does not answer", problem_schema()),
    ]
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "no such alert",
        "content": {"application/problem+json": {"schema": problem_schema()}},
    }
}


class Alert(BaseModel):
    """An alert's record: the `opened` event's fields plus its lifecycle (its latest event)."""

    model_config = ConfigDict(extra="allow")

    alert_id: str = Field(examples=["temperature_hard|press-07|temperature|3|18422"])
    rule: str = Field(examples=["temperature_hard"])
    machine_id: str
    line_id: str | None = None
    metric: str = Field(description="`*` for OFFLINE alerts")
    severity: str = Field(description="current severity (escalation raises it)")
    original_severity: str | None = None
    value: float | None = Field(None, description="the reading that opened it")
    threshold: float | None = None
    opened_ms: int = Field(description="event time of the opening reading (device clock)")
    cleared_ms: int | None = None
    status: AlertStatus = AlertStatus.ACTIVE_UNACK
    acknowledged: bool = False
    ack_by: str | None = None
    ack_ms: int | None = None
    ack_note: str | None = None
    assignee: str | None = None
    assigned_by: str | None = None
    assigned_ms: int | None = None
    cleared_by: str | None = Field(None, description="who cleared it by hand (null: the rule)")
    manual_clear: bool = Field(False, description="an operator may clear it")
    escalations: int = 0
    escalated_ms: int | None = None
    created_ms: int | None = Field(None, description="platform time it opened")
    event: str = Field("opened", description="the latest transition")
    at_ms: int | None = Field(None, description="when the latest transition happened")
    by: str | None = Field(None, description="who made it (null: the platform)")
    kafka_partition: int | None = None


class AlertPage(BaseModel):
    items: list[Alert]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


class AlertEvents(BaseModel):
    items: list[Alert] = Field(description="the alert's events in the alert log, newest first")


class TransitionAnswer(BaseModel):
    alert: Alert
    changed: bool = Field(description="false: it already was so (a repeated request)")


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS, examples=["on it, valve swapped"])


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: str | None = Field(
        description="a user or team name; null unassigns",
        min_length=1,
        max_length=128,
        examples=["alice"],
    )


class StateFilter(StrEnum):
    ANY = "any"
    ACTIVE = "active"
    CLEARED = "cleared"
    ACK = "ack"
    UNACK = "unack"
    ACTIVE_UNACK = "active_unack"
    ACTIVE_ACK = "active_ack"
    CLEARED_UNACK = "cleared_unack"
    CLEARED_ACK = "cleared_ack"

    def admits(self, status: str) -> bool:
        if self is StateFilter.ANY:
            return True
        if self in (StateFilter.ACTIVE, StateFilter.CLEARED):
            return status.startswith(self.value.upper() + "_")
        if self in (StateFilter.ACK, StateFilter.UNACK):
            return status.endswith("_" + self.value.upper())
        return status == self.value.upper()


class SortKey(StrEnum):
    OPENED = "opened_ms"
    OPENED_DESC = "-opened_ms"
    CHANGED = "at_ms"
    CHANGED_DESC = "-at_ms"
    SEVERITY = "severity"
    SEVERITY_DESC = "-severity"


class AlertService:
    """What the alert routes share: the Redis client, the keys, the lifecycle scripts, a clock."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: RedisKeys,
        feed_maxlen: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.keys = keys
        self.scripts = AlertScripts(client, keys, feed_maxlen)
        self.clock = clock

    async def records(self, active: bool, cleared: bool) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        if active:
            pipe.hvals(self.keys.alerts_active)
        if cleared:
            pipe.hvals(self.keys.alerts_cleared)
        try:
            found = await pipe.execute()
        except RedisError as exc:
            raise _redis_down(exc) from None
        return [_with_status(decode_record(raw)) for values in found for raw in values]

    async def record(self, alert_id: str) -> dict[str, Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.keys.alerts_active, alert_id)
        pipe.hget(self.keys.alerts_cleared, alert_id)
        try:
            active, cleared = await pipe.execute()
        except RedisError as exc:
            raise _redis_down(exc) from None
        raw = active or cleared
        if raw is None:
            raise _no_alert(alert_id)
        return _with_status(decode_record(raw))

    async def events(self, alert_id: str) -> list[dict[str, Any]]:
        try:
            log = await self.client.lrange(self.keys.alerts_log, 0, -1)
        except RedisError as exc:
            raise _redis_down(exc) from None
        marker = json.dumps(alert_id)[1:-1].encode()  # cheap pre-filter before decoding
        docs = (decode_record(raw) for raw in log if marker in raw)
        return [_with_status(d) for d in docs if d.get("alert_id") == alert_id]

    async def transition(self, op: str, alert_id: str, key: ApiKey, arg: str = "") -> Any:
        now_ms = int(self.clock() * 1000)
        try:
            raw = await self.scripts.transition(op, alert_id, now_ms, key.name, arg)
        except RedisError as exc:
            raise _redis_down(exc) from None
        outcome, record = transition_result(raw)
        if outcome is Transition.MISSING or record is None:
            raise _no_alert(alert_id)
        if outcome is Transition.NOT_ALLOWED:
            raise Problem(
                409,
                "manual-clear-not-allowed",
                f"rule {record.get('rule')!r} clears its alerts itself when the condition ends; "
                "only alerts whose rule allows it (`manual_clear`) can be cleared by hand",
                alert=_with_status(record),
            )
        return {"alert": _with_status(record), "changed": outcome is Transition.CHANGED}


def _with_status(record: dict[str, Any]) -> dict[str, Any]:
    """Records written before the lifecycle existed have no status: derive it."""
    if "status" not in record:
        cleared = "CLEARED" if record.get("cleared_ms") is not None else "ACTIVE"
        record["status"] = f"{cleared}_{'ACK' if record.get('acknowledged') else 'UNACK'}"
    return record


def _redis_down(exc: Exception) -> Problem:
    return Problem(
        503, "redis-unavailable", f"Redis does not answer ({type(exc).__name__})", retry_after=5
    )


def _no_alert(alert_id: str) -> Problem:
    return Problem(404, "alert-not-found", f"no alert {alert_id!r} (active or in the history)")


def service(request: Request) -> AlertService:
    alerts: AlertService = request.app.state.alerts
    return alerts


def parse_time(name: str, raw: str | None) -> int | None:
    """Epoch milliseconds or ISO 8601 (a time without zone is UTC) -> epoch ms."""
    if raw is None or raw == "":
        return None
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(
            422,
            "invalid-time",
            f"{name}={raw!r} is neither epoch milliseconds nor ISO 8601 "
            "(e.g. 2025-01-31T08:00:00Z)",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _encode_cursor(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: SortKey) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        sort_name, primary, alert_id = json.loads(raw)
        if sort_name != sort.value or not isinstance(alert_id, str):
            raise ValueError
        return primary, alert_id
    except (ValueError, binascii.Error, TypeError, UnicodeDecodeError):
        raise Problem(
            422,
            "invalid-cursor",
            "cursor is not one this list gave out (or the sort changed since)",
        ) from None


def _sort_value(record: dict[str, Any], sort: SortKey) -> Any:
    field = sort.value.lstrip("-")
    if field == "severity":
        return SEVERITY_RANK.get(str(record.get("severity")), -1)
    value = record.get(field)
    return value if isinstance(value, int) else -1


def _csv(raw: str | None) -> set[str] | None:
    if raw is None or raw.strip() == "":
        return None
    return {v.strip() for v in raw.split(",") if v.strip()}


@router.get(
    "/alerts",
    response_model=AlertPage,
    summary="Active alerts and their history, filtered and paginated",
    responses=_PROBLEMS,
)
async def list_alerts(
    request: Request,
    key: Annotated[ApiKey, Depends(require(Role.READ))],
    state: Annotated[
        StateFilter,
        Query(description="any, active, cleared, ack, unack, or one status (e.g. active_unack)"),
    ] = StateFilter.ANY,
    severity: Annotated[
        str | None, Query(description="one or more of LOW, MEDIUM, HIGH, CRITICAL, comma-separated")
    ] = None,
    machine: Annotated[str | None, Query(description="machine ids, comma-separated")] = None,
    line: Annotated[str | None, Query(description="line ids, comma-separated")] = None,
    rule: Annotated[str | None, Query(description="rule names, comma-separated")] = None,
    assignee: Annotated[str | None, Query(description="assigned to")] = None,
    from_: Annotated[
        str | None,
        Query(alias="from", description="opened at or after (epoch ms or ISO 8601)"),
    ] = None,
    to: Annotated[str | None, Query(description="opened before (epoch ms or ISO 8601)")] = None,
    sort: Annotated[SortKey, Query(description="`-` = descending")] = SortKey.OPENED_DESC,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    severities = _csv(severity)
    if severities is not None and not severities <= SEVERITY_RANK.keys():
        bad = sorted(severities - SEVERITY_RANK.keys())
        raise Problem(
            422, "invalid-severity", f"severity {bad} is not one of {list(SEVERITY_RANK)}"
        )
    start, end = parse_time("from", from_), parse_time("to", to)
    machines, lines, rules = _csv(machine), _csv(line), _csv(rule)
    after = _decode_cursor(cursor, sort) if cursor else None
    records = await service(request).records(
        active=not state.value.startswith("cleared"), cleared=not state.value.startswith("active")
    )
    chosen = [
        r
        for r in records
        if state.admits(str(r.get("status")))
        and (severities is None or r.get("severity") in severities)
        and (machines is None or r.get("machine_id") in machines)
        and (lines is None or r.get("line_id") in lines)
        and (rules is None or r.get("rule") in rules)
        and (assignee is None or r.get("assignee") == assignee)
        and (start is None or int(r.get("opened_ms") or 0) >= start)
        and (end is None or int(r.get("opened_ms") or 0) < end)
    ]
    descending = sort.value.startswith("-")

    def order(r: dict[str, Any]) -> tuple[Any, str]:
        return _sort_value(r, sort), str(r.get("alert_id"))

    chosen.sort(key=order, reverse=descending)
    if after is not None:
        chosen = [r for r in chosen if (order(r) < after if descending else order(r) > after)]
    page = chosen[:limit]
    next_cursor = None
    if len(chosen) > limit:
        primary, alert_id = order(page[-1])
        next_cursor = _encode_cursor([sort.value, primary, alert_id])
    return {"items": page, "next_cursor": next_cursor}


AlertId = Annotated[
    str,
    Path(
        max_length=512,
        description="the alert id (URL-encode it: it contains `|`)",
        examples=["temperature_hard|press-07|temperature|3|18422"],
    ),
]


@router.get(
    "/alerts/{alert_id}",
    response_model=Alert,
    summary="One alert's record",
    responses={**_PROBLEMS, **_NOT_FOUND},
)
async def get_alert(
    request: Request, alert_id: AlertId, key: Annotated[ApiKey, Depends(require(Role.READ))]
) -> Any:
    return await service(request).record(alert_id)


@router.get(
    "/alerts/{alert_id}/events",
    response_model=AlertEvents,
    summary="One alert's events in the alert log (opened, acknowledged, ..., cleared)",
    responses={**_PROBLEMS, **_NOT_FOUND},
)
async def alert_events(
    request: Request, alert_id: AlertId, key: Annotated[ApiKey, Depends(require(Role.READ))]
) -> Any:
    events = await service(request).events(alert_id)
    if not events:
        await service(request).record(alert_id)  # 404 if unknown
    return {"items": events}


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=TransitionAnswer,
    summary="Acknowledge an alert (with a note); again: 200, unchanged",
    responses={**_PROBLEMS, **_NOT_FOUND},
)
async def acknowledge(
    request: Request,
    alert_id: AlertId,
    key: Annotated[ApiKey, Depends(require(Role.OPERATE))],
    body: Annotated[AckBody | None, Body()] = None,
) -> Any:
    note = body.note if body is not None and body.note else ""
    return await service(request).transition("ack", alert_id, key, note)


@router.post(
    "/alerts/{alert_id}/assign",
    response_model=TransitionAnswer,
    summary="Assign an alert to a user or team (null unassigns); again: 200, unchanged",
    responses={**_PROBLEMS, **_NOT_FOUND},
)
async def assign(
    request: Request,
    alert_id: AlertId,
    key: Annotated[ApiKey, Depends(require(Role.OPERATE))],
    body: AssignBody,
) -> Any:
    return await service(request).transition("assign", alert_id, key, body.assignee or "")


@router.post(
    "/alerts/{alert_id}/clear",
    response_model=TransitionAnswer,
    summary="Clear an alert by hand (rules with manual_clear only); again: 200, unchanged",
    responses={
        **_PROBLEMS,
        **_NOT_FOUND,
        409: {
            "description": "the alert's rule clears its alerts itself",
            "content": {"application/problem+json": {"schema": problem_schema()}},
        },
    },
)
async def clear(
    request: Request, alert_id: AlertId, key: Annotated[ApiKey, Depends(require(Role.OPERATE))]
) -> Any:
    return await service(request).transition("clear", alert_id, key)
