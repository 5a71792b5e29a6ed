"""`GET /api/v1/machines/{id}/history`: one metric over time, from the rollups and the lake.

**The boundary.** The range is cut into UTC hours. An hour is *materialized* when it has ended
(it is before the current hour) and the rollup table of the resolution (`readings_1m`,
`readings_5m`, or the hourly view `readings_hourly`) holds rows of this machine and metric in
it: its buckets come from PostgreSQL. Every other hour of the range (the current one, hours the
pipeline has not loaded yet, hours it loaded before this series had data) is computed from the
lake's landing files of exactly that hour (`lake_reads`), deduplicated by `event_id`. A reading
belongs to one hour by its event time and each hour has exactly one source, so every reading is
counted once and no hour is left out. `boundary` in the answer is the end of the newest hour
taken from PostgreSQL; `sources` lists the intervals and where each came from.

A reading that arrives late for an hour already loaded shows once the pipeline reloads that hour
(the landing sensor and automation do so within minutes); until then the hour shows what was
loaded.

**Resolutions.** `raw` (each reading, from the lake), `1m`, `5m`, `1h` (count, min, max, mean
per bucket, buckets aligned to the epoch; the range is widened to whole buckets), and `auto`
(default): raw when the range holds at most 2,000 readings, else the finest of 1m, 5m, 1h that
gives at most 2,000 buckets, and beyond 2,000 hours whole multiples of an hour (`step_ms`).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path, Query
from psycopg import sql

from streaming.api.keys import ApiKey
from streaming.api.operator import lake_reads
from streaming.api.operator.models import History, Json, errors
from streaming.api.operator.params import (
    DAY_MS,
    HOUR_MS,
    MACHINE_ID,
    MS,
    READ,
    now_ms,
    operator,
    time_range,
    unavailable,
)
from streaming.api.operator.resources import Missing, Operator
from streaming.api.problems import Problem
from streaming.events.model import Metric
from streaming.warehouse_schema import HOURLY_VIEW

router = APIRouter(tags=["history"])

AUTO_POINTS = 2_000
MAX_POINTS = 100_000  # an explicit resolution may return at most this many points
MAX_SPAN_MS = 366 * DAY_MS


class Resolution(StrEnum):
    RAW = "raw"
    M1 = "1m"
    M5 = "5m"
    H1 = "1h"
    AUTO = "auto"


STEP_MS = {Resolution.M1: 60_000, Resolution.M5: 300_000, Resolution.H1: HOUR_MS}
TABLE = {Resolution.M1: "readings_1m", Resolution.M5: "readings_5m", Resolution.H1: HOURLY_VIEW}


def choose(resolution: Resolution, span_ms: int) -> tuple[Resolution, int]:
    """(base resolution, buckets of it per point). `auto` tries raw first when the range is at
    most 2,000 s (the caller falls back to 1m if it holds more readings)."""
    if resolution is not Resolution.AUTO:
        step = STEP_MS.get(resolution, 1_000)  # raw: at least one reading a second assumed
        if span_ms / step > MAX_POINTS:
            raise Problem(
                422,
                "too-many-points",
                f"{resolution} over this range is about {span_ms // step:,} points (at most "
                f"{MAX_POINTS:,}): use a coarser resolution, a shorter range or auto",
            )
        return resolution, 1
    if span_ms <= AUTO_POINTS * 1_000:
        return Resolution.RAW, 1
    for res in (Resolution.M1, Resolution.M5, Resolution.H1):
        if span_ms / STEP_MS[res] <= AUTO_POINTS:
            return res, 1
    return Resolution.H1, math.ceil(span_ms / HOUR_MS / AUTO_POINTS)


def _merge_buckets(rows: list[tuple[int, int, float, float, float]], step: int) -> list[dict]:
    """Base buckets -> points of `step` ms: counts add, min/max, count-weighted mean."""
    if all(ts % step == 0 for ts, *_ in rows) and len({r[0] for r in rows}) == len(rows):
        # one base bucket per point (the usual case): nothing to merge
        return [
            {"ts": ts, "count": count, "min": lo, "max": hi, "mean": mean}
            for ts, count, lo, hi, mean in rows
        ]
    points: list[dict[str, Any]] = []
    for ts, count, lo, hi, mean in rows:
        b = ts // step * step
        if points and points[-1]["ts"] == b:
            p = points[-1]
            total = p["count"] + count
            p["mean"] = (p["mean"] * p["count"] + mean * count) / total
            p["count"] = total
            p["min"] = min(p["min"], lo)
            p["max"] = max(p["max"], hi)
        else:
            points.append({"ts": b, "count": count, "min": lo, "max": hi, "mean": mean})
    return points


async def _rollup_rows(
    op: Operator, res: Resolution, machine: str, metric: str, start: int, end: int
) -> list[tuple[int, int, float, float, float]]:
    statement = sql.SQL(
        "SELECT (extract(epoch FROM bucket) * 1000)::bigint, count, min, max, mean FROM {}"
        " WHERE machine_id = %s AND metric = %s AND bucket >= {} AND bucket < {} ORDER BY bucket"
    ).format(op.table(TABLE[res]), MS, MS)
    try:
        rows = await op.query(statement, (machine, metric, start, end))
    except Missing:
        return []
    except (psycopg.OperationalError, psycopg.errors.QueryCanceled) as exc:
        raise unavailable("postgres", exc) from None
    except TimeoutError as exc:  # the pool found no connection in time
        raise unavailable("postgres", exc) from None
    # int/float: the hourly view's sums come back as Decimal
    return [(int(b), int(c), float(lo), float(hi), float(m)) for b, c, lo, hi, m in rows]


def _sources(pg: list[tuple[int, int]], lake: list[tuple[int, int]]) -> list[dict[str, Any]]:
    out = [{"source": "postgres", "from": a, "to": b} for a, b in lake_reads.merge(pg)]
    out += [{"source": "lake", "from": a, "to": b} for a, b in lake_reads.merge(lake)]
    return sorted(out, key=lambda s: s["from"])


@router.get(
    "/machines/{machine_id}/history",
    response_model=History,
    summary="One metric's history: rollups from PostgreSQL, the recent tail from the lake",
    description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    responses=errors(401, 403, 422, 503),  # type: ignore[arg-type]
)
async def history(
    machine_id: Annotated[str, Path(pattern=MACHINE_ID)],
    key: Annotated[ApiKey, Depends(READ)],
    op: Annotated[Operator, Depends(operator)],
    metric: Metric,
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
    resolution: Resolution = Resolution.AUTO,
) -> Json:
    frm, to = time_range(start, end, DAY_MS, MAX_SPAN_MS)
    res, per_point = choose(resolution, to - frm)
    metric_name = str(metric)
    if res is Resolution.RAW:
        limit = AUTO_POINTS + 1 if resolution is Resolution.AUTO else MAX_POINTS + 1
        raw = await lake_reads.raw(op, machine_id, metric_name, frm, to, limit)
        if resolution is Resolution.AUTO and len(raw) > AUTO_POINTS:
            res = Resolution.M1  # more readings than auto wants: 1-minute buckets instead
        else:
            truncated = len(raw) >= limit
            points = [{"ts": t, "value": v, "quality": q} for t, v, q in raw[: limit - 1]]
            return Json(
                {
                    "machine_id": machine_id,
                    "metric": metric_name,
                    "resolution": str(Resolution.RAW),
                    "step_ms": None,
                    "from": frm,
                    "to": to,
                    "boundary": None,
                    "sources": _sources([], [(frm, to)]),
                    "truncated": truncated,
                    "points": points,
                }
            )
    base = STEP_MS[res]
    step = base * per_point
    start_ms = frm // step * step
    end_ms = -(-to // step) * step
    current_hour = now_ms() // HOUR_MS * HOUR_MS
    rows = await _rollup_rows(op, res, machine_id, metric_name, start_ms, end_ms)
    # Materialized: ended hours with rows of this series in the rollup (see the module doc).
    pg_hours = sorted(h for h in {r[0] // HOUR_MS * HOUR_MS for r in rows} if h < current_hour)
    materialized = set(pg_hours)
    rows = [r for r in rows if r[0] // HOUR_MS * HOUR_MS in materialized]
    pg_parts = [(max(h, start_ms), min(h + HOUR_MS, end_ms)) for h in pg_hours]
    lake_parts = _complement(start_ms, end_ms, pg_parts)
    lake_rows = await lake_reads.aggregate(op, machine_id, metric_name, lake_parts, base)
    merged = sorted(rows + lake_rows)
    return Json(
        {
            "machine_id": machine_id,
            "metric": metric_name,
            "resolution": str(res),
            "step_ms": step,
            "from": start_ms,
            "to": end_ms,
            "boundary": pg_hours[-1] + HOUR_MS if pg_hours else None,
            "sources": _sources(pg_parts, lake_parts),
            "truncated": False,
            "points": _merge_buckets(merged, step),
        }
    )


def _complement(start: int, end: int, parts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) minus `parts` (sorted, disjoint)."""
    out = []
    at = start
    for a, b in lake_reads.merge(parts):
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < end:
        out.append((at, end))
    return out
