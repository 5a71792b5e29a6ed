"""The code location: assembles assets, checks, sensors, schedules and resources (nothing else).

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
from ot_pipeline.assets.readings import READINGS_CHECKS, landing_files, landing_sensor, readings
from ot_pipeline.assets.rollups import ROLLUP_ASSETS, ROLLUP_CHECKS
from ot_pipeline.assets.schedules import daily_archive_schedule, daily_job, hourly_job
from ot_pipeline.assets.scorecard import detection_scorecard, ground_truth
from ot_pipeline.assets.windows import WINDOW_CHECKS, windows_1m, windows_5m
from ot_pipeline.partitions import HOURLY_LANE
from ot_pipeline.resources import resources_from_settings
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

# Declarative automation of the downstream hourly assets, on by default.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "follow_readings",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    run_tags=HOURLY_LANE,
    description="Materializes downstream hours when their readings change (late data included).",
)


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        sensors=[landing_sensor, automation_sensor],
        schedules=[daily_archive_schedule],
        jobs=[hourly_job, daily_job],
        resources=resources_from_settings(settings),
    )


defs = build_definitions(Settings.from_env())
