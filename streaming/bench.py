"""`ot bench`: run the benchmarks against the local stack and print their figures.

Each benchmark is a function `run(settings: Settings, quick: bool) -> dict` in its own module; it
returns flat figures (numbers and short strings). Benchmarks are not tests: they measure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

from streaming.settings import Settings

BENCHMARKS: dict[str, str] = {
    "stack": "streaming.stack.bench",
    "events": "streaming.events.bench",
    "simulator": "streaming.simulator.bench",
    "consumers": "streaming.consumers.bench",
    "mqtt": "streaming.bridge.bench",
    "detection": "ot_pipeline.detection.bench",
    "pipeline": "ot_pipeline.bench",
}


def machine() -> str:
    cpus = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()} {cpus} cores {mem_gib:.0f} GiB, Python {platform.python_version()}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ot bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="default: all")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    print(f"# machine: {machine()}", flush=True)
    failed = 0
    for name in args.names or list(BENCHMARKS):
        started = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            figures = module.run(settings, quick=args.quick)
        except Exception as exc:  # a benchmark failing must not hide the others' figures
            failed += 1
            print(json.dumps({"bench": name, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        figures = {"bench": name, **figures, "wall_s": round(time.perf_counter() - started, 1)}
        print(json.dumps(figures), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
