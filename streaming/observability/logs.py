"""One logging setup for every process: the standard library's `logging`, configured once.

Off a terminal every line on stderr is one JSON object (`ts`, `level`, `component`, `event`, then
the fields), so a log shipper or `jq` reads it; on a terminal the same record is one readable
line. `OT_LOG_LEVEL` (debug, info, warning, error; default info) sets the level. Correlation
fields bound with `log_context(...)` (the consumer's batch, the API's request id) join every line
logged inside that context, whichever module logs it.

The project's components log through `EventLog` (`log("landed", partition=3, first=..)`);
libraries that use `logging` (uvicorn, librdkafka through confluent-kafka's `logger`) reach the
same handler. librdkafka can repeat a line per reconnect attempt: `RateLimit` lets a few through
per facility and window and says how many it held back.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, TextIO

from streaming.settings import SettingsError

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS |= {"error": logging.ERROR, "critical": logging.CRITICAL}
ROOT = "ot"  # the project's loggers: ot.<component>
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "ot_log", default=MappingProxyType({})
)
_FIELDS = "ot_fields"  # LogRecord attribute holding the event's fields
_COMPONENT = "ot_component"


def level_from_env(env: Mapping[str, str]) -> int:
    """`OT_LOG_LEVEL` as a `logging` level; a bad value is a SettingsError (one line)."""
    raw = env.get("OT_LOG_LEVEL", "").strip().lower() or "info"
    if raw not in LEVELS:
        raise SettingsError(f"OT_LOG_LEVEL={raw!r} is not one of {', '.join(LEVELS)}")
    return LEVELS[raw]


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every line logged inside carries `fields` (batch, request_id, partition, ...)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, _FIELDS, None)
    out: dict[str, Any] = dict(_context.get())
    if fields is None:  # a library's record: its text is the message
        out["message"] = record.getMessage()
    else:
        out.update(fields)
    if record.exc_info:
        out["error"] = logging.Formatter().formatException(record.exc_info)
    return out


def _component(record: logging.LogRecord) -> str:
    return str(getattr(record, _COMPONENT, None) or record.name)


def _event(record: logging.LogRecord) -> str:
    return record.msg if getattr(record, _FIELDS, None) is not None else "log"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, component, event, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        head = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "component": _component(record),
            "event": _event(record),
        }
        return json.dumps({**head, **_record_fields(record)}, default=str)


class ConsoleFormatter(logging.Formatter):
    """For a person at a terminal: `12:04:05 lander landed partition=3 first=0 last=999`;
    warnings and errors say so, and every line first clears a progress line in place."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f" {record.levelname}"
        fields = _record_fields(record)
        text = " ".join(f"{k}={_short(v)}" for k, v in fields.items() if v is not None)
        return f"\r\x1b[K{clock}{level} {_component(record)} {_event(record)} {text}".rstrip()


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def formatter_for(stream: TextIO) -> logging.Formatter:
    """Readable on a terminal, JSON otherwise."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return ConsoleFormatter() if tty else JsonFormatter()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (pytest swaps it per test)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return formatter_for(sys.stderr).format(record)


_configured: _StderrHandler | None = None


def configure_logging(level: int | None = None, *, libraries: bool = True) -> None:
    """The process's one setup: a handler on stderr, level from `OT_LOG_LEVEL` unless given.
    With `libraries` (what `ot` does) it sits at the root logger, so the libraries' lines take
    the same form; without (a component logging inside someone else's process, e.g. Dagster's)
    only the project's `ot.*` loggers use it. Idempotent; a later call may widen it."""
    global _configured
    import os

    if level is None:
        level = level_from_env(os.environ)
    root, ours = logging.getLogger(), logging.getLogger(ROOT)
    if _configured is None:
        _configured = _StderrHandler()
    if libraries:
        ours.removeHandler(_configured)
        if _configured not in root.handlers:
            root.addHandler(_configured)
        root.setLevel(level)
        # httpx logs a line per request it makes (the drills' and the tools' probes filled
        # `ot drill all` with thousands): only at debug.
        for chatty in ("httpx", "httpcore"):
            logging.getLogger(chatty).setLevel(level if level <= logging.DEBUG else logging.WARNING)
    elif _configured not in root.handlers and _configured not in ours.handlers:
        ours.addHandler(_configured)
    ours.setLevel(level)


