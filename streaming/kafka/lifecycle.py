"""What every long-running consumer shares: stop on SIGTERM/SIGINT, bounded runs for tests, a
progress line and structured logs on stderr (streaming/observability/logs.py), and the one-line
JSON summary on stdout."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from streaming.kafka.config import PREFETCH_MB
from streaming.observability.logs import EventLog
from streaming.observability.metrics import serve_metrics


class ConsumerFailed(RuntimeError):
    """The Kafka client kept failing fatally (fenced or otherwise) although fresh clients
    rejoined: the process exits non-zero (EXIT_FAILED) and says why in one line."""


EXIT_FAILED = 3


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes its batch, flushes, commits and closes."""

    def __init__(self) -> None:
        self.stopped = False
        self.signal: str | None = None

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True
        self.signal = signal.Signals(signum).name


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def consumer_parser(
    prog: str, description: str | None, group: str, poll_timeout: float
) -> argparse.ArgumentParser:
    """The options every consumer has: group membership, batching and the bounded modes."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--group", default=group, help="consumer group (default %(default)s)")
    p.add_argument("--instance-id", help="static group member id: a restart rejoins at once")
    p.add_argument("--batch-size", type=int, default=20_000, help="messages per consume call")
    p.add_argument(
        "--poll-timeout", type=float, default=poll_timeout, help="seconds per consume call"
    )
    p.add_argument("--session-timeout-ms", type=int, default=10_000)
    p.add_argument(
        "--prefetch-mb",
        type=_at_least_one,
        default=PREFETCH_MB,
        help="MiB of messages read ahead (bounds memory while catching up; default %(default)s)",
    )
    p.add_argument("--until-idle", type=float, help="stop after this many seconds without data")
    p.add_argument("--max-messages", type=int, help="stop after consuming this many messages")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--progress-every", type=float, default=2.0, help="seconds between progress")
    return p


def run_bounded(consumer: Any, args: argparse.Namespace, stop: StopFlag, log: JsonLog) -> int:
    """Run a consumer's loop within the bounds the options set, then print the JSON summary."""
    summary = consumer.run(
        Bounds(args.max_messages, args.until_idle, args.duration),
        stop,
        Progress(log, args.progress_every),
    )
    print_summary(summary)
    return 0


def serve(
    component: str,
    args: argparse.Namespace,
    topic: str,
    build: Callable[[JsonLog], Any],
    **started: Any,
) -> int:
    """`ot land` / `ot state`: stop on signals, build the consumer, log `started` (with its
    `started` fields), run it within the options' bounds and print the summary."""
    log = JsonLog(component)
    stop = StopFlag().install()
    serve_metrics(args, log)
    consumer = build(log)
    log("started", topic=topic, group=args.group, **started)
    try:
        return run_bounded(consumer, args, stop, log)
    except ConsumerFailed as exc:
        log.error("failed", error=str(exc))  # one clear line; a supervisor restarts the process
        return EXIT_FAILED


@dataclass
class Bounds:
    """Bounded mode: stop after `max_messages`, after `duration` s, or once nothing arrived for
    `until_idle` s while partitions were assigned."""

    max_messages: int | None = None
    until_idle: float | None = None
    duration: float | None = None
    started: float = field(default_factory=time.monotonic)
    last_message: float = field(default_factory=time.monotonic)

    def remaining(self, consumed: int, batch: int) -> int:
        if self.max_messages is None:
            return batch
        return max(0, min(batch, self.max_messages - consumed))

    def saw_messages(self, now: float) -> None:
        self.last_message = now

    def hold_idle(self, now: float) -> None:
        """Nothing to wait for yet (no partitions assigned): the idle time starts again."""
        self.last_message = now

    def reached(self, consumed: int, now: float) -> str | None:
        if self.max_messages is not None and consumed >= self.max_messages:
            return "max_messages"
        if self.until_idle is not None and now - self.last_message >= self.until_idle:
            return "idle"
        if self.duration is not None and now - self.started >= self.duration:
            return "duration"
        return None


# Every component logs through the one logging setup (streaming/observability/logs.py); the
# name stays for the callers that import it from here.
JsonLog = EventLog


class Progress:
    """A progress line on stderr: rewritten in place on a terminal, a JSON log line otherwise."""

    def __init__(self, log: JsonLog, every_s: float = 2.0) -> None:
        self.log = log
        self.every_s = every_s
        self.last = time.monotonic()
        self.tty = log.stream.isatty()

    def due(self, now: float) -> bool:
        return now - self.last >= self.every_s

    def show(self, now: float, **figures: Any) -> None:
        self.last = now
        if self.tty:
            line = "  ".join(f"{k}={v}" for k, v in figures.items())
            self.log.stream.write(f"\r{self.log.component}: {line}\x1b[K")
            self.log.stream.flush()
        else:
            self.log("progress", **figures)

    def done(self) -> None:
        if self.tty:
            self.log.stream.write("\n")


def print_summary(summary: dict[str, Any]) -> None:
    """The last line on stdout: one JSON object a script can parse."""
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    sys.stdout.flush()
