"""The two sensors.

`landing_sensor` batches: every minute it notes the hours that newly landed files touch (late
hours included) and requests `process_landed_hours` — the whole hourly chain, readings to
PostgreSQL, in one in-process run — for all of them together, but only when it is worth a run:
at once when an hour closed since the last request (or on the first tick: history to catch up),
otherwise once every `PipelineConfig.live_refresh_minutes` (5) while data keeps landing. At a
steady live rate that is 12 refreshes of the open hour and one run as each hour closes: about 13
runs an hour, none while nothing lands.

`follow_readings` (the automation-condition sensor) materializes what is downstream of a changed
hour that no run covered, e.g. `readings` materialized alone from the UI (`follow_parents` in
`partitions.py`); after a `process_landed_hours` run it has nothing to do.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import dagster as dg

from ot_pipeline.jobs import hourly_job
from ot_pipeline.partitions import HOURLY_LANE, hourly_partitions
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_pipeline.transforms.landing import contiguous_ranges
from streaming.lake.footer import event_hours
from streaming.lake.hours import hour_bounds

# Most files a sensor tick reads footers of; the cursor pages through the rest on later ticks.
MAX_FILES_PER_TICK = 2000


@dataclass
class LandingCursor:
    """What the landing sensor remembers between ticks (its Dagster cursor, as JSON)."""

    offsets: dict[int, int] = field(
        default_factory=dict
    )  # highest landed offset seen, per partition
    pending: list[str] = field(default_factory=list)  # hours touched but not requested yet
    requested_at: float = 0.0  # epoch seconds of the last request (0: never)

    @classmethod
    def parse(cls, text: str | None) -> LandingCursor:
        raw = json.loads(text or "{}")
        if "offsets" not in raw:  # the cursor before batching: offsets per partition only
            return cls(offsets={int(k): v for k, v in raw.items()})
        return cls(
            offsets={int(k): v for k, v in raw["offsets"].items()},
            pending=list(raw.get("pending", [])),
            requested_at=float(raw.get("requested_at", 0.0)),
        )

    def text(self) -> str:
        return json.dumps(
            {
                "offsets": {str(k): v for k, v in sorted(self.offsets.items())},
                "pending": self.pending,
                "requested_at": self.requested_at,
            }
        )


def plan_landing_requests(
    cursor: LandingCursor,
    files_after_cursor: list[tuple[int, int, int, list[str]]],
    all_keys: list[str],
    now: float,
    refresh_seconds: float,
) -> tuple[list[tuple[str, str]], LandingCursor, list[str]]:
    """From the cursor and the new files (partition, first, last, event hours): the hour ranges to
    request now (none when it is not worth a run yet), the new cursor, and the hours outside the
    partition set (skipped).

    A request is due when an hour closed since the last request (its data is complete now: the
    run that makes it final should not wait) or `refresh_seconds` passed since the last one."""
    known = set(all_keys)
    touched: set[str] = set()
    offsets = dict(cursor.offsets)
    for partition, _first, last, file_hours in files_after_cursor:
        touched.update(file_hours)
        offsets[partition] = max(offsets.get(partition, -1), last)
    pending = sorted(set(cursor.pending) | (touched & known))
    skipped = sorted(touched - known)
    closed_since_last = any(
        cursor.requested_at < hour_bounds(h)[1].timestamp() <= now for h in pending
    )
    due = bool(pending) and (closed_since_last or now - cursor.requested_at >= refresh_seconds)
    if not due:
        return [], LandingCursor(offsets, pending, cursor.requested_at), skipped
    return contiguous_ranges(pending, all_keys), LandingCursor(offsets, [], now), skipped


@dg.sensor(
    job=hourly_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Requests `process_landed_hours` for the hours newly landed files touch (late "
    "data re-runs old hours), batched: at once when an hour closed, otherwise every "
    "`live_refresh_minutes` (5) while data lands; no run while nothing lands. Cursor: highest "
    "landed offset per Kafka partition, the hours not requested yet, the last request's time.",
)
def landing_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource, pipeline: PipelineConfig
) -> dg.SensorResult:
    cursor = LandingCursor.parse(context.cursor)
    new = [
        f for f in lake.lake().landed_files() if f.last_offset > cursor.offsets.get(f.partition, -1)
    ]
    new = new[:MAX_FILES_PER_TICK]
    if not new and not cursor.pending:
        return dg.SensorResult(skip_reason="no new landing files")
    planned = [(f.partition, f.first_offset, f.last_offset, event_hours(f.path)) for f in new]
    all_keys = list(hourly_partitions.get_partition_keys())
    ranges, advanced, skipped = plan_landing_requests(
        cursor, planned, all_keys, time.time(), pipeline.live_refresh_minutes * 60
    )
    if skipped:
        context.log.warning(
            f"hours before the partitions' start (OT_PARTITIONS_START) or after now, skipped: "
            f"{skipped[:10]}"
        )
    cursor_text = advanced.text()
    if not ranges:
        return dg.SensorResult(
            cursor=cursor_text,
            skip_reason=f"{len(new)} new landing files; hours {advanced.pending} wait for the "
            f"next refresh (every {pipeline.live_refresh_minutes:g} min) or the hour's close",
        )
    digest = hashlib.sha1(cursor_text.encode()).hexdigest()[:12]
    requests = [
        dg.RunRequest(
            run_key=f"landing-{first}-{last}-{digest}",
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
                "ot/trigger": "landing_sensor",
                **HOURLY_LANE,
            },
        )
        for first, last in ranges
    ]
    context.log.info(f"{len(new)} new landing files -> hour ranges {ranges}")
    return dg.SensorResult(run_requests=requests, cursor=cursor_text)


# Declarative automation of the downstream hourly assets, on by default.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "follow_readings",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    run_tags=HOURLY_LANE,
    description="Materializes downstream hours whose readings changed outside "
    "`process_landed_hours` (e.g. readings materialized alone from the UI).",
)
