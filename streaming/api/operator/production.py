"""`GET /api/v1/metrics/production`: readings processed, anomaly and alert rates, uptime and time
per status, per machine and per line, by hour or by day.

The figures are the pipeline's `machine_health_hourly` rows (one per machine and materialized
hour) summed per period: `hours` says how many machine-hours a row covers, and `uptime_pct` is
OK + WARNING time over those hours. `alerts` are the pipeline's (anomalies of severity HIGH or
CRITICAL); the rates are per reading. Today's hours that are not materialized yet are in
`today`: the state writer's live counters (valid readings by event-time day, exactly once) next
to what the rollups already hold for today, so `pending` is what the pipeline has still to load.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import psycopg
import redis
from fastapi import APIRouter, Depends, Query
from psycopg import sql

from streaming.api.keys import ApiKey
from streaming.api.operator.fleet import fleet_of
from streaming.api.operator.models import Json, Production, errors
from streaming.api.operator.params import (
    DAY_MS,
    HOUR_MS,
    MS,
    READ,
    LineId,
    now_ms,
    operator,
    time_range,
    unavailable,
)
from streaming.api.operator.resources import Missing, Operator
from streaming.lake.hours import day_key

router = APIRouter(tags=["production"])

TABLE = "machine_health_hourly"
SECONDS = ("ok", "warning", "fault", "maintenance", "no_data")
MAX_SPAN_MS = 366 * DAY_MS


class GroupBy(StrEnum):
    HOUR = "hour"
    DAY = "day"


def _rate(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    """Rates and uptime of summed counters (machine or line)."""
    seconds = row.pop("seconds")
    covered = row["hours"] * 3600.0
    return {
        **row,
        "anomaly_rate": _rate(row["anomalies"], row["readings"]),
        "alert_rate": _rate(row["alerts"], row["readings"]),
        "uptime_pct": round((seconds["ok"] + seconds["warning"]) * 100.0 / covered, 3)
        if covered
        else None,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


@router.get(
    "/metrics/production",
    response_model=Production,
    summary="Production figures per machine and line, by hour or day",
    description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    responses=errors(401, 403, 422, 503),  # type: ignore[arg-type]
)
async def production(
    key: Annotated[ApiKey, Depends(READ)],
    op: Annotated[Operator, Depends(operator)],
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
    group_by: GroupBy = GroupBy.HOUR,
    line: Annotated[list[LineId] | None, Query()] = None,
) -> Json:
    frm, to = time_range(start, end, DAY_MS, MAX_SPAN_MS)
    step = HOUR_MS if group_by is GroupBy.HOUR else DAY_MS
    frm = frm // HOUR_MS * HOUR_MS
    lines = sorted(set(line or ()))
    where: list[sql.Composable] = [
        sql.SQL("hour >= {}").format(MS),
        sql.SQL("hour < {}").format(MS),
    ]
    params: list[Any] = [frm, to]
    if lines:
        where.append(sql.SQL("line_id = ANY(%s)"))
        params.append(lines)
    statement = sql.SQL(
        "SELECT (floor(extract(epoch FROM hour) * 1000 / %s) * %s)::bigint AS period,"
        " machine_id, max(machine_type), max(line_id), count(*), sum(readings),"
        " coalesce(sum(anomalies), 0), coalesce(sum(alerts), 0), coalesce(sum(ok_s), 0),"
        " coalesce(sum(warning_s), 0), coalesce(sum(fault_s), 0),"
        " coalesce(sum(maintenance_s), 0), coalesce(sum(no_data_s), 0),"
        " coalesce(sum(seq_gaps), 0), coalesce(sum(missing_readings), 0)"
        " FROM {} WHERE {} GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(op.table(TABLE), sql.SQL(" AND ").join(where))
    try:
        rows = await op.query(statement, [step, step, *params])
    except Missing:
        rows = []
    except (psycopg.OperationalError, TimeoutError) as exc:
        raise unavailable("postgres", exc) from None
    machines: list[dict[str, Any]] = []
    by_line: dict[tuple[int, str | None], dict[str, Any]] = {}
    for period, machine, mtype, line_id, hours, readings, anomalies, alerts, *rest in rows:
        secs = dict(zip(SECONDS, map(float, rest[:5]), strict=True))
        counters: dict[str, int] = {
            "hours": int(hours),
            "readings": int(readings),
            "anomalies": int(anomalies),
            "alerts": int(alerts),
        }
        machines.append(
            _figures(
                {
                    "period": int(period),
                    "machine_id": machine,
                    "machine_type": mtype,
                    "line_id": line_id,
                    **counters,
                    "seq_gaps": int(rest[5]),
                    "missing_readings": int(rest[6]),
                    "seconds": secs,
                }
            )
        )
        agg: dict[str, Any] = by_line.setdefault(
            (int(period), line_id),
            {
                "period": int(period),
                "line_id": line_id,
                "machines": 0,
                "hours": 0,
                "readings": 0,
                "anomalies": 0,
                "alerts": 0,
                "seconds": dict.fromkeys(SECONDS, 0.0),
            },
        )
        agg["machines"] += 1
        for name, value in counters.items():
            agg[name] += value
        for name, secs_in in secs.items():
            agg["seconds"][name] += secs_in
    line_rows = [
        _figures(v) for _, v in sorted(by_line.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
    ]
    today = await _today(op, frm, to, lines)
    return Json(
        {
            "from": frm,
            "to": to,
            "group_by": str(group_by),
            "machines": machines,
            "lines": line_rows,
            "today": today,
        }
    )


async def _today(op: Operator, frm: int, to: int, lines: list[str]) -> dict[str, Any] | None:
    """Today's live counters against the materialized part of today (None when the range does
    not reach today)."""
    now = now_ms()
    day_start = now // DAY_MS * DAY_MS
    if not (frm < day_start + DAY_MS and to > day_start):
        return None
    day = day_key(datetime.fromtimestamp(now / 1000, UTC))
    try:
        raw = await op.redis.hgetall(op.keys.day_machines(day))
        line_of: dict[str, Any] = {}
        if lines:
            line_of = {m: v["line"] for m, v in (await fleet_of(op).snapshot()).by_id.items()}
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise unavailable("redis", exc) from None
    live = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    if lines:
        live = {m: n for m, n in live.items() if line_of.get(m) in lines}
    where = sql.SQL("hour >= {} AND hour < {}").format(MS, MS)
    params: list[Any] = [day_start, day_start + DAY_MS]
    if lines:
        where = sql.SQL("{} AND line_id = ANY(%s)").format(where)
        params.append(lines)
    statement = sql.SQL("SELECT machine_id, sum(readings) FROM {} WHERE {} GROUP BY 1").format(
        op.table(TABLE), where
    )
    try:
        loaded = {m: int(n) for m, n in await op.query(statement, params)}
    except Missing:
        loaded = {}
    except (psycopg.OperationalError, TimeoutError) as exc:
        raise unavailable("postgres", exc) from None
    per_machine = [
        {
            "machine_id": m,
            "readings": live.get(m, 0),
            "materialized": loaded.get(m, 0),
            "pending": max(0, live.get(m, 0) - loaded.get(m, 0)),
        }
        for m in sorted(live.keys() | loaded.keys())
    ]
    return {
        "day": day,
        "readings": sum(live.values()),
        "materialized": sum(loaded.values()),
        "pending": sum(p["pending"] for p in per_machine),
        "machines": per_machine,
    }