def _env_level() -> int:
    import os

    try:
        return level_from_env(os.environ)
    except SettingsError:  # `ot` reports a bad OT_LOG_LEVEL; elsewhere: info
        return logging.INFO


def _configure_quietly() -> None:
    configure_logging(_env_level(), libraries=False)


class EventLog:
    """A component's structured log: `log(event, **fields)` at info, `log.warning(...)`,
    `log.error(...)`, `log.debug(...)`. Without a `stream` it goes through the process's one
    setup (stderr); with one (tests, benchmarks) to that stream alone, formatted for it."""

    def __init__(self, component: str, stream: TextIO | None = None) -> None:
        self.component = component
        if stream is None:
            self.stream: TextIO = sys.stderr
            self.logger = logging.getLogger(f"{ROOT}.{component}")
        else:
            self.stream = stream
            self.logger = logging.getLogger(f"{ROOT}.{component}.{id(self):x}")
            self.logger.propagate = False
            handler = logging.StreamHandler(stream)
            handler.setFormatter(formatter_for(stream))
            self.logger.handlers = [handler]
            ours = logging.getLogger(ROOT)
            self.logger.setLevel(ours.level if ours.level != logging.NOTSET else _env_level())

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if _configured is None and self.logger.propagate:
            _configure_quietly()  # a component used outside `ot` (tests, Dagster, notebooks)
        if self.logger.isEnabledFor(level):
            extra = {_FIELDS: fields, _COMPONENT: self.component}
            self.logger.log(level, event, extra=extra)

    def __call__(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)


class RateLimit:
    """At most `burst` lines per key (e.g. a librdkafka facility) within `window_s`; the first
    line after a window that held some back says how many (`suppressed`)."""

    def __init__(self, burst: int = 5, window_s: float = 30.0) -> None:
        self.burst = burst
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> start, passed, held

    def allow(self, key: str, now: float | None = None) -> tuple[bool, int]:
        """(let this line through?, lines held back in the window that just ended)."""
        now = time.monotonic() if now is None else now
        start, passed, held = self._windows.get(key, (now, 0, 0))
        if now - start >= self.window_s:
            self._windows[key] = (now, 1, 0)
            return True, held
        if passed < self.burst:
            self._windows[key] = (start, passed + 1, held)
            return True, 0
        self._windows[key] = (start, passed, held + 1)
        return False, 0


class KafkaClientLog(logging.Handler):
    """librdkafka's own lines (a client's `logger` setting) into the one log, as `kafka_log`
    events at their level, rate-limited per facility."""

    def __init__(self, log: EventLog, limit: RateLimit | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.log = log
        self.limit = limit or RateLimit()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) >= 3:
            facility, client, message = str(args[0]), str(args[1]), str(args[2])
        else:
            facility, client, message = "LOG", "", record.getMessage()
        self.forward(record.levelno, facility, client, message)

    def forward(self, level: int, facility: str, client: str, message: str) -> None:
        allowed, held = self.limit.allow(f"{client}/{facility}")
        if not allowed:
            return
        fields: dict[str, Any] = {"facility": facility, "client": client, "message": message[-500:]}
        if held:
            fields["suppressed"] = held
        self.log._emit(max(level, logging.DEBUG), "kafka_log", fields)


_kafka_logger: logging.Logger | None = None


def kafka_logger() -> logging.Logger:
    """The `logger` every Kafka client of the project gets (streaming/kafka/config.py): its
    warnings and errors reach the one log, rate-limited, instead of librdkafka's raw stderr."""
    global _kafka_logger
    if _kafka_logger is None:
        logger = logging.getLogger(f"{ROOT}.rdkafka")
        logger.handlers = [KafkaClientLog(EventLog("kafka"))]
        # librdkafka's info lines are chatty: only with OT_LOG_LEVEL=debug.
        debug = logging.getLogger(ROOT).getEffectiveLevel() <= logging.DEBUG
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
        logger.propagate = False
        _kafka_logger = logger
    return _kafka_logger
