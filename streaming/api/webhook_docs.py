"""OpenAPI description of the webhook: the reading's JSON schema (built from the contract's own
constants, so docs and validator cannot drift), examples of each body form and of each answer."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from streaming.api.problems import MEDIA_TYPE, TYPE_PREFIX, problem_schema
from streaming.events import MACHINE_ID_PATTERN, STATUS_CODES, MachineType, Metric, Quality

EXAMPLE_READING: dict[str, Any] = {
    "event_id": "press-07:4711",
    "machine_id": "press-07",
    "machine_type": "MOTOR",
    "line_id": "line-a",
    "metric": "temperature",
    "unit": "°C",
    "value": 71.25,
    "ts": 1789999999000,
    "seq": 4711,
    "status_code": 0,
    "quality": "GOOD",
}
_SECOND = {**EXAMPLE_READING, "event_id": "press-07:4712", "seq": 4712, "value": 71.5}
_SECOND["ts"] = EXAMPLE_READING["ts"] + 1000


def reading_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "One reading of one metric of one machine (event contract v1, "
        "docs/events.md). Unknown extra fields are ignored.",
        "required": list(EXAMPLE_READING),
        "properties": {
            "event_id": {"type": "string", "description": "exactly {machine_id}:{seq}"},
            "machine_id": {"type": "string", "pattern": MACHINE_ID_PATTERN},
            "machine_type": {"type": "string", "enum": [str(v) for v in MachineType]},
            "line_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "metric": {"type": "string", "enum": [str(v) for v in Metric]},
            "unit": {"type": "string", "description": "the canonical unit of the metric"},
            "value": {"type": "number"},
            "ts": {"type": "integer", "description": "event time, epoch milliseconds UTC"},
            "seq": {"type": "integer", "minimum": 0},
            "status_code": {"type": "integer", "enum": sorted(int(c) for c in STATUS_CODES)},
            "quality": {"type": "string", "enum": [str(v) for v in Quality]},
        },
        "example": EXAMPLE_READING,
    }


REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "One reading (a JSON object), a batch (a JSON array of readings), or NDJSON "
    "(one reading per line) for bulk.",
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    reading_schema(),
                    {"type": "array", "items": reading_schema(), "maxItems": 10_000},
                ]
            },
            "examples": {
                "one reading": {"value": EXAMPLE_READING},
                "a batch": {"value": [EXAMPLE_READING, _SECOND]},
            },
        },
        "application/x-ndjson": {
            "schema": {"type": "string", "description": "one JSON reading per line"},
            "examples": {
                "bulk": {
                    "value": "\n".join(
                        json.dumps(r, ensure_ascii=False) for r in (EXAMPLE_READING, _SECOND)
                    )
                }
            },
        },
    },
}


class RejectedReading(BaseModel):
    index: int = Field(description="position of the reading in the request (0-based)")
    reason: str = Field(description="the contract's reason code, e.g. OUT_OF_RANGE")
    detail: str


class Accepted(BaseModel):
    """202: every accepted reading is acknowledged by Kafka (durable)."""

    accepted: int = Field(description="readings acknowledged by Kafka")
    event_ids: list[str] = Field(description="their event_ids, in request order")
    rejected: list[RejectedReading] = Field(
        description="invalid readings, sent to the dead-letter topic with their reason"
    )
    request_id: str

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "accepted": 1,
                    "event_ids": ["press-07:4711"],
                    "rejected": [
                        {
                            "index": 1,
                            "reason": "OUT_OF_RANGE",
                            "detail": "temperature=401.0 outside [-50, 400] °C",
                        }
                    ],
                    "request_id": "3f1c2a9e6b7d4c10",
                }
            ]
        }
    }


def _problem(status: int, kind: str, detail: str, description: str, **extra: Any) -> dict:
    example = {
        "type": TYPE_PREFIX + kind,
        "title": description,
        "status": status,
        "detail": detail,
        **extra,
    }
    return {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": problem_schema(), "example": example}},
    }


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem(
        400,
        "unparsable-json",
        "not JSON: Expecting ',' delimiter at line 1 column 18",
        "Bad Request",
        position={"line": 1, "column": 18, "offset": 17},
    ),
    401: _problem(401, "unauthorized", "no X-API-Key header", "Unauthorized"),
    403: _problem(403, "forbidden", "key 'dash' has role read, this needs ingest", "Forbidden"),
    413: _problem(413, "body-too-large", "the body exceeds 4194304 bytes", "Content Too Large"),
    415: _problem(
        415,
        "unsupported-media-type",
        "Content-Type 'text/plain': send application/json or application/x-ndjson",
        "Unsupported Media Type",
    ),
    422: _problem(
        422,
        "no-valid-readings",
        "none of the 1 readings is valid; they were sent to the dead-letter topic",
        "Unprocessable Content",
        rejected=[{"index": 0, "reason": "UNIT_MISMATCH", "detail": "unit 'F' is not °C"}],
    ),
    429: _problem(
        429,
        "rate-limited",
        "key 'plant-a' is over its rate limit",
        "Too Many Requests",
        retry_after=1,
    ),
    503: _problem(
        503,
        "kafka-unavailable",
        "Kafka did not acknowledge the readings (_MSG_TIMED_OUT); nothing was accepted, "
        "send them again",
        "Service Unavailable",
        retry_after=5,
    ),
}
