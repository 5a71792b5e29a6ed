"""The lake side of the history: one series' readings from the landing files, with DuckDB.

For each UTC hour asked for, the landing files whose footer lists that hour are read (the footers
are cached per path), filtered to the hour, and deduplicated by `event_id` keeping the first
landed copy (lowest Kafka partition, then offset), as the `readings` asset does. An hour that no
landing file touches any more (retention removed them after the daily archive) is read from its
`readings` partition, which is already deduplicated. So an hour always has exactly one source.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streaming.api.operator.resources import Operator
from streaming.lake.hours import hour_key
from streaming.lake.landing import files_by_hour

HOUR_MS = 3_600_000
READINGS_ASSET = "readings"


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, touching intervals joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _split_hours(intervals: list[tuple[int, int]]) -> dict[str, list[tuple[int, int]]]:
    """hour key -> the parts of `intervals` inside that hour."""
    out: dict[str, list[tuple[int, int]]] = {}
    for a, b in intervals:
        h = a // HOUR_MS * HOUR_MS
        while h < b:
            part = (max(a, h), min(b, h + HOUR_MS))
            if part[0] < part[1]:
                out.setdefault(hour_key(_dt(h)), []).append(part)
            h += HOUR_MS
    return out


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _where(intervals: list[tuple[int, int]], params: list[Any]) -> str:
    clauses = []
    for a, b in merge(intervals):
        clauses.append("(ts >= ? AND ts < ?)")
        params += [_dt(a), _dt(b)]
    return "(" + " OR ".join(clauses) + ")" if clauses else "false"


def _plan(op: Operator, intervals: list[tuple[int, int]]) -> tuple[str, list[Any]] | None:
    """Blocking (footers): the SQL of the deduplicated rows (event_id, ts, value, quality) of
    the series inside `intervals`, and its parameters after machine and metric."""
    by_hour = _split_hours(intervals)
    if not by_hour:
        return None
    files = files_by_hour(op.lake, sorted(by_hour))
    landing_paths: set[Path] = set()
    landing_parts: list[tuple[int, int]] = []
    asset_paths: list[Path] = []
    asset_parts: list[tuple[int, int]] = []
    for key, parts in by_hour.items():
        if files[key]:
            landing_paths |= {f.path for f in files[key]}
            landing_parts += parts
        else:
            path = op.lake.hour_path(READINGS_ASSET, key)
            if path.exists():
                asset_paths.append(path)
                asset_parts += parts
    selects = []
    params: list[Any] = []
    if landing_paths:
        names = ", ".join(_quote(p) for p in sorted(landing_paths))
        selects.append(
            "SELECT event_id, ts, value, quality FROM ("
            " SELECT event_id, ts, value, quality, row_number() OVER ("
            "  PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) AS n"
            f" FROM read_parquet([{names}])"
            f" WHERE machine_id = $machine AND metric = $metric AND {_where(landing_parts, params)}"
            ") WHERE n = 1"
        )
    if asset_paths:
        names = ", ".join(_quote(p) for p in asset_paths)
        selects.append(
            f"SELECT event_id, ts, value, quality FROM read_parquet([{names}])"
            f" WHERE machine_id = $machine AND metric = $metric AND {_where(asset_parts, params)}"
        )
    if not selects:
        return None
    return " UNION ALL ".join(selects), params


def _named(sql: str, params: list[Any], machine: str, metric: str) -> tuple[str, dict[str, Any]]:
    """Positional `?` -> `$p0, $p1...` so they mix with the named machine and metric."""
    named: dict[str, Any] = {"machine": machine, "metric": metric}
    parts = sql.split("?")
    out = parts[0]
    for i, rest in enumerate(parts[1:]):
        named[f"p{i}"] = params[i]
        out += f"$p{i}" + rest
    return out, named


async def aggregate(
    op: Operator, machine: str, metric: str, intervals: list[tuple[int, int]], step_ms: int
) -> list[tuple[int, int, float, float, float]]:
    """(bucket ms, count, min, max, mean) per `step_ms` bucket of the series inside
    `intervals` (bucket-aligned), from the lake."""
    plan = await asyncio.to_thread(_plan, op, intervals)
    if plan is None:
        return []
    rows_sql, params = _named(*plan, machine, metric)
    statement = (
        f"SELECT epoch_ms(ts) // {int(step_ms)} * {int(step_ms)} AS b, count(*)::BIGINT,"
        f" min(value), max(value), avg(value) FROM ({rows_sql}) GROUP BY b ORDER BY b"
    )
    rows = await op.duck(statement, params)
    return [(int(b), int(c), float(lo), float(hi), float(m)) for b, c, lo, hi, m in rows]


async def raw(
    op: Operator, machine: str, metric: str, start: int, end: int, limit: int
) -> list[tuple[int, float, str]]:
    """(ts ms, value, quality) of each reading in [start, end), in time order, at most `limit`."""
    plan = await asyncio.to_thread(_plan, op, [(start, end)])
    if plan is None:
        return []
    rows_sql, params = _named(*plan, machine, metric)
    statement = (
        f"SELECT epoch_ms(ts), value, quality FROM ({rows_sql})"
        f" ORDER BY ts, event_id LIMIT {int(limit)}"
    )
    rows = await op.duck(statement, params)
    return [(int(t), float(v), str(q)) for t, v, q in rows]
