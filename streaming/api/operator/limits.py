"""`GET /api/v1/limits`: per metric its unit, the contract's valid range and the alert rules'
limits, so a client draws gauges and limit lines from the platform's own numbers (the event
contract's `UNITS`/`RANGES` and the state writer's default rules) instead of a copy of them.
A state writer started with `--rules FILE` uses that file's limits; this answer shows the
defaults."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from streaming.api.keys import ApiKey
from streaming.api.operator.models import Json, errors
from streaming.api.operator.params import READ
from streaming.consumers.alerting import DEFAULT_RULES
from streaming.events.model import RANGES, UNITS, Metric

router = APIRouter(tags=["machines"])


def limits_by_metric() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for metric in Metric:
        low, high = RANGES[metric]
        out[str(metric)] = {
            "unit": UNITS[metric],
            "range": [low, high],
            "limits": [
                {
                    "rule": r.name,
                    "severity": str(r.severity),
                    "low": r.low,
                    "high": r.high,
                    "consecutive": r.consecutive,
                }
                for r in DEFAULT_RULES
                if r.kind == "limit" and r.metric == metric
            ],
        }
    return out


@router.get(
    "/limits",
    summary="Units, valid ranges and alert limits per metric",
    description=__doc__,
    responses={**errors(401, 403)},  # type: ignore[arg-type]
)
async def limits(key: Annotated[ApiKey, Depends(READ)]) -> Json:
    return Json({"metrics": limits_by_metric()})
