"""Hour keys: the one spelling of an event-time hour across the lake, the landing footers and
Dagster's hourly partitions ("2026-11-22-13:00", always UTC).

Every conversion between a key and a time lives here: the key of a moment, the bounds of a key,
the keys of a range or of a day, the hours a batch of epoch-ms timestamps touches, and the hour
list of a landing-file footer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

# Dagster's hourly partition key (HourlyPartitionsDefinition's default format, minutes always 0).
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:00"
# Dagster's daily partition key; the first 10 characters of an hour key.
DAY_KEY_FORMAT = "%Y-%m-%d"
# Hours people type on the command line: a partition key or ISO, with or without minutes.
HOUR_INPUT_FORMATS = (
    "%Y-%m-%d-%H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d-%H",
)

HOUR = timedelta(hours=1)
HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def hour_key(moment: datetime) -> str:
    """The hourly partition key holding `moment` (UTC)."""
    return moment.astimezone(UTC).strftime(HOUR_KEY_FORMAT)


def hour_bounds(key: str) -> tuple[datetime, datetime]:
    """[start, end) of an hourly partition key such as '2026-11-22-13:00' (UTC)."""
    start = datetime.strptime(key, HOUR_KEY_FORMAT).replace(tzinfo=UTC)
    return start, start + HOUR


def range_bounds(keys: Iterable[str]) -> tuple[datetime, datetime]:
    """[start of the first hour, end of the last hour) of a run's partition keys."""
    ordered = sorted(keys)
    return hour_bounds(ordered[0])[0], hour_bounds(ordered[-1])[1]


def hour_keys(first: datetime, last: datetime) -> list[str]:
    """The keys of every hour from `first` to `last`, both included."""
    count = int((last - first) / HOUR) + 1
    return [hour_key(first + i * HOUR) for i in range(count)]


def parse_hour(text: str) -> datetime:
    """The start of an hour given as a partition key ('2026-11-22-13:00') or ISO ('2026-11-22T13',
    a trailing 'Z' allowed); ValueError for anything else."""
    for fmt in HOUR_INPUT_FORMATS:
        try:
            moment = datetime.strptime(text.rstrip("Z"), fmt)
        except ValueError:
            continue
        return moment.replace(minute=0, second=0, tzinfo=UTC)
    raise ValueError(f"{text!r} is not an hour like 2026-11-22-13:00")


def day_of(key: str) -> str:
    """The daily partition key ('2026-11-22') of an hourly one."""
    return key[:10]


def day_key(moment: datetime) -> str:
    """The daily partition key holding `moment` (UTC)."""
    return moment.astimezone(UTC).strftime(DAY_KEY_FORMAT)


def day_bounds(key: str) -> tuple[datetime, datetime]:
    """[start, end) of a daily partition key such as '2026-11-22' (UTC)."""
    start = datetime.strptime(key, DAY_KEY_FORMAT).replace(tzinfo=UTC)
    return start, start + 24 * HOUR


def day_hours(key: str) -> list[str]:
    """The 24 hourly keys of a daily key 'YYYY-MM-DD'."""
    start = day_bounds(key)[0]
    return [hour_key(start + h * HOUR) for h in range(24)]


def event_hours(ts_ms: npt.ArrayLike) -> list[str]:
    """The sorted keys of the hours that epoch-millisecond timestamps fall in."""
    ms = np.asarray(ts_ms, dtype=np.int64)
    if ms.size == 0:
        return []
    return [
        hour_key(_EPOCH + timedelta(milliseconds=int(h)))
        for h in np.unique(ms // HOUR_MS) * HOUR_MS
    ]


def hours_of(value: bytes | str | None) -> list[str]:
    """Parse a footer's hour list: comma-separated hourly partition keys."""
    if not value:
        return []
    text = value.decode() if isinstance(value, bytes) else value
    return [k for k in (part.strip() for part in text.split(",")) if k]


def join_hours(keys: Sequence[str]) -> str:
    """Inverse of `hours_of`."""
    return ",".join(keys)
