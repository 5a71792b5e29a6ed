"""`GET /api/v1/health`: readiness. Each check has a `status` (`ok`, `degraded`, `down`):

- `kafka`: the broker answers with the readings topic's metadata;
- `redis`: PING;
- `postgres`: `SELECT 1` through the API's pool;
- `lake`: age of the newest landing file (`degraded` when older than 15 minutes or none yet);
- `consumers`: the state writer's lag and how fresh its published metrics are (it writes them to
  `{p}metrics:state-writer` every progress tick), and the lander group's lag from its committed
  Kafka offsets (`degraded` above 100,000 messages behind, or when the state writer's metrics
  are older than 60 s).

The answer is 503 when a check the caller needs is not `ok`: by default kafka, redis and
postgres (what the API itself serves from); `needs=lake&needs=consumers` adds the others.
"""

from __future__ import annotations

import asyncio
import os
import time
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from streaming.api.keys import ApiKey
from streaming.api.operator.models import Json, Readiness, errors
from streaming.api.operator.params import READ, operator
from streaming.api.operator.resources import KAFKA_TIMEOUT_S, Operator

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = KAFKA_TIMEOUT_S + 2.0
LAKE_FRESH_S = 15 * 60
LAG_WARN = 100_000
METRICS_STALE_S = 60


class Check(StrEnum):
    KAFKA = "kafka"
    REDIS = "redis"
    POSTGRES = "postgres"
    LAKE = "lake"
    CONSUMERS = "consumers"


DEFAULT_NEEDS = (Check.KAFKA, Check.REDIS, Check.POSTGRES)


def _down(exc: BaseException) -> dict[str, Any]:
    return {"status": "down", "detail": f"{type(exc).__name__}: {exc}"[:300]}


async def _timed(coro: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        out: dict[str, Any] = await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
    except Exception as exc:  # every failure is a finding, not an error of this route
        out = _down(exc)
    out["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return out


async def _redis(op: Operator) -> dict[str, Any]:
    async with op.redis.pipeline(transaction=False) as pipe:
        pipe.ping()
        pipe.hgetall(op.keys.metrics)
        _, metrics = await pipe.execute()
    op_state = {k.decode(): v.decode() for k, v in metrics.items()}
    return {"status": "ok", "_state_writer": op_state}


async def _postgres(op: Operator) -> dict[str, Any]:
    async with op.pg.connection() as conn:
        await conn.execute("SELECT 1")
    return {"status": "ok"}


async def _kafka(op: Operator) -> dict[str, Any]:
    found = await asyncio.to_thread(op.lander_lag)
    out = {"status": "ok", "brokers": found["brokers"], "topic": found["topic"]}
    if not found["topic_exists"]:
        out.update(status="degraded", detail=f"topic {found['topic']} does not exist")
    out["_lander_lag"] = found.get("lag")
    return out


def _newest_landing(op: Operator) -> float | None:
    """mtime of the newest landing file (scandir per partition folder, no footer reads)."""
    newest: float | None = None
    landing = op.lake.landing_dir
    if not landing.is_dir():
        return None
    for part in os.scandir(landing):
        if not part.is_dir():
            continue
        for entry in os.scandir(part.path):
            if entry.name.endswith(".parquet"):
                mtime = entry.stat().st_mtime
                newest = mtime if newest is None or mtime > newest else newest
    return newest


async def _lake(op: Operator) -> dict[str, Any]:
    newest = await asyncio.to_thread(_newest_landing, op)
    if newest is None:
        return {"status": "degraded", "detail": "no landing files yet", "newest_age_s": None}
    age = max(0.0, time.time() - newest)
    status = "ok" if age <= LAKE_FRESH_S else "degraded"
    out: dict[str, Any] = {"status": status, "newest_age_s": round(age, 1)}
    if status != "ok":
        out["detail"] = f"newest landing file is {age:.0f} s old (fresh: <= {LAKE_FRESH_S} s)"
    return out


def _consumers(redis_check: dict[str, Any], kafka_check: dict[str, Any]) -> dict[str, Any]:
    writer = redis_check.pop("_state_writer", None)
    lander_lag = kafka_check.pop("_lander_lag", None)
    problems = []
    state: dict[str, Any] = {"lag": None, "metrics_age_s": None}
    if writer:
        state["lag"] = int(writer["lag"]) if "lag" in writer else None
        if "updated_ms" in writer:
            state["metrics_age_s"] = round(
                max(0.0, time.time() - int(writer["updated_ms"]) / 1000), 1
            )
    if state["metrics_age_s"] is None or state["metrics_age_s"] > METRICS_STALE_S:
        problems.append(
            f"the state writer has not published metrics in the last {METRICS_STALE_S} s"
        )
    if state["lag"] is not None and state["lag"] > LAG_WARN:
        problems.append(f"the state writer is {state['lag']} messages behind")
    if lander_lag is None:
        problems.append("the lander's lag is unknown (Kafka)")
    elif lander_lag > LAG_WARN:
        problems.append(f"the lander is {lander_lag} messages behind")
    out: dict[str, Any] = {
        "status": "degraded" if problems else "ok",
        "state_writer": state,
        "lander": {"lag": lander_lag},
    }
    if problems:
        out["detail"] = "; ".join(problems)
    return out


@router.get(
    "/health",
    response_model=Readiness,
    summary="Readiness: Kafka, Redis, PostgreSQL, lake freshness, consumer lag",
    description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    responses={
        503: {"description": "A needed check is not ok (the body is the same report)"},
        **errors(401, 403, 422),
    },  # type: ignore[arg-type]
)
async def readiness(
    key: Annotated[ApiKey, Depends(READ)],
    op: Annotated[Operator, Depends(operator)],
    needs: Annotated[list[Check] | None, Query()] = None,
) -> Json:
    kafka, redis_, postgres, lake = await asyncio.gather(
        _timed(_kafka(op)), _timed(_redis(op)), _timed(_postgres(op)), _timed(_lake(op))
    )
    checks = {
        "kafka": kafka,
        "redis": redis_,
        "postgres": postgres,
        "lake": lake,
        "consumers": _consumers(redis_, kafka),
    }
    wanted = [str(n) for n in (needs or DEFAULT_NEEDS)]
    failing = [n for n in wanted if checks[n]["status"] != "ok"]
    statuses = {c["status"] for c in checks.values()}
    overall = "down" if failing else ("ok" if statuses == {"ok"} else "degraded")
    return Json(
        {"status": overall, "needs": wanted, "failing": failing, "checks": checks},
        status_code=503 if failing else 200,
    )
