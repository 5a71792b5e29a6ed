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


# First line of a dagster.yaml that this module wrote: such a file follows the repository's
# dagster.yaml on every start (so fixes to it reach existing instances); a file without the line
# is the operator's own and is never touched.
MANAGED = (
    "# Managed by ot_pipeline.instance from the repository's dagster.yaml;"
    " delete this line to keep local edits.\n"
)


def ensure_dagster_home(home: Path, postgres_url: str | None = None) -> Path:
    """Create DAGSTER_HOME with its dagster.yaml, or refresh a dagster.yaml we wrote earlier."""
    home = home.absolute()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if target.exists() and not target.read_text().startswith(MANAGED):
        return home
    template = REPO_DAGSTER_YAML.read_text() if REPO_DAGSTER_YAML.exists() else ""
    wanted = MANAGED + instance_yaml(template, postgres_url)
    if not target.exists() or target.read_text() != wanted:
        target.write_text(wanted)
    return home


def open_instance(home: Path, postgres_url: str | None = None) -> dg.DagsterInstance:
    """The persistent instance under `home` (DAGSTER_HOME is set for env-based config values)."""
    home = ensure_dagster_home(home, postgres_url)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.from_config(str(home))
