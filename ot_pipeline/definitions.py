"""The code location: assembles assets, checks, jobs, sensors, schedules and resources (nothing
else). Assets and their checks live in `assets/<domain>.py`; jobs in `jobs.py`, sensors in
`sensors.py`, the schedule in `schedules.py`, resources in `resources.py`.

`dagster dev -w workspace.yaml` loads `defs`; tests and `ot pipeline run` call
`build_definitions(settings)` with their own settings.
"""

from __future__ import annotations

import dagster as dg

from ot_pipeline.assets.anomalies import anomalies, anomalies_schema
from ot_pipeline.assets.archive import (
    daily_archive,
    daily_archive_matches_readings,
    landing_retention,
)
from ot_pipeline.assets.health import machine_health_hourly
from ot_pipeline.assets.readings import READINGS_CHECKS, landing_files, readings
from ot_pipeline.assets.rollups import ROLLUP_ASSETS, ROLLUP_CHECKS
from ot_pipeline.assets.scorecard import detection_scorecard, ground_truth
from ot_pipeline.assets.windows import WINDOW_CHECKS, windows_1m, windows_5m
from ot_pipeline.jobs import daily_job, hourly_job
from ot_pipeline.resources import resources_from_settings
from ot_pipeline.schedules import daily_archive_schedule
from ot_pipeline.sensors import automation_sensor, landing_sensor
from streaming.settings import Settings

ASSETS: list[dg.AssetsDefinition | dg.AssetSpec] = [
    landing_files,
    readings,
    windows_1m,
    windows_5m,
    anomalies,
    machine_health_hourly,
    *ROLLUP_ASSETS,
    daily_archive,
    landing_retention,
    ground_truth,
    detection_scorecard,
]
CHECKS: list[dg.AssetChecksDefinition] = [
    *READINGS_CHECKS,
    *WINDOW_CHECKS,
    anomalies_schema,
    *ROLLUP_CHECKS,
    daily_archive_matches_readings,
]


# What the UI's code location page says about the pipeline (Deployment -> ot_pipeline).
OVERVIEW = """\
Industrial sensor readings, from Kafka to trustworthy tables.

1. **ingest** — `ot land` writes micro-batch files (`landing_files`); `landing_sensor` requests
   the job `process_landed_hours` for the hours they touch: at once when an hour closes, every
   5 minutes while data lands.
2. **hourly_analytics** — that job turns them into `readings` (deduplicated), `windows_1m`,
   `windows_5m`, `anomalies` and `machine_health_hourly`, with checks at every hop.
3. **warehouse** — the same run loads them into PostgreSQL (`pg_*`).
4. **archive** and **quality** — `archive_and_score_day` (00:30 UTC, for yesterday) archives
   the day, prunes landing files, and scores detection against the simulator's ground truth.

Partitions start at OT_PARTITIONS_START, else at the first data in the lake.
"""


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        sensors=[landing_sensor, automation_sensor],
        schedules=[daily_archive_schedule],
        jobs=[hourly_job, daily_job],
        resources=resources_from_settings(settings),
        # One process per run, its steps in it (a process per step cost more than the steps).
        executor=dg.in_process_executor,
        metadata={"overview": dg.MetadataValue.md(OVERVIEW)},
    )


defs = build_definitions(Settings.from_env())
