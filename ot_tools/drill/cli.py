"""`ot drill NAME | all | list`: run fault drills on a stack of their own and report.

Each drill starts what it needs (a three-broker Kafka, Redis and PostgreSQL under `--stack-dir`,
on ports from `--port-base`: never the development stack), runs load, injects its fault, heals
it, waits for catch-up and reconciles: every offset of the readings topic landed or dead-lettered
exactly once, Redis counters equal to the valid readings. It prints a human report and ends with
one JSON line (`drill`, `passed`, `lost`, `duplicated`, `recovery_s`, phases, peak memory); the
exit code is 1 when anything was lost or duplicated or a check failed, 2 when the drill could not
run. `all` runs every drill in order and ends with one JSON line of the verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from ot_tools.drill.harness import DEFAULT_PORT_BASE, DrillError, DrillOptions, print_report
from streaming.stack.local import REPO_ROOT

DrillFn = Callable[[DrillOptions], dict[str, Any]]

# `ot drill all` runs them in this order (quick and self-contained first).
ORDER = (
    "hostile-input",
    "consumer-loss",
    "redis-outage",
    "broker-loss",
    "network-partition",
    "lake-disk-full",
    "overload",
    "postgres-outage",
)


def registered() -> dict[str, EntryPoint]:
    """Drills registered as `ot.drills` entry points, in run order."""
    found = {ep.name: ep for ep in entry_points(group="ot.drills")}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    return {n: found[n] for n in names}


def run_one(name: str, fn: DrillFn, options: DrillOptions) -> dict[str, Any]:
    try:
        report = fn(options)
    except DrillError as exc:
        print(f"ot drill {name}: {exc}", file=sys.stderr)
        return {"drill": name, "passed": False, "error": str(exc)}
    print_report(report)
    return report


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the drill stops its children and heals its stack on the way out


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("ot drill: interrupted (children stopped, stack healed)", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    drills = registered()
    parser = argparse.ArgumentParser(prog="ot drill", description=__doc__)
    parser.add_argument("name", choices=[*drills, "all", "list"], help="the drill, all, or list")
    parser.add_argument("--quick", action="store_true", help="short phases, lighter load")
    parser.add_argument(
        "--stack-dir",
        type=Path,
        default=Path(os.environ.get("OT_DRILL_STACK_DIR") or REPO_ROOT / ".drill-stack"),
        help="the drill stack's folder (default .drill-stack, or OT_DRILL_STACK_DIR)",
    )
    parser.add_argument(
        "--port-base",
        type=int,
        default=int(os.environ.get("OT_DRILL_PORT_BASE") or DEFAULT_PORT_BASE),
        help="Kafka on this port and the next two (controllers +100), Redis +200, "
        f"PostgreSQL +201 (default {DEFAULT_PORT_BASE}, or OT_DRILL_PORT_BASE)",
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave the drill stack up")
    parser.add_argument("--rate", type=float, default=None, help="readings/s of the load")
    args = parser.parse_args(argv)
    if args.name == "list":
        for name, ep in drills.items():
            print(f"{name:18} {' '.join((ep.load().__doc__ or '').split())}")
        return 0
    if not 1024 < args.port_base < 65000:
        print(f"ot drill: --port-base {args.port_base} is out of range", file=sys.stderr)
        return 2
    names = list(drills) if args.name == "all" else [args.name]
    verdicts = []
    for i, name in enumerate(names):
        last = i == len(names) - 1
        options = DrillOptions(
            quick=args.quick,
            stack_dir=args.stack_dir,
            port_base=args.port_base,
            keep_stack=args.keep_stack or not last,  # `all`: one stack for the whole sequence
            rate=args.rate,
        )
        verdicts.append(run_one(name, drills[name].load(), options))
    if args.name == "all":
        summary = {
            "drills": [
                {k: v.get(k) for k in ("drill", "passed", "lost", "duplicated", "recovery_s")}
                for v in verdicts
            ],
            "passed": all(v["passed"] for v in verdicts),
        }
        print(json.dumps(summary), flush=True)
    if any("error" in v for v in verdicts):
        return 2
    return 0 if all(v["passed"] for v in verdicts) else 1
