"""`ot bridge mqtt`: subscribe to the plant's MQTT broker and forward readings to Kafka."""

from __future__ import annotations

import argparse
from pathlib import Path

from streaming.bridge.mqtt import BridgeOptions, MqttBridge
from streaming.kafka.lifecycle import Bounds, JsonLog, Progress, StopFlag, print_summary
from streaming.observability.metrics import add_metrics_options, serve_metrics
from streaming.settings import Settings


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ot bridge", description=__doc__)
    sub = parser.add_subparsers(dest="bridge", required=True)
    p = sub.add_parser(
        "mqtt",
        help="MQTT (QoS 1, persistent session) -> sensor-readings",
        description="Subscribe to factory/{line}/{machine}/{metric} and Sparkplug B "
        "spBv1.0/{group}/DBIRTH|DDATA/{edge}/{device} on MQTT_URL with QoS 1 and a "
        "persistent session; acknowledge each message only after Kafka confirmed what it became "
        "(readings to sensor-readings, invalid ones to the DLQ with stage mqtt). Ends with one "
        "line of JSON. See docs/mqtt.md.",
    )
    defaults = BridgeOptions()
    p.add_argument(
        "--client-id",
        default=defaults.client_id,
        help="MQTT client id = the broker session that holds unacknowledged messages "
        "(default %(default)s; one per bridge process)",
    )
    p.add_argument(
        "--session-expiry",
        type=int,
        default=defaults.session_expiry_s,
        help="seconds the broker keeps the session while the bridge is away (default a week)",
    )
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=defaults.batch_wait_s * 1000,
        help="how long a batch may wait to fill after its first message (default %(default)g)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=defaults.max_in_flight,
        help="messages received but not yet acknowledged (at most 65535)",
    )
    p.add_argument("--poll-timeout", type=float, default=defaults.poll_timeout_s)
    p.add_argument(
        "--delivery-timeout-ms",
        type=int,
        default=defaults.delivery_timeout_ms,
        help="a reading Kafka has not confirmed by then fails; the bridge reconnects without "
        "acknowledging and the broker redelivers (default %(default)s)",
    )
    p.add_argument("--until-idle", type=float, help="stop after this many seconds without data")
    p.add_argument("--max-messages", type=int, help="stop after receiving this many messages")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--progress-every", type=float, default=2.0, help="seconds between progress")
    p.add_argument("--status-file", type=Path, help="heartbeat file for a healthcheck")
    p.add_argument(
        "--sparkplug-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="read Sparkplug B DBIRTH/DDATA of this group only (repeatable; default all groups)",
    )
    p.add_argument("--no-sparkplug", action="store_true", help="do not read Sparkplug B")
    add_metrics_options(p, "bridge-mqtt")
    args = parser.parse_args(argv)
    if not 1 <= args.max_in_flight <= 65_535:
        parser.error("--max-in-flight must be 1..65535")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.from_env()
    options = BridgeOptions(
        client_id=args.client_id,
        session_expiry_s=args.session_expiry,
        batch_size=args.batch_size,
        batch_wait_s=args.batch_wait_ms / 1000,
        max_in_flight=args.max_in_flight,
        poll_timeout_s=args.poll_timeout,
        delivery_timeout_ms=args.delivery_timeout_ms,
        status_file=args.status_file,
        sparkplug_groups=() if args.no_sparkplug else tuple(args.sparkplug_group or ["+"]),
    )
    log = JsonLog("bridge-mqtt")
    stop = StopFlag().install()
    serve_metrics(args, log)
    bridge = MqttBridge(settings, options, log)
    summary = bridge.run(
        Bounds(args.max_messages, args.until_idle, args.duration),
        stop,
        Progress(log, args.progress_every),
    )
    print_summary(summary)
    failed = summary["kafka_undelivered_at_exit"] or summary["kafka_failures"]
    return 1 if failed else 0
