"""The ASGI app of `ot api`: one FastAPI app, a router per concern (the webhook gateway, the
operator API under `/api/v1`: machines, history, anomalies, production, readiness, alerts and
the live stream), the operator dashboard's static files at `/`, errors as problem+json, one JSON
log line per request, CORS for the origins configured in `OT_API_CORS_ORIGINS`.

The clients the routers share (Kafka producer, Redis, the key ring, the change-feed reader) are
built in the lifespan from one `Settings` and closed there: on shutdown the server first stops
accepting and lets the in-flight requests finish, then the producer delivers whatever is still
queued.
"""

from __future__ import annotations

import gc
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streaming.api import alerts, dashboard, gateway, operator, stream
from streaming.api.alerts import AlertService
from streaming.api.delivery import AckedProducer
from streaming.api.fanout import ChangeFeed
from streaming.api.keys import KeyRing
from streaming.api.operator.fast import FastReads
from streaming.api.problems import (
    Problem,
    http_exception_handler,
    problem_handler,
    validation_exception_handler,
)
from streaming.api.ratelimit import Limits, RateLimiter
from streaming.api.webhook_checks import CoalescingChecker
from streaming.kafka.config import producer_config
from streaming.kafka.lifecycle import JsonLog
from streaming.observability import metrics
from streaming.observability.logs import log_context
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

DESCRIPTION = """\
HTTP door of the OT platform. Devices and edge gateways push readings to
`POST /webhook/sensor-data` with an `X-API-Key`; a 202 means Kafka acknowledged every accepted
reading. Operators and other systems read the plant under `/api/v1`: live machine state, history,
anomalies, production figures and readiness (role `read`), act on alerts under `/api/v1/alerts`
(role `operate`) and follow the live state on the WebSocket `/api/v1/stream`. Times are epoch
milliseconds UTC. Errors are `application/problem+json` (RFC 9457). See docs/api.md.
"""


FEED_BLOCK_MS = 1000


def kafka_producer_config(settings: Settings) -> dict[str, Any]:
    """The project's producer settings (idempotent, acks=all) tuned for request latency."""
    return producer_config(
        settings,
        **{
            "client.id": "ot-api",
            "linger.ms": 2,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        },
    )


def create_app(settings: Settings | None = None, log: JsonLog | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    log = log or JsonLog("api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = AckedProducer(
            kafka_producer_config(settings), settings.api.kafka_timeout_seconds
        )
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        limits = Limits(
            settings.api.requests_per_second,
            settings.api.readings_per_second,
            settings.api.burst_seconds,
            settings.api.max_readings,
        )
        # XREAD BLOCK holds its connection up to FEED_BLOCK_MS: a client of its own.
        feed_client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=FEED_BLOCK_MS / 1000 + 5, socket_connect_timeout=2.0
        )
        keys = RedisKeys(settings.redis_prefix)
        app.state.keyring = KeyRing(settings.api_keys)
        app.state.anonymous_read = settings.api.anonymous_read
        app.state.redis = client
        app.state.keys = keys
        app.state.log = log
        app.state.alerts = AlertService(client, keys, settings.change_feed_maxlen)
        app.state.feed = ChangeFeed(feed_client, keys.changes, log, block_ms=FEED_BLOCK_MS)
        await app.state.feed.start()
        app.state.gateway = gateway.Gateway(
            settings,
            producer,
            RateLimiter(client, settings.redis_prefix, limits),
            CoalescingChecker(settings.max_future_ms, settings.max_age_ms),
        )
        app.state.operator = await operator.Operator.open(settings)
        app.state.operator.feed = app.state.feed
        # What the process holds once started (modules, the app, its clients: hundreds of
        # thousands of objects) leaves the cyclic collector's sight for good: a full collection
        # then walks only what was made since, instead of stopping the event loop for 60-220 ms
        # every few seconds (measured: the tail of the machine reads, docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        log("started", keys=len(settings.api_keys), topic=settings.topics.readings)
        try:
            yield
        finally:
            await app.state.feed.stop()
            unsent = producer.close()
            await client.aclose()
            await feed_client.aclose()
            await app.state.operator.close()
            log("stopped", unsent=unsent)

    app = FastAPI(
        title="OT platform API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Behind the problem+json handlers, FastAPI's default bodies never show.
        responses={},
    )
    app.add_exception_handler(Problem, problem_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    app.add_exception_handler(Exception, _internal_error)
    app.state.anonymous_read = settings.api.anonymous_read
    app.include_router(gateway.router)
    app.include_router(alerts.router)
    app.include_router(stream.router)
    app.include_router(operator.router)

    @app.get("/health", tags=["health"], summary="Liveness: the process serves requests")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    dashboard.mount(app, settings.api.dashboard_dir)

    app.add_middleware(FastReads)  # innermost: CORS and the request log wrap its answers
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(RequestLog, log=log)
    return app


async def _internal_error(request: Any, exc: Exception) -> Any:
    problem = Problem(500, "internal-error", f"internal error ({type(exc).__name__})")
    return problem.response(request.url.path)


class RequestLog:
    """One JSON line per request: method, path, status, duration, the key's *name* (never the
    key), readings accepted/rejected, and the request id (also sent as `X-Request-ID`)."""

    def __init__(self, app: ASGIApp, log: JsonLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _count_websocket(self.app, scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = secrets.token_hex(8)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            with log_context(request_id=request_id):  # on every line logged for the request
                await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.HTTP_SECONDS.labels(route, scope["method"], str(status)).observe(seconds)
            if state.get("accepted"):
                metrics.GATEWAY_READINGS.labels("accepted").inc(state["accepted"])
            if state.get("rejected"):
                metrics.GATEWAY_READINGS.labels("rejected").inc(state["rejected"])
            client = scope.get("client")
            self.log(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(seconds * 1000, 2),
                key=state.get("key_name"),
                readings=state.get("readings"),
                accepted=state.get("accepted"),
                rejected=state.get("rejected"),
                request_id=request_id,
                client=client[0] if client else None,
            )


async def _count_websocket(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """`ot_websocket_clients`: a connection counts from its accept to its end."""
    accepted = False

    async def send_counting(message: Message) -> None:
        nonlocal accepted
        if message["type"] == "websocket.accept" and not accepted:
            accepted = True
            metrics.WEBSOCKET_CLIENTS.inc()
        await send(message)

    try:
        await app(scope, receive, send_counting)
    finally:
        if accepted:
            metrics.WEBSOCKET_CLIENTS.dec()
