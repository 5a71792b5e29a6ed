"""Answer schemas of the operator routes, for the OpenAPI document (`/docs`). The routes build
their JSON directly (orjson) and return it as is: these models describe it, they do not check it
on every request."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, Field

from streaming.api.problems import problem_schema


class Json(Response):
    """A JSON answer encoded by orjson (the machine list is hundreds of objects)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Value(BaseModel):
    value: float
    ts: int = Field(description="event time of the reading, epoch ms UTC")


class Machine(BaseModel):
    machine_id: str
    type: str | None
    line: str | None
    status: str = Field(description="ONLINE, OFFLINE, ANOMALY or FAULT")
    status_code: int | None = Field(description="the device's own status in its last reading")
    last_seen: int | None = Field(description="when Kafka last heard from it, epoch ms UTC")
    values: dict[str, Value] = Field(description="latest value of each metric")


class MachinePage(BaseModel):
    items: list[Machine]
    next_cursor: str | None


class MachineDetail(Machine):
    silent_ms: int | None = Field(description="ms since last_seen")
    alerts: list[dict[str, Any]] = Field(description="its open alerts (oldest first)")


class Point(BaseModel):
    ts: int = Field(description="bucket start (or the reading's event time for raw), epoch ms")
    count: int | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    value: float | None = Field(None, description="raw readings only")
    quality: str | None = Field(None, description="raw readings only")


class Source(BaseModel):
    source: str = Field(description="postgres (rollups) or lake (landing files)")
    start: int = Field(alias="from")
    end: int = Field(alias="to")


class History(BaseModel):
    machine_id: str
    metric: str
    resolution: str
    step_ms: int | None
    start: int = Field(alias="from")
    end: int = Field(alias="to")
    boundary: int | None = Field(
        description="end of the newest hour taken from PostgreSQL (null: none was)"
    )
    sources: list[Source]
    truncated: bool
    points: list[Point]


class Anomaly(BaseModel):
    ts: int
    machine_id: str
    machine_type: str | None
    line_id: str | None
    metric: str
    event_id: str
    seq: int | None
    value: float | None
    status_code: int | None
    score: float | None
    severity: str | None
    detector: str | None


class AnomalyPage(BaseModel):
    items: list[Anomaly]
    next_cursor: str | None


class Production(BaseModel):
    start: int = Field(alias="from")
    end: int = Field(alias="to")
    group_by: str
    machines: list[dict[str, Any]]
    lines: list[dict[str, Any]]
    today: dict[str, Any] | None = Field(
        description="live counters of today (null: the range does not reach today)"
    )


class Check(BaseModel):
    status: str = Field(description="ok, degraded or down")
    detail: str | None = None


class Readiness(BaseModel):
    status: str
    checks: dict[str, dict[str, Any]]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` entry of a route: problem+json for each status."""
    text = {
        400: "Bad cursor",
        401: "No or unknown API key",
        403: "The key's role does not allow this",
        404: "Unknown machine",
        422: "A parameter is invalid (the detail says which and why)",
        503: "A dependency (Redis, PostgreSQL) does not answer",
    }
    return {
        s: {
            "description": text.get(s, "Error"),
            "content": {"application/problem+json": {"schema": problem_schema()}},
        }
        for s in statuses
    }
