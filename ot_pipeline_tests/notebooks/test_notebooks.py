"""The DuckDB notebooks run headless, top to bottom, over a lake the pipeline produced."""

from __future__ import annotations

from ot_pipeline_tests.support.paths import REPO_ROOT
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import nbformat
import pytest
from nbclient import NotebookClient

from ot_pipeline.assets.anomalies import anomalies
from ot_pipeline.assets.health import machine_health_hourly
from ot_pipeline.assets.readings import readings
from ot_pipeline.assets.windows import windows_1m, windows_5m
from ot_pipeline.notebook import attach_lake
from ot_pipeline.resources import LakeResource, PipelineConfig
from ot_tools.synthetic_landing import land, synthetic_readings
from streaming.lake import Lake

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nb") / "lake"
    land(Lake(root), synthetic_readings(datetime(2026, 11, 20, 6, tzinfo=UTC), 2, 3, 30.0))
    for hour in ("2026-11-20-06:00", "2026-11-20-07:00"):
        result = dg.materialize(
            [readings, windows_1m, windows_5m, anomalies, machine_health_hourly],
            partition_key=hour,
            resources={"lake": LakeResource(root=str(root)), "pipeline": PipelineConfig()},
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
    return root


def test_attach_lake_creates_one_view_per_lake_table(lake_dir: Path) -> None:
    con = attach_lake(lake_dir)
    views = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"readings", "windows_1m", "anomalies", "machine_health_hourly", "landing"} <= views
    assert con.sql("SELECT count(*) FROM readings").fetchall() == [(2 * 3 * 120 * 5,)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless_over_the_lake(
    path: Path, lake_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OT_LAKE_DIR", str(lake_dir))
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=120, kernel_name="python3").execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len(outputs) >= 3


def test_there_are_three_notebooks() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["data_quality", "fleet_overview", "machine_history"]
