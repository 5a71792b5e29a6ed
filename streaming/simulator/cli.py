"""`ot simulate`: stream the factory fleet to Kafka, or over MQTT (real time or fast-forward)."""

from __future__ import annotations

import argparse
import json
import signal
from datetime import UTC, datetime

from streaming.kafka.probe import require_kafka
from streaming.observability.logs import EventLog
from streaming.observability.metrics import add_metrics_options, serve_metrics
from streaming.settings import Settings
from streaming.simulator.chaos import FAULT_TYPES, PROFILES
from streaming.simulator.runner import Options, Simulation
from streaming.stack.topics import create_topics


def _rate(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in FAULT_TYPES:
        raise argparse.ArgumentTypeError(
            f"expected TYPE=RATE with TYPE in {', '.join(FAULT_TYPES)}"
        )
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None


def _start(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def parse_args(argv: list[str]) -> Options:
    return parse_command(argv)[0]


def parse_command(argv: list[str]) -> tuple[Options, argparse.Namespace]:
    """The simulation's options, and the command's (metrics endpoint)."""
    parser = argparse.ArgumentParser(
        prog="ot simulate",
        description="Run the factory fleet simulator. Real time by default; --hours (and "
        "optionally --start) switches to fast-forward history. Ends with one line of JSON.",
    )
    parser.add_argument("--machines", type=int, default=10, help="fleet size (default 10)")
    parser.add_argument("--seed", type=int, default=42, help="same seed + fleet = same readings")
    parser.add_argument("--chaos", choices=list(PROFILES), default="default", help="fault profile")
    parser.add_argument(
        "--fault-rate",
        type=_rate,
        action="append",
        default=[],
        metavar="TYPE=R",
        help="override one fault's rate (per machine-hour; malformed: share of "
        "readings); repeatable",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between two readings of one metric (default 1.0)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="real time: readings/s across the fleet (sets the interval)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="real time: seconds to run, 0 = until interrupted (default 60)",
    )
    parser.add_argument(
        "--start",
        type=_start,
        default=None,
        help="fast-forward start, ISO time (default: now - hours, on the hour)",
    )
    parser.add_argument("--hours", type=float, default=None, help="fast-forward: hours of history")
    parser.add_argument(
        "--early-faults",
        type=int,
        default=3,
        help="real time: this many faults (a silent machine, spikes, stuck values) on machines "
        "spread over the fleet in the first two minutes, so the platform has something to show "
        "at once; "
        "0 = off, fast-forward never (default 3)",
    )
    parser.add_argument("--compression", default="lz4", choices=["lz4", "zstd", "snappy", "none"])
    parser.add_argument(
        "--sink",
        choices=["kafka", "mqtt"],
        default="kafka",
        help="where readings go: Kafka (default) or MQTT_URL as devices would publish them, "
        "QoS 1 on {root}/{line}/{machine}/{metric}, for `ot bridge mqtt`; the ground truth "
        "(sim.faults) goes to Kafka either way",
    )
    add_metrics_options(parser, "simulate")
    args = parser.parse_args(argv)
    if args.machines < 1:
        parser.error("--machines must be at least 1")
    if args.interval <= 0:
        parser.error("--interval must be positive")
    if args.start is not None and args.hours is None:
        parser.error("--start needs --hours")
    if args.hours is not None and args.hours <= 0:
        parser.error("--hours must be positive")
    if args.early_faults < 0:
        parser.error("--early-faults must not be negative")
    options = Options(
        machines=args.machines,
        seed=args.seed,
        chaos=args.chaos,
        rates=dict(args.fault_rate),
        interval_s=args.interval,
        rate=args.rate,
        duration_s=args.duration,
        start=args.start,
        hours=args.hours,
        compression=args.compression,
        sink=args.sink,
        early_faults=args.early_faults,
    )
    return options, args


def main(argv: list[str]) -> int:
    options, args = parse_command(argv)
    settings = Settings.from_env()
    # SIGTERM (a supervisor, `make stop`) ends the run as Ctrl-C does: what is generated is
    # flushed and the summary printed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # One short metadata request first: no broker means one line and exit 1 within seconds, not
    # a 30 s wait and a flood of client log lines.
    require_kafka(settings.kafka_bootstrap_servers)
    # Missing topics are created (idempotent); a topic that cannot be reached still shows up as
    # counted delivery failures in the summary, never as silently lost readings.
    create_topics(
        settings.kafka_bootstrap_servers,
        settings.topics,
        readings_partitions=settings.readings_partitions,
    )
    log = EventLog("simulator")
    serve_metrics(args, log)
    summary = Simulation(settings, options, log=log).run()
    print(json.dumps(summary), flush=True)
    ok = summary["delivery_failures"] == 0 and summary["undelivered_at_exit"] == 0
    if options.sink == "mqtt":
        ok = ok and not summary["mqtt_unacknowledged_at_exit"] and not summary["mqtt_rejected"]
    return 0 if ok else 1
