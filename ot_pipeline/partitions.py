"""Event-time partitions: hourly for everything derived from readings, daily for archives.

They start at `OT_PARTITIONS_START` (a day or an hour, UTC) or, unset, at the first hour of data
in the lake (the current hour for an empty lake), read when the code location loads: the UI shows
the hours there is data for, not years of empty history to backfill. Data of hours before the
start is skipped by the landing sensor with a warning saying so.

`end_offset=1` makes the current (still open) hour and day materializable, so late-arriving
and fast-forwarded data for the current hour is processed as soon as it lands.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from streaming.lake import Lake
from streaming.lake.hours import hour_key, parse_hour
from streaming.lake.landing import first_event_hour
from streaming.settings import Settings


def partitions_start(settings: Settings, now: datetime | None = None) -> datetime:
    """The first hour of the partitions: the setting, else the first data in the lake, else now."""
    if settings.partitions_start is not None:
        return settings.partitions_start
    current = parse_hour(hour_key(now or datetime.now(UTC)))
    first = first_event_hour(Lake(settings.lake_dir))
    return min(parse_hour(first), current) if first else current


PARTITIONS_START = partitions_start(Settings.from_env())

hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=PARTITIONS_START.strftime("%Y-%m-%d-%H:%M"), timezone="UTC", end_offset=1
)
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START.strftime("%Y-%m-%d"), timezone="UTC", end_offset=1
)

# Every hourly asset materializes a whole range of hours in one run (UI backfills included).
single_run = dg.BackfillPolicy.single_run()

# Downstream assets follow their parents, for late data in old hours too (eager() alone only
# targets the latest time window).
follow_parents = dg.AutomationCondition.eager().without(
    dg.AutomationCondition.in_latest_time_window()
)

HOURLY_TAG = {"ot/cadence": "hourly"}
DAILY_TAG = {"ot/cadence": "daily"}

# Decorator arguments every asset of a cadence shares: `@dg.asset(**HOURLY, ...)`. Hourly assets
# downstream of `readings` also follow their parents (`HOURLY_FOLLOWING`); `readings` itself is
# requested by the landing sensor.
HOURLY: dict[str, Any] = {
    "partitions_def": hourly_partitions,
    "backfill_policy": single_run,
    "tags": HOURLY_TAG,
}
HOURLY_FOLLOWING: dict[str, Any] = {**HOURLY, "automation_condition": follow_parents}
DAILY: dict[str, Any] = {
    "partitions_def": daily_partitions,
    "backfill_policy": single_run,
    "tags": DAILY_TAG,
}

# Runs that write one hour's files (the landing sensor's readings runs and the automation runs
# downstream of them) carry this tag, and dagster.yaml lets one such run go at a time: otherwise a
# readings run for the live hour could rewrite its file while a downstream run of the same hour
# is between its load and its count checks.
HOURLY_LANE_KEY = "ot/lane"
HOURLY_LANE = {HOURLY_LANE_KEY: "hourly"}
