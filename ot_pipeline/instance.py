"""The Dagster instance under DAGSTER_HOME, shared by the UI (`dagster dev`) and `ot pipeline run`.

The repo's dagster.yaml is installed into DAGSTER_HOME on first use; with a PostgreSQL URL the
storage block is swapped for PostgreSQL storage (dagster-postgres).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import dagster as dg

REPO_DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"
POSTGRES_STORAGE = "storage:\n  postgres:\n    postgres_url:\n      env: OT_DAGSTER_PG_URL\n"


def instance_yaml(template: str, postgres_url: str | None) -> str:
    """The instance config: the template, with PostgreSQL storage when a URL is configured."""
    if not postgres_url:
        return template
    without = re.sub(r"(?m)^storage:\n(?:[ \t]+.*\n)+", "", template)
    return without.rstrip("\n") + "\n\n" + POSTGRES_STORAGE


def ensure_dagster_home(home: Path, postgres_url: str | None = None) -> Path:
    """Create DAGSTER_HOME with its dagster.yaml if missing; never overwrite an existing one."""
    home = home.absolute()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        template = REPO_DAGSTER_YAML.read_text() if REPO_DAGSTER_YAML.exists() else ""
        target.write_text(instance_yaml(template, postgres_url))
    return home


def open_instance(home: Path, postgres_url: str | None = None) -> dg.DagsterInstance:
    """The persistent instance under `home` (DAGSTER_HOME is set for env-based config values)."""
    home = ensure_dagster_home(home, postgres_url)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.from_config(str(home))
