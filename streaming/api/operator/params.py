"""What every operator route shares: times in and out, opaque cursors, read access, problems.

Times in answers are epoch milliseconds UTC (as `ts` in the event contract). Query parameters take
epoch milliseconds or ISO 8601 (`2026-11-22T13:00:00Z`; without an offset, UTC).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request
from psycopg import sql
from pydantic import StringConstraints

from streaming.api.auth import require
from streaming.api.keys import Role
from streaming.api.operator.resources import Operator
from streaming.api.problems import Problem
from streaming.events.model import MACHINE_ID_PATTERN, MAX_LINE_ID_CHARS

READ = require(Role.READ)
# Query and path parameters that name machines and lines (the event contract's spelling).
MACHINE_ID = MACHINE_ID_PATTERN
LINE_ID = rf"^[^\x00]{{1,{MAX_LINE_ID_CHARS}}}$"
# Items of list parameters (a pattern on the list itself would apply to the list).
MachineId = Annotated[str, StringConstraints(pattern=MACHINE_ID)]
LineId = Annotated[str, StringConstraints(pattern=LINE_ID)]
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# An epoch-ms parameter as a timestamptz in SQL, exactly (no float rounding).
MS = sql.SQL("(timestamptz 'epoch' + %s * interval '1 millisecond')")


def operator(request: Request) -> Operator:
    op: Operator = request.app.state.operator
    return op


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_time(name: str, text: str | None, default: int) -> int:
    """Epoch ms from `text` (epoch ms or ISO 8601); `default` when absent; 422 otherwise."""
    if text is None or not text.strip():
        return default
    raw = text.strip()
    if raw.lstrip("-").isdigit():
        value = int(raw)
    else:
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise Problem(
                422,
                "invalid-time",
                f"{name}={raw[:64]!r} is neither epoch milliseconds nor ISO 8601 "
                "(e.g. 2026-11-22T13:00:00Z)",
                parameter=name,
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        value = int(moment.timestamp() * 1000)
    if not 0 <= value < 253_402_300_800_000:  # 1970 .. 9999
        raise Problem(422, "invalid-time", f"{name}={raw[:64]!r} is out of range", parameter=name)
    return value


def time_range(
    start: str | None, end: str | None, default_span_ms: int, max_span_ms: int
) -> tuple[int, int]:
    """[from, to) in epoch ms: `to` defaults to now, `from` to `to` - `default_span_ms`."""
    to = parse_time("to", end, now_ms())
    frm = parse_time("from", start, to - default_span_ms)
    if frm >= to:
        raise Problem(422, "invalid-range", f"from ({frm}) must be before to ({to})")
    if to - frm > max_span_ms:
        raise Problem(
            422,
            "invalid-range",
            f"the range spans {(to - frm) / DAY_MS:.1f} days; at most "
            f"{max_span_ms / DAY_MS:.0f} days per request",
        )
    return frm, to


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, kind: str) -> dict[str, Any]:
    """The payload of a cursor this API made for `kind` (a list and its sort); 400 otherwise."""
    try:
        padded = text + "=" * (-len(text) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict) or payload.get("k") != kind or "after" not in payload:
        raise Problem(
            400,
            "invalid-cursor",
            "cursor is not one this list returned (for these sort and filter parameters); "
            "start again without it",
        )
    return payload


def unavailable(dependency: str, exc: BaseException) -> Problem:
    return Problem(
        503,
        f"{dependency}-unavailable",
        f"{dependency} did not answer ({type(exc).__name__}); try again",
        retry_after=5,
    )
