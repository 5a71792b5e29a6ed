"""The webhook gateway router: `POST /webhook/sensor-data` -> the event contract -> Kafka.

In order: API key and role (401/403), content type (415), body read in chunks and refused as
soon as it passes the size limit (413), parsed (400 with the position) and counted (413), the
key's rate limits (429), the contract's batch validator, then every valid reading to
`sensor-readings` (Avro, key = machine_id) and every invalid one to the DLQ (stage `gateway`).
The answer waits until Kafka acknowledged all of them: 202 means durable; any failed delivery is
a 503 that reports nothing accepted (a resend is safe: duplicates keep their event_id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from streaming.api.auth import require
from streaming.api.delivery import AckedProducer, KafkaUnavailable, Outgoing
from streaming.api.keys import ApiKey, Role
from streaming.api.problems import Problem
from streaming.api.ratelimit import RateLimiter
from streaming.api.webhook_body import (
    NotReadings,
    ParsedBody,
    TooManyReadings,
    UnparsableBody,
    UnsupportedMediaType,
    body_form,
    parse_body,
)
from streaming.api.webhook_checks import CoalescingChecker
from streaming.api.webhook_docs import REQUEST_BODY, RESPONSES, Accepted
from streaming.events import Rejection, dlq_headers
from streaming.observability import metrics
from streaming.settings import Settings

STAGE = "gateway"
KAFKA_RETRY_AFTER_S = 5


@dataclass
class Gateway:
    """What the webhook needs, built once per app (see `streaming.api.app`)."""

    settings: Settings
    producer: AckedProducer
    limiter: RateLimiter
    checker: CoalescingChecker


router = APIRouter(tags=["webhook gateway"])
INGEST = require(Role.INGEST)


@router.post(
    "/webhook/sensor-data",
    status_code=202,
    response_model=Accepted,
    summary="Push sensor readings (one, a batch, or NDJSON)",
    description="Readings are validated against the event contract (docs/events.md). Valid "
    "ones are accepted once Kafka acknowledged them; invalid ones are reported by index with "
    "their reason and sent to the dead-letter topic. Needs a key with role `ingest`.",
    openapi_extra={"requestBody": REQUEST_BODY},
    responses=RESPONSES,  # type: ignore[arg-type]
)
async def sensor_data(request: Request, key: Annotated[ApiKey, Depends(INGEST)]) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    limits = gateway.settings.api
    try:
        form = body_form(request.headers.get("content-type"))
    except UnsupportedMediaType as exc:
        raise Problem(415, "unsupported-media-type", str(exc)) from None
    body = await _read_limited(request, limits.max_body_bytes)
    try:
        parsed = parse_body(body, form, limits.max_readings)
    except UnparsableBody as exc:
        raise Problem(400, "unparsable-json", str(exc), position=exc.position) from None
    except NotReadings as exc:
        raise Problem(400, "not-readings", str(exc)) from None
    except TooManyReadings as exc:
        raise Problem(413, "too-many-readings", f"{exc}; split the batch") from None
    request.state.readings = len(parsed.readings)
    if not parsed.readings:
        raise Problem(422, "no-readings", "the body holds no readings")

    try:
        wait = await gateway.limiter.take(key.name, 1, len(parsed.readings))
    except Exception as exc:  # Redis down: refuse rather than run unlimited
        raise Problem(
            503, "rate-limiter-unavailable", f"rate limiter: {type(exc).__name__}", retry_after=5
        ) from None
    if wait > 0:
        raise Problem(
            429,
            "rate-limited",
            f"key {key.name!r} is over its rate limit ({limits.requests_per_second:g} "
            f"requests/s, {limits.readings_per_second:g} readings/s)",
            retry_after=wait,
        )

    to_check = parsed.to_check
    checked = await gateway.checker.check([parsed.readings[i] for i in to_check])
    rejected = _rejections(parsed, to_check, checked.rejected)
    request_id = getattr(request.state, "request_id", "-")
    topics = gateway.settings.topics
    messages = [
        Outgoing(topics.readings, k, v) for k, v in zip(checked.keys, checked.values, strict=True)
    ]
    messages += [
        Outgoing(
            topics.dlq,
            None,
            parsed.readings[r.index],
            [
                *dlq_headers(
                    r.reason,
                    STAGE,
                    topics.readings,
                    -1,
                    -1,
                    f"request {request_id} reading {r.index} (key {key.name}): {r.detail}",
                )
            ],
        )
        for r in rejected
    ]
    try:
        await gateway.producer.send(messages)
    except KafkaUnavailable as exc:
        raise Problem(
            503,
            "kafka-unavailable",
            f"Kafka did not acknowledge the readings ({exc}); nothing was accepted, "
            "send them again",
            retry_after=KAFKA_RETRY_AFTER_S,
        ) from None
    request.state.accepted = len(checked.event_ids)
    request.state.rejected = len(rejected)
    for r in rejected:
        metrics.DEAD_LETTERS.labels(STAGE, str(r.reason)).inc()
    rejected_out = [_rejection(r) for r in rejected]
    if not checked.event_ids:
        raise Problem(
            422,
            "no-valid-readings",
            f"none of the {len(parsed.readings)} readings is valid; they were sent to the "
            "dead-letter topic",
            rejected=rejected_out,
        )
    return JSONResponse(
        {
            "accepted": len(checked.event_ids),
            "event_ids": checked.event_ids,
            "rejected": rejected_out,
            "request_id": request_id,
        },
        status_code=202,
    )


def _rejections(
    parsed: ParsedBody, to_check: list[int], checked: list[Rejection]
) -> list[Rejection]:
    """All rejections of a request, by reading index (NDJSON ones name their line)."""
    out = [*parsed.rejected, *(Rejection(to_check[r.index], r.reason, r.detail) for r in checked)]
    out.sort(key=lambda r: r.index)
    if parsed.lines is None:
        return out
    lines = parsed.lines
    return [
        r
        if r.detail.startswith("line ")
        else Rejection(r.index, r.reason, f"line {lines[r.index]}: {r.detail}")
        for r in out
    ]


def _rejection(r: Rejection) -> dict[str, Any]:
    return {"index": r.index, "reason": str(r.reason), "detail": r.detail}


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`: by Content-Length
    before reading anything, else while streaming, never holding more than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body-too-large", f"the body exceeds {limit} bytes (Content-Length)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body-too-large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
