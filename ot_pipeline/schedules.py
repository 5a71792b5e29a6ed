"""The daily schedule: `daily_pipeline` for yesterday, every day at 00:30 UTC."""

from datetime import datetime

import dagster as dg

from ot_pipeline.assets.archive import previous_day
from ot_pipeline.jobs import daily_job


@dg.schedule(
    cron_schedule="30 0 * * *",
    job=daily_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Yesterday's archive, retention and detection scorecard, every day at 00:30 UTC.",
)
def daily_archive_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick: datetime = context.scheduled_execution_time
    day = previous_day(tick)
    return dg.RunRequest(run_key=f"daily-{day}", partition_key=day)
