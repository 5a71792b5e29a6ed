"""`ot pipeline run` and PostgreSQL trouble: the loads retry transient errors (a Dagster retry
policy with backoff), and the run's JSON names what failed."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from ot_pipeline.assets.readings import readings
from ot_pipeline.assets.rollups import ROLLUP_ASSETS
from ot_pipeline.assets.windows import windows_1m
from ot_pipeline.cli import RunSummary
from ot_pipeline.resources import LakeResource, PipelineConfig, PostgresResource
from ot_tools.synthetic_landing import land, synthetic_readings
from streaming.lake import Lake

H0 = datetime(2026, 11, 20, 6, tzinfo=UTC)


def test_every_postgres_load_retries_with_exponential_backoff():
    for asset in ROLLUP_ASSETS:
        policy = asset.op.retry_policy
        assert policy is not None, asset.key
        assert policy.max_retries >= 3 and policy.backoff == dg.Backoff.EXPONENTIAL


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def test_a_run_with_postgres_down_retries_then_names_the_failed_asset(tmp_path: Path):
    lake = Lake(tmp_path / "lake")
    land(lake, synthetic_readings(H0, 1, machines=2, interval_s=60.0))
    pg_1m = next(a for a in ROLLUP_ASSETS if a.key.to_user_string() == "pg_readings_1m")
    result = dg.materialize(
        [readings, windows_1m, pg_1m],
        partition_key="2026-11-20-06:00",
        resources={
            "lake": LakeResource(root=str(lake.root)),
            "pipeline": PipelineConfig(),
            "postgres": PostgresResource(
                dsn=f"postgresql://ot:ot@127.0.0.1:{_dead_port()}/ot?connect_timeout=2"
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    summary = RunSummary()
    summary.add_run("hourly_pipeline", result)
    line = json.loads(summary.as_json({}))
    assert line["success"] is False
    assert list(line["failed_assets"]) == ["pg_readings_1m"]
    assert "connect" in line["failed_assets"]["pg_readings_1m"].lower()
    assert line["retries"] == {"pg_readings_1m": 3}
    assert set(line["assets"]) == {"readings", "windows_1m"}
