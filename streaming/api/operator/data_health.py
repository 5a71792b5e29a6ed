"""`GET /api/v1/health/data`: the figures of the dashboard's data-health strip and header, in one
answer a browser can poll every few seconds.

- `readings_per_s` and `state_writer_lag`: what the state writer last published in
  `{p}metrics:state-writer` (with `metrics_age_s`, so a stale figure is seen as stale);
- `dead_letters`: messages in the dead-letter topic now (a client polling it gets the rate as
  the difference of two answers over their `at_ms`);
- `last_materialization_ms`: the end of the newest minute the pipeline has loaded into the
  `readings_1m` rollup (null: nothing loaded yet);
- `asset_checks`: how many asset checks the pipeline has, how many ran on their asset's latest
  materialization and which of those failed (from the Dagster webserver, cached 15 s; `error`
  when it cannot be asked);
- `dagster_url`: where the pipeline's UI is (`OT_DAGSTER_URL`), for the strip's link.

Readiness (which dependency fails) stays `GET /api/v1/health`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends
from psycopg import sql

from streaming.api.keys import ApiKey
from streaming.api.operator.models import Json, errors
from streaming.api.operator.params import READ, operator
from streaming.api.operator.resources import Missing, Operator

router = APIRouter(tags=["health"])

MINUTE_MS = 60_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _writer_metrics(op: Operator) -> dict[str, Any]:
    try:
        raw = await op.redis.hgetall(op.keys.metrics)
    except Exception as exc:  # a figure the strip shows as unknown, never an error of the route
        return {"error": f"redis: {type(exc).__name__}"}
    metrics = {_text(k): _text(v) for k, v in raw.items()}
    updated = int(metrics["updated_ms"]) if "updated_ms" in metrics else None
    return {
        "readings_per_s": float(metrics["rate"]) if "rate" in metrics else None,
        "state_writer_lag": int(metrics["lag"]) if "lag" in metrics else None,
        "metrics_age_s": None
        if updated is None
        else round(max(0.0, time.time() - updated / 1000), 1),
    }


async def _last_materialization(op: Operator) -> int | None:
    statement = sql.SQL("SELECT (extract(epoch FROM max(bucket)) * 1000)::bigint FROM {}").format(
        op.table("readings_1m")
    )
    try:
        rows = await op.query(statement, ())
    except (Missing, psycopg.Error, OSError):
        return None
    newest = rows[0][0] if rows else None
    return None if newest is None else int(newest) + MINUTE_MS


async def _dead_letters(op: Operator) -> int | None:
    try:
        return await asyncio.to_thread(op.dead_letters)
    except Exception:  # Kafka down: unknown, as readiness reports
        return None


@router.get(
    "/health/data",
    summary="Data-health figures: readings/s, state-writer lag, dead letters, last load",
    description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    responses={**errors(401, 403)},  # type: ignore[arg-type]
)
async def data_health(
    key: Annotated[ApiKey, Depends(READ)],
    op: Annotated[Operator, Depends(operator)],
) -> Json:
    writer, loaded, dead, checks = await asyncio.gather(
        _writer_metrics(op), _last_materialization(op), _dead_letters(op), op.asset_checks.get()
    )
    return Json(
        {
            "at_ms": int(time.time() * 1000),
            **writer,
            "dead_letters": dead,
            "last_materialization_ms": loaded,
            "asset_checks": checks,
            "dagster_url": op.settings.api.dagster_url,
        }
    )
