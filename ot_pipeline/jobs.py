"""The two jobs: the hourly chain as one job (used by `ot pipeline run` and the benchmark), the
daily work (archive, retention, ground truth, scorecard) as another (run by the daily schedule)."""

import dagster as dg

from ot_pipeline.assets.archive import daily_archive, landing_retention
from ot_pipeline.assets.scorecard import detection_scorecard, ground_truth
from ot_pipeline.partitions import HOURLY_LANE

HOURLY_JOB = "hourly_pipeline"
DAILY_JOB = "daily_pipeline"

hourly_job = dg.define_asset_job(
    HOURLY_JOB,
    selection=dg.AssetSelection.tag("ot/cadence", "hourly"),
    tags=HOURLY_LANE,
    description="readings -> windows, anomalies, machine health -> PostgreSQL, with every check.",
)
daily_job = dg.define_asset_job(
    DAILY_JOB,
    selection=dg.AssetSelection.assets(
        daily_archive, landing_retention, ground_truth, detection_scorecard
    ),
    # The archive is checked against the day's readings: no readings run may rewrite one meanwhile.
    tags=HOURLY_LANE,
    description="Archive a day, apply landing retention, refresh ground truth, score detection.",
)
