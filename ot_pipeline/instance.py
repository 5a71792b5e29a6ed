"""The Dagster instance under DAGSTER_HOME, shared by the UI (`dagster dev`) and `ot pipeline run`.

The repo's dagster.yaml is installed into DAGSTER_HOME on first use; with a PostgreSQL URL the
storage block is swapped for PostgreSQL storage (dagster-postgres).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
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


# Runs a stop must settle: launched and not finished (the daemon is stopped, so no more come).
_RUNNING = ("STARTING", "STARTED", "CANCELING")
# Runs that were never launched: with the daemon stopped, nothing would launch them.
_WAITING = ("QUEUED", "NOT_STARTED")


def settle_runs(
    instance: dg.DagsterInstance,
    wait_s: float = 30.0,
    say: Callable[[str], None] = print,
    poll_s: float = 0.5,
    since: float | None = None,
) -> dict[str, list[str]]:
    """After the daemon stopped: let the runs in flight finish for up to `wait_s`, then cancel
    what still runs (through the code server that runs it) and what was queued but never
    launched, so that a stop leaves no run failed or hanging. One line per run through `say`;
    returns the run ids by outcome ("finished", "cancelled", plus "failed" for a run that failed
    on its own, and "unsettled" for one that did not end after being cancelled). With `since`
    (epoch seconds: when the stop began), runs that ended since are reported too."""
    outcome: dict[str, list[str]] = {"finished": [], "failed": [], "cancelled": [], "unsettled": []}
    if since is not None:
        ended = instance.get_run_records(
            dg.RunsFilter(updated_after=datetime.fromtimestamp(since, UTC))
        )
        _report_finished(instance, [r.dagster_run for r in ended], say, outcome)
    running = _runs(instance, _RUNNING)
    if running:
        say(f"waiting up to {wait_s:.0f} s for {len(running)} run(s) in flight: "
            + ", ".join(_describe(r) for r in running))  # fmt: skip
    deadline = time.monotonic() + wait_s
    while running and time.monotonic() < deadline:
        time.sleep(poll_s)
        running = _report_finished(instance, running, say, outcome)
    for run in _runs(instance, _WAITING):
        instance.report_run_canceled(run, message="make run stopped before this run was launched")
        outcome["cancelled"].append(run.run_id)
        say(f"cancelled {_describe(run)}: queued, never launched")
    for run in running:
        launched = instance.run_launcher.terminate(run.run_id)
        say(f"cancelling {_describe(run)}: still running after {wait_s:.0f} s"
            + ("" if launched else " (no code server answered)"))  # fmt: skip
    deadline = time.monotonic() + 15
    while running and time.monotonic() < deadline:
        time.sleep(poll_s)
        running = _report_finished(instance, running, say, outcome)
    for run in running:  # its process is gone or deaf: record it as cancelled, not failed
        instance.report_run_canceled(run, message="make run stopped; the run did not answer")
        outcome["unsettled"].append(run.run_id)
        say(f"cancelled {_describe(run)}: did not answer the cancellation")
    if not any(outcome.values()):
        say("no run in flight")
    return outcome


def _runs(instance: dg.DagsterInstance, statuses: tuple[str, ...]) -> list[dg.DagsterRun]:
    wanted = [dg.DagsterRunStatus(s) for s in statuses]
    return list(instance.get_runs(dg.RunsFilter(statuses=wanted)))


def _report_finished(
    instance: dg.DagsterInstance,
    runs: list[dg.DagsterRun],
    say: Callable[[str], None],
    outcome: dict[str, list[str]],
) -> list[dg.DagsterRun]:
    """Report the runs of `runs` that have ended; return those still going."""
    still = []
    for run in runs:
        now = instance.get_run_by_id(run.run_id)
        if now is None or not now.is_finished:
            still.append(run)
            continue
        status = now.status.value
        kind = {"SUCCESS": "finished", "CANCELED": "cancelled"}.get(status, "failed")
        outcome[kind].append(run.run_id)
        say(f"{_describe(run)} {'finished' if kind == 'finished' else status.lower()}")
    return still


def _describe(run: dg.DagsterRun) -> str:
    first = run.tags.get("dagster/asset_partition_range_start") or run.tags.get("dagster/partition")
    last = run.tags.get("dagster/asset_partition_range_end", first)
    hours = f" {first}" + (f"..{last}" if last and last != first else "") if first else ""
    return f"run {run.run_id[:8]} ({run.job_name}{hours})"
