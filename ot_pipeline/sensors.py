"""The two sensors: the landing sensor requests the `readings` hours that newly landed files touch
(late hours included), and the automation-condition sensor materializes everything downstream of
a changed hour (`follow_parents` in `partitions.py`)."""

import hashlib
import json

import dagster as dg

from ot_pipeline.assets.readings import readings
from ot_pipeline.partitions import HOURLY_LANE, hourly_partitions
from ot_pipeline.resources import LakeResource
from ot_pipeline.transforms.landing import contiguous_ranges
from streaming.lake.footer import event_hours

# Most files a sensor tick reads footers of; the cursor pages through the rest on later ticks.
MAX_FILES_PER_TICK = 2000


def plan_landing_requests(
    files_after_cursor: list[tuple[int, int, int, list[str]]], all_keys: list[str]
) -> tuple[list[tuple[str, str]], dict[int, int], list[str]]:
    """From new files (partition, first, last, event hours): the hour ranges to request, the new
    cursor position per partition, and hours outside the partition set (skipped)."""
    hours: set[str] = set()
    cursor: dict[int, int] = {}
    for partition, _first, last, file_hours in files_after_cursor:
        hours.update(file_hours)
        cursor[partition] = max(cursor.get(partition, -1), last)
    known = set(all_keys)
    return contiguous_ranges(sorted(hours), all_keys), cursor, sorted(hours - known)


@dg.sensor(
    target=[readings],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Requests the hourly readings partitions that newly landed files touch "
    "(late data re-runs old hours). Cursor: highest landed offset seen per Kafka partition.",
)
def landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    seen = {int(k): v for k, v in json.loads(context.cursor or "{}").items()}
    new = [f for f in lake.lake().landed_files() if f.last_offset > seen.get(f.partition, -1)]
    new = new[:MAX_FILES_PER_TICK]
    if not new:
        return dg.SensorResult(skip_reason="no new landing files")
    planned = [(f.partition, f.first_offset, f.last_offset, event_hours(f.path)) for f in new]
    all_keys = list(hourly_partitions.get_partition_keys())
    ranges, advanced, skipped = plan_landing_requests(planned, all_keys)
    if skipped:
        context.log.warning(f"hours outside the partition set, skipped: {skipped[:10]}")
    cursor = {**seen, **advanced}
    cursor_text = json.dumps({str(k): v for k, v in sorted(cursor.items())})
    digest = hashlib.sha1(cursor_text.encode()).hexdigest()[:12]
    requests = [
        dg.RunRequest(
            run_key=f"landing-{first}-{last}-{digest}",
            asset_selection=[readings.key],
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
    minimum_interval_seconds=30,
    run_tags=HOURLY_LANE,
    description="Materializes downstream hours when their readings change (late data included).",
)
