"""`ot stack up | down | status | env | start | stop | restart | kill | pause | resume`:
start/stop/inspect Kafka, Redis, PostgreSQL, Mosquitto (and Prometheus with `up --monitoring`),
or one service or Kafka node (`kafka-2`)."""

from __future__ import annotations

import argparse
import sys
import time

from streaming.stack.local import LocalStack, PortTaken, StackError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ot stack", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start Kafka, Redis, PostgreSQL and Mosquitto (idempotent)")
    up.add_argument("--brokers", type=int, choices=[1, 3], default=None, help="Kafka nodes")
    up.add_argument(
        "--monitoring",
        action="store_true",
        help="also Prometheus (scraping every ot command's /metrics, with alerting rules)",
    )
    sub.add_parser("down", help="stop what `up` started")
    status = sub.add_parser("status", help="exit 0 only when every service answers")
    status.add_argument("--json", action="store_true")
    sub.add_parser("env", help="print export lines for the shell (every broker)")
    for verb, what in (
        ("start", "start one service or Kafka node (e.g. kafka-2) if it is not running"),
        ("stop", "stop one service or Kafka node (SIGTERM)"),
        ("restart", "stop, then start one service or Kafka node"),
        ("kill", "SIGKILL one service or Kafka node (drills)"),
        ("pause", "SIGSTOP one service or Kafka node: hung, not dead (drills)"),
        ("resume", "SIGCONT what `pause` stopped"),
    ):
        one = sub.add_parser(verb, help=what)
        one.add_argument("name", help="kafka, kafka-N, redis, postgres, mosquitto or prometheus")
    args = parser.parse_args(argv)

    stack = LocalStack.from_env(brokers=getattr(args, "brokers", None))
    if getattr(args, "monitoring", False) or (args.action != "up" and stack.monitoring_running()):
        stack = stack.with_monitoring()  # status, env, down: Prometheus too while it runs
    try:
        if args.action == "up":
            started_at = time.perf_counter()
            started = stack.up()
            took = time.perf_counter() - started_at
            print(stack.describe())
            what = ", ".join(started) if started else "nothing (all running)"
            print(f"started: {what} in {took:.1f} s")
            print('next: eval "$(.venv/bin/ot stack env)"')
            return 0
        if args.action in {"start", "stop", "restart", "kill", "pause", "resume"}:
            if args.action == "kill":
                stack.kill(args.name)
                print(f"killed: {args.name}")
                return 0
            if args.action in {"pause", "resume"}:
                stack.pause(args.name, resume=args.action == "resume")
                print(f"{args.action}d: {args.name}")
                return 0
            done = getattr(stack, args.action)(args.name)
            verb = "stopped" if args.action == "stop" else "started"
            print(f"{verb}: {', '.join(done) if done else 'nothing (already so)'}")
            if args.action != "stop":
                print(stack.describe())
            return 0
        if args.action == "down":
            stopped = stack.down()
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
            return 0
        if args.action == "status":
            state = stack.status()
            print(stack.to_json() if args.json else stack.describe())
            taken = stack.conflicts()
            for error in taken.values():
                print(f"ot stack status: {error}", file=sys.stderr)
            return 0 if all(state.values()) and not taken else 1
        for key, value in stack.env().items():
            print(f"export {key}={value}")
        return 0
    except PortTaken as exc:  # one line per port held by something else
        for line in str(exc).splitlines():
            print(f"ot stack {args.action}: {line}", file=sys.stderr)
        return 1
    except StackError as exc:
        print(f"ot stack {args.action}: {exc}", file=sys.stderr)
        return 1
