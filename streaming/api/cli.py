"""`ot api`: serve the HTTP API (webhook gateway); `ot api keys new NAME --role ROLE` makes a key.

Serving: uvicorn (uvloop + httptools), one process by default; SIGTERM/SIGINT stop accepting,
let in-flight requests finish (up to `--graceful-timeout` seconds), then deliver what the Kafka
producer still holds. `--server granian` runs the same app on granian (see docs/benchmarks.md for
why uvicorn is the default).
"""

from __future__ import annotations

import argparse
import signal
import sys

from streaming.api.keys import KeyEntryError, Role, new_key
from streaming.observability.logs import EventLog
from streaming.observability.metrics import (
    add_metrics_options,
    multiprocess_registry,
    remove_multiprocess_folder,
    serve_metrics,
)
from streaming.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def main(argv: list[str]) -> int:
    if argv[:1] == ["keys"]:
        return _keys(argv[1:])
    parser = argparse.ArgumentParser(prog="ot api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help="address (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--graceful-timeout", type=float, default=30.0)
    add_metrics_options(parser, "api")
    args = parser.parse_args(argv)
    settings = Settings.from_env()  # fail early, as one line, on bad configuration
    log = EventLog("api")
    # Several workers write their metrics to a shared folder that this process serves summed.
    shared = multiprocess_registry() if args.workers > 1 and args.metrics_port != 0 else None
    try:
        serve_metrics(args, log, shared[0] if shared else None)
        return _serve(args, settings, log)
    finally:
        if shared:
            remove_multiprocess_folder(shared[1])


def _serve(args: argparse.Namespace, settings: Settings, log: EventLog) -> int:
    log(
        "serving",
        url=f"http://{args.host}:{args.port}",
        docs=f"http://{args.host}:{args.port}/docs",
        server=args.server,
        keys=len(settings.api_keys),
    )
    if args.server == "granian":
        return _granian(args)
    return _uvicorn(args, settings)


def _uvicorn(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from streaming.api.app import create_app

    # Several workers import the app by name (each builds it from the same environment).
    app = create_app(settings) if args.workers <= 1 else "streaming.api.app:create_app"
    config = uvicorn.Config(
        app,
        factory=args.workers > 1,
        workers=args.workers,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # the app logs one JSON line per request itself
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=int(args.graceful_timeout),
        backlog=4096,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the stop signal once it has drained; with these handlers in place that
    # re-raise is a no-op, so a graceful stop exits 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server.run()
    return 0 if server.started else 1


def _granian(args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "streaming.api.app:create_app",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=args.workers,
        loop=Loops.uvloop,
        log_access=False,
        workers_kill_timeout=int(args.graceful_timeout),
    ).serve()
    return 0


def _keys(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ot api keys", description="API keys for OT_API_KEYS")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="make a random key; print it once with its entry")
    new.add_argument("name", help="who uses it (logs and rate limits show this name)")
    new.add_argument("--role", required=True, choices=[r.value for r in Role])
    args = parser.parse_args(argv)
    try:
        secret, key = new_key(args.name, args.role)
    except KeyEntryError as exc:
        print(f"ot api keys: {exc}", file=sys.stderr)
        return 2
    print(f"key: {secret}")
    print(f"entry: {key.entry}")
    return 0
