"""`ot bench`: run the benchmarks against the local stack and print their figures.

Each benchmark is a function `run(settings: Settings, quick: bool) -> dict` in its own module,
registered under the `ot.benchmarks` entry points of pyproject.toml; it returns flat figures
(numbers and short strings). Benchmarks are not tests: they measure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib.metadata import EntryPoint, entry_points

from streaming.settings import Settings

# `ot bench` with no names runs these first, in this order (the stack's cold start before anything
# warms a cache, the cheap micro-benchmarks before the long ones), then any other registered one.
# Installed entry points come back sorted by name, so the order has to be spelled somewhere.
RUN_ORDER = (
    "stack",
    "events",
    "simulator",
    "consumers",
    "mqtt",
    "gateway",
    "api",
    "detection",
    "pipeline",
    "dashboard",
)


def benchmarks() -> dict[str, EntryPoint]:
    """The registered benchmarks by name, in the order `ot bench` runs them."""
    found = {ep.name: ep for ep in entry_points(group="ot.benchmarks")}
    rank = {name: i for i, name in enumerate(RUN_ORDER)}
    return {name: found[name] for name in sorted(found, key=lambda n: (rank.get(n, len(rank)), n))}


def machine() -> str:
    cpus = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()} {cpus} cores {mem_gib:.0f} GiB, Python {platform.python_version()}"
    )


def main(argv: list[str]) -> int:
    registered = benchmarks()
    parser = argparse.ArgumentParser(prog="ot bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*registered, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    print(f"# machine: {machine()}", flush=True)
    failed = 0
    for name in args.names or list(registered):
        started = time.perf_counter()
        try:
            run = registered[name].load()
            figures = run(settings, quick=args.quick)
        except Exception as exc:  # a benchmark failing must not hide the others' figures
            failed += 1
            print(json.dumps({"bench": name, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        figures = {"bench": name, **figures, "wall_s": round(time.perf_counter() - started, 1)}
        print(json.dumps(figures), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
