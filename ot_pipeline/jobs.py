"""The two jobs, named for what they do, both in-process (one process per run, the steps one after
another in it: the pipeline's steps are Polars/DuckDB work that uses the cores itself, and a
process per step cost more CPU than most steps at a live rate).

- `process_landed_hours`: the hourly chain for a range of hours — landed files -> `readings` ->
  windows, anomalies, machine health -> PostgreSQL, with every check. The landing sensor requests
  it; `ot pipeline run` and the pipeline benchmark run it too.
- `archive_and_score_day`: a day's archive, landing retention, ground truth and the detection
  scorecard; the daily schedule runs it for yesterday.
"""

import dagster as dg

from ot_pipeline.assets.archive import daily_archive, landing_retention
from ot_pipeline.assets.scorecard import detection_scorecard, ground_truth
from ot_pipeline.partitions import HOURLY_LANE

HOURLY_JOB = "process_landed_hours"
DAILY_JOB = "archive_and_score_day"

hourly_job = dg.define_asset_job(
    HOURLY_JOB,
    selection=dg.AssetSelection.tag("ot/cadence", "hourly"),
    tags=HOURLY_LANE,
    executor_def=dg.in_process_executor,
    description="Landed micro-batches of a range of hours -> readings (deduplicated) -> 1- and "
    "5-minute windows, anomalies, machine health in the lake -> PostgreSQL, with every check. "
    "Requested by `landing_sensor` for the hours new files touch (about 13 runs an hour live).",
)
daily_job = dg.define_asset_job(
    DAILY_JOB,
    selection=dg.AssetSelection.assets(
        daily_archive, landing_retention, ground_truth, detection_scorecard
    ),
    # The archive is checked against the day's readings: no readings run may rewrite one meanwhile.
    tags=HOURLY_LANE,
    executor_def=dg.in_process_executor,
    description="A day's readings archived (one zstd file), landing files past retention removed, "
    "the simulator's ground truth refreshed and the day's detection scored against it. Run by "
    "`daily_archive_schedule` for yesterday at 00:30 UTC.",
)
