"""`ot`: the one command-line entry point.

Each subcommand lives in its own module with its own `main(argv) -> int`; they are imported only
when called, so `ot stack status` does not pay for importing Dagster.
"""

from __future__ import annotations

import importlib
import sys

from streaming.settings import SettingsError

COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("streaming.stack.cli", "start/stop/inspect the local Kafka, Redis and PostgreSQL"),
    "simulate": ("streaming.simulator.cli", "run the factory fleet simulator"),
    "land": ("streaming.consumers.lander", "land sensor-readings into Parquet (exactly once)"),
    "state": ("streaming.consumers.state_writer", "keep live machine state and alerts in Redis"),
    "bridge": ("streaming.bridge.cli", "bridge MQTT (plant devices) into sensor-readings"),
    "pipeline": ("ot_pipeline.cli", "run the Dagster assets headless for a range of hours"),
    "detect": ("ot_pipeline.detection.cli", "run the anomaly detectors over a CSV recording"),
    "bench": ("streaming.bench", "run the benchmarks and print figures"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: ot COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `ot COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"ot: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except SettingsError as exc:
        print(f"ot {name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
