"""`ot pipeline`: run the Dagster assets headless for a range of hours.

`ot pipeline run --from HOUR --to HOUR` materializes every hourly asset for a range of hours and
the daily assets of the days it covers, headless, in the Dagster instance the UI shows. It ends
with one JSON line: per asset its partitions and rows, per check passed or failed, and when a run
failed, the assets that failed (with the error's first line), the checks that failed and the retries
(the PostgreSQL loads retry transient errors: `PG_RETRY` in ot_pipeline/assets/rollups.py).

`ot pipeline home` prepares DAGSTER_HOME (the instance the UI and `ot pipeline run` share) and
prints its path; `make run` starts Dagster in it. `ot pipeline settle-runs` is `make run`'s last
word on stop, after the daemon stopped: runs in flight finish (or are cancelled), queued ones are
cancelled, one line each (`ot_pipeline.instance.settle_runs`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streaming.lake.hours import day_of, hour_keys, parse_hour
from streaming.settings import Settings


def hour_argument(text: str) -> datetime:
    """An hour given as a partition key ('2026-11-22-13:00') or ISO ('2026-11-22T13')."""
    try:
        return parse_hour(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclass
class RunSummary:
    """What the runs did, folded from their Dagster events."""

    assets: dict[str, dict[str, int]] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    failed_assets: dict[str, str] = field(default_factory=dict)  # step -> first line of its error
    retries: dict[str, int] = field(default_factory=dict)  # step -> retries it took

    def add_run(self, name: str, result: Any) -> None:
        partitions: dict[str, set[str]] = {}
        rows: dict[str, int] = {}
        for event in result.all_events:
            kind = event.event_type_value
            if kind == "ASSET_MATERIALIZATION":
                mat = event.event_specific_data.materialization
                asset = mat.asset_key.to_user_string()
                partitions.setdefault(asset, set()).add(mat.partition or "")
                value = mat.metadata.get("rows")
                if value is not None:
                    rows[asset] = int(value.value)
            elif kind == "ASSET_CHECK_EVALUATION":
                evaluation = event.event_specific_data
                self.checks[evaluation.check_name] = "passed" if evaluation.passed else "failed"
            elif kind == "STEP_UP_FOR_RETRY" and event.step_key:
                self.retries[event.step_key] = self.retries.get(event.step_key, 0) + 1
            elif kind == "STEP_FAILURE" and event.step_key:
                self.failed_assets[event.step_key] = _error_line(event.event_specific_data.error)
        for asset, keys in partitions.items():
            self.assets[asset] = {"partitions": len(keys), "rows": rows.get(asset, 0)}
        self.runs.append({"job": name, "run_id": result.run_id, "success": bool(result.success)})

    def as_json(self, extra: Mapping[str, Any]) -> str:
        ok = all(r["success"] for r in self.runs) and all(
            v == "passed" for v in self.checks.values()
        )
        return json.dumps(
            {
                **extra,
                "success": ok,
                "runs": self.runs,
                "assets": self.assets,
                "checks": self.checks,
                "failed_assets": self.failed_assets,
                "failed_checks": sorted(k for k, v in self.checks.items() if v != "passed"),
                "retries": self.retries,
            },
            sort_keys=False,
        )


def _error_line(error: Any) -> str:
    """`first line of the error: first line of its root cause` (Dagster wraps what the asset
    raised, and a retried step's failure says only that it exceeded its retries)."""
    if error is None:
        return "failed"
    root = error
    while root.cause is not None:
        root = root.cause
    lines = [
        (e.message.strip().splitlines() or [""])[0]
        for e in {id(error): error, id(root): root}.values()
    ]
    return ": ".join(line.rstrip(":") for line in lines if line) or "failed"


def run_range(
    settings: Settings,
    first: datetime,
    last: datetime,
    *,
    daily: bool = True,
    ground_truth: bool = True,
    postgres_url: str | None = None,
) -> tuple[RunSummary, dict[str, Any]]:
    """Run the hourly job over [first, last] then the daily job over the days covered."""
    import dagster as dg

    from ot_pipeline.definitions import build_definitions
    from ot_pipeline.instance import open_instance
    from ot_pipeline.jobs import DAILY_JOB, HOURLY_JOB

    instance = open_instance(settings.dagster_home, postgres_url)
    defs = build_definitions(settings)
    summary = RunSummary()
    keys = hour_keys(first, last)
    started = time.perf_counter()
    _progress(f"hourly_pipeline {keys[0]}..{keys[-1]} ({len(keys)} hours)")
    hourly = defs.resolve_job_def(HOURLY_JOB).execute_in_process(
        instance=instance,
        tags=_range_tags(keys[0], keys[-1], "ot pipeline run"),
        raise_on_error=False,
    )
    summary.add_run(HOURLY_JOB, hourly)
    days = sorted({day_of(k) for k in keys})
    if daily:
        selection = [dg.AssetKey("daily_archive"), dg.AssetKey("landing_retention")]
        if ground_truth:
            selection += [dg.AssetKey("ground_truth"), dg.AssetKey("detection_scorecard")]
        _progress(f"daily_pipeline {days[0]}..{days[-1]} ({len(days)} days)")
        result = defs.resolve_job_def(DAILY_JOB).execute_in_process(
            instance=instance,
            tags=_range_tags(days[0], days[-1], "ot pipeline run"),
            asset_selection=selection,
            raise_on_error=False,
        )
        summary.add_run(DAILY_JOB, result)
    extra = {
        "from": keys[0],
        "to": keys[-1],
        "hours": len(keys),
        "days": days,
        "seconds": round(time.perf_counter() - started, 2),
        "dagster_home": str(settings.dagster_home.absolute()),
    }
    return summary, extra


def _range_tags(first: str, last: str, trigger: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
        "ot/trigger": trigger,
    }


def _progress(message: str) -> None:
    print(
        json.dumps({"ts": datetime.now(UTC).isoformat(), "msg": message}),
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ot pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize a range of hours (and the days they cover)")
    run.add_argument("--from", dest="first", type=hour_argument, required=True, help="first hour")
    run.add_argument(
        "--to", dest="last", type=hour_argument, required=True, help="last hour (inclusive)"
    )
    run.add_argument("--no-daily", action="store_true", help="hourly assets only")
    run.add_argument(
        "--no-ground-truth",
        action="store_true",
        help="skip reading sim.faults and the detection scorecard (no simulator ground truth)",
    )
    sub.add_parser("home", help="prepare DAGSTER_HOME and print its path")
    settle = sub.add_parser(
        "settle-runs",
        help="after the daemon stopped: let runs in flight finish, cancel the rest (make run)",
    )
    settle.add_argument("--wait", type=float, default=30.0, help="seconds to let runs finish")
    settle.add_argument(
        "--since", type=float, help="epoch seconds the stop began: also report runs ended since"
    )
    args = parser.parse_args(argv)
    if args.command == "home":
        from ot_pipeline.instance import ensure_dagster_home

        settings = Settings.from_env()
        postgres_url = os.environ.get("OT_DAGSTER_PG_URL") or None
        print(ensure_dagster_home(settings.dagster_home, postgres_url), flush=True)
        return 0
    if args.command == "settle-runs":
        from ot_pipeline.instance import open_instance, settle_runs

        settings = Settings.from_env()
        postgres_url = os.environ.get("OT_DAGSTER_PG_URL") or None
        with open_instance(settings.dagster_home, postgres_url) as instance:
            settle_runs(
                instance, args.wait, say=lambda line: print(line, flush=True), since=args.since
            )
        return 0
    if args.last < args.first:
        parser.error("--to is before --from")
    settings = Settings.from_env()
    if settings.partitions_start is None:
        # The partitions start at the lake's first data, read when the code loads: hours asked
        # for here that lie before it (history not landed yet, e.g.) widen them for this run.
        os.environ["OT_PARTITIONS_START"] = args.first.strftime("%Y-%m-%d-%H:%M")
    elif args.first < settings.partitions_start:
        parser.error(
            f"--from {args.first:%Y-%m-%d-%H:%M} is before OT_PARTITIONS_START "
            f"({settings.partitions_start:%Y-%m-%d-%H:%M}): set it earlier or unset it"
        )
    summary, extra = run_range(
        settings,
        args.first,
        args.last,
        daily=not args.no_daily,
        ground_truth=not args.no_ground_truth,
        postgres_url=os.environ.get("OT_DAGSTER_PG_URL") or None,
    )
    line = summary.as_json(extra)
    print(line, flush=True)
    return 0 if json.loads(line)["success"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
