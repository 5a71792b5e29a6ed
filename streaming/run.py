"""`make run`: the whole platform on one machine.

Starts the local stack, then the simulator (real time), the HTTP API (`ot api`: the webhook
gateway, the operator API and the dashboard at `/`, port 8000), the MQTT bridge, the lander, the
state writer and Dagster: its code server (which also runs the runs), its daemon (sensors,
automation, schedule) and its UI (port 3000).
Each child writes its log under `.stack/logs/run-*.log`; this process prints one status line every
few seconds. Ctrl-C (or SIGTERM) stops every process it started, the stack services it started
included (services that were already running, e.g. after `make up`, stay up). Dagster's daemon
stops first, so no new run starts; runs in flight finish (or, after 30 s, are cancelled), and the
lines say which (`stop_platform`): a stop leaves no failed run.

Supervision: a child that exits is restarted with backoff (1 s doubling to 30 s, back to 1 s after
a minute of health), with one line saying so; one that keeps crashing (5 exits within 2 minutes)
stops the run with a clear message (`supervise`).

`make start` runs the same in the background (`--detach`: output in `.stack/logs/run.log`, pid in
`.stack/run.pid`), `make stop` stops it (`--stop`) and `make logs` follows its logs (`--logs`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streaming.api.keys import Role, new_key
from streaming.lake import Lake
from streaming.observability.logs import configure_logging
from streaming.observability.metrics import METRICS_PORTS, SCRAPE_JOBS
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings, SettingsError
from streaming.stack.local import REPO_ROOT, LocalStack, PortTaken, StackError
from streaming.stack.processes import pid_alive, process_is


@dataclass
class Restarts:
    """The restart policy of one supervised child: backoff from `first` doubling to `longest`,
    reset after `healthy` seconds of life; `crash_limit` exits within `window` seconds give up."""

    first: float = 1.0
    longest: float = 30.0
    healthy: float = 60.0
    crash_limit: int = 5
    window: float = 120.0
    delay: float = 0.0  # the backoff of the next restart (0: the first one is `first`)
    exits: deque[float] = field(default_factory=deque)

    def exited(self, now: float, lived: float) -> float | None:
        """Record an exit after `lived` seconds of life; return the delay before the next start,
        or None when the child has crashed `crash_limit` times within `window` seconds."""
        if lived >= self.healthy:
            self.delay = 0.0
        self.exits.append(now)
        while self.exits and now - self.exits[0] > self.window:
            self.exits.popleft()
        if len(self.exits) >= self.crash_limit:
            return None
        self.delay = self.first if not self.delay else min(self.delay * 2, self.longest)
        return self.delay


@dataclass
class Child:
    name: str
    cmd: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: Restarts = field(default_factory=Restarts)
    started_at: float = 0.0
    restart_at: float | None = None  # when it is down: the time of its next start

    def start(self, env: dict[str, str]) -> None:
        self.started_at = time.monotonic()
        self.restart_at = None
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,  # our Ctrl-C handler stops it, in order
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM to its process group, without waiting (`stop` waits)."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "    (no log)"
        return "\n".join("    " + line for line in text)


def prepare_dagster_home(ot: str, env: dict[str, str]) -> Path:
    """DAGSTER_HOME with the repository's dagster.yaml: the UI and `ot pipeline run` share it.

    The pipeline owns its instance: `ot pipeline home` prepares it (a relative DAGSTER_HOME is
    taken from the repository root) and prints its path, so this package never imports it.
    Raises CalledProcessError (with the command's stderr) when that fails.
    """
    done = subprocess.run(
        [ot, "pipeline", "home"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


def status_line(settings: Settings) -> str:
    import redis

    parts = []
    lake = Lake(
        settings.lake_dir if settings.lake_dir.is_absolute() else REPO_ROOT / settings.lake_dir
    )
    files = lake.landed_files()
    parts.append(f"landed files {len(files)} ({sum(f.count for f in files):,} offsets)")
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=1)
        keys = RedisKeys(settings.redis_prefix)
        machines = client.zcard(keys.machines)
        alerts = client.hlen(keys.alerts_active)
        parts.append(f"machines {machines}, open alerts {alerts}")
    except Exception as exc:  # the status line must never stop the run
        parts.append(f"redis: {type(exc).__name__}")
    return " | ".join(parts)


INTERACTIVE_READY = "Press Ctrl-C to stop everything started here."
BACKGROUND_READY = (
    "Running in the background: `make stop` stops everything started here, "
    "`make logs` follows the logs."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0, help="readings/s of the simulator")
    parser.add_argument("--chaos", default="default", choices=["none", "default", "heavy"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: never)")
    parser.add_argument("--no-dagster", action="store_true", help="streaming side only")
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    parser.add_argument("--api-port", type=int, default=8000, help="HTTP API port (ot api)")
    parser.add_argument(
        "--monitoring", action="store_true", help="also Prometheus (`ot stack up --monitoring`)"
    )
    control = parser.add_mutually_exclusive_group()
    control.add_argument(
        "--detach", action="store_true", help="run in the background (`make start`)"
    )
    control.add_argument(
        "--stop", action="store_true", help="stop the background run (`make stop`)"
    )
    control.add_argument("--logs", action="store_true", help="follow the logs (`make logs`)")
    parser.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)

    try:
        stack = LocalStack.from_env()
        if args.stop:
            return stop_background(stack)
        if args.logs:
            return follow_logs(stack)
        if args.detach:
            return start_background(stack, [a for a in raw if a != "--detach"])
        Settings.from_env()  # bad configuration: one line before anything starts
        configure_logging()
    except SettingsError as exc:
        print(f"make run: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.monitoring:
        stack = stack.with_monitoring()
    started: list[str] = []  # the stack services this run started (and stops at the end)
    children: list[Child] = []
    try:
        return run(stack, args, started, children)
    except SettingsError as exc:
        print(f"make run: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the platform was up: stop what already started
        return 130
    finally:
        for child in children:
            child.stop()
        if started:
            stack.down(only=started)
            print("stopped stack services: " + ", ".join(started), flush=True)


def run(
    stack: LocalStack, args: argparse.Namespace, started: list[str], children: list[Child]
) -> int:
    """Start the stack (what is not running yet; `started` records it as it goes) and the
    platform's processes, supervise them (`supervise`: restart with backoff) until Ctrl-C,
    SIGTERM, `--duration` or a child that keeps crashing, then stop the children in order. The
    caller stops `started`, whatever happens."""
    try:
        stack.up(started)
    except PortTaken as exc:  # one line per port held by something that is not this stack's
        for line in str(exc).splitlines():
            print(f"make run: {line}", file=sys.stderr)
        return 1
    except StackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    kept = [name for name in stack.services if name not in {s.split("-")[0] for s in started}]
    env = {**os.environ, **stack.env()}
    settings = Settings.from_env(env)
    bin_dir = Path(sys.executable).parent
    ot = str(bin_dir / "ot")
    try:
        env["DAGSTER_HOME"] = str(prepare_dagster_home(ot, env))
    except subprocess.CalledProcessError as exc:
        print(f"make run: `ot pipeline home` failed:\n{exc.stderr}", file=sys.stderr)
        return 1
    env.setdefault("OT_LAKE_DIR", str(REPO_ROOT / settings.lake_dir))
    # The API binds to loopback here: reads and the live stream need no key (a wall display).
    env.setdefault("OT_API_ANONYMOUS_READ", "true")
    settings = Settings.from_env(env)
    session_key = operate_key = None
    # Its server binds to loopback: the operator API's GETs need no key here (a wall display).
    env.setdefault("OT_API_ANONYMOUS_READ", "true")
    if not settings.api_keys:  # keys for this run only: the webhook and the alarms work at once
        session_key, entry = new_key("make-run", Role.INGEST)
        operate_key, operator = new_key("operator", Role.OPERATE)
        env["OT_API_KEYS"] = f"{entry.entry},{operator.entry}"
    logs = stack.logs
    children += [
        Child(
            "simulator",
            [ot, "simulate", "--machines", str(args.machines), "--rate", str(args.rate),
             "--chaos", args.chaos, "--seed", str(args.seed), "--duration", "0"],
            logs / "run-simulator.log",
        ),
        Child(
            "api",
            [ot, "api", "--host", "127.0.0.1", "--port", str(args.api_port)],
            logs / "run-api.log",
        ),
        Child(
            "mqtt-bridge",
            # One persistent session per topic root: a session remembers its subscriptions.
            [ot, "bridge", "mqtt", "--client-id", f"ot-bridge-{settings.mqtt_topic_root}"],
            logs / "run-mqtt-bridge.log",
        ),
        Child("lander", [ot, "land"], logs / "run-lander.log"),
        Child("state-writer", [ot, "state"], logs / "run-state-writer.log"),
    ]  # fmt: skip
    if not args.no_dagster:
        children += dagster_children(bin_dir, Path(env["DAGSTER_HOME"]), args.port, logs)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    for child in children:
        child.start(env)
        if child.name == "dagster-code":  # the UI and the daemon connect to its socket
            socket_path = Path(child.cmd[child.cmd.index("--socket") + 1])
            wait_for_socket(child, socket_path, lambda: stopping)
    print("The OT platform is running:")
    print(f"  Kafka        {settings.kafka_bootstrap_servers}")
    live = RedisKeys(settings.redis_prefix).scan_machines
    print(f"  Redis        {settings.redis_url}  (live state: {live})")
    print(f"  PostgreSQL   {settings.pg_dsn}  (schema {settings.pg_schema})")
    print(f"  Lake         {settings.lake_dir}")
    if not args.no_dagster:
        print(f"  Dagster UI   http://127.0.0.1:{args.port}  (DAGSTER_HOME={env['DAGSTER_HOME']})")
    api_url = f"http://127.0.0.1:{args.api_port}"
    built = (REPO_ROOT / "dashboard" / "dist" / "index.html").exists()
    note = "live fleet, machines, alarms" if built else "not built: `make setup` builds it"
    print(f"  Dashboard    {api_url}/  ({note})")
    print(f"  HTTP API     {api_url}  (webhook POST /webhook/sensor-data, docs {api_url}/docs)")
    print(f"  Operator API {api_url}/api/v1/machines  (reads without a key: OT_API_ANONYMOUS_READ)")
    ws_url = api_url.replace("http://", "ws://")
    print(f"  Alerts       {api_url}/api/v1/alerts  (live: {ws_url}/api/v1/stream?machines=*)")
    topics = f"{settings.mqtt_topic_root}/{{line}}/{{machine}}/{{metric}}"
    print(f"  MQTT         {settings.mqtt_url}  (QoS 1 to {topics}, bridged to Kafka)")
    if session_key:
        print(f"  Ingest key   {session_key}  (this run only; set OT_API_KEYS for your own)")
    if operate_key:
        print(f"  Operate key  {operate_key}  (this run only: the dashboard asks for it on alarms)")
    print(f"  Logs         {logs}/run-*.log")
    ports = ", ".join(f"{SCRAPE_JOBS[c]} :{p}" for c, p in METRICS_PORTS.items())
    print(f"  Metrics      http://127.0.0.1:PORT/metrics ({ports})")
    if "prometheus" in stack.services:
        print(f"  Prometheus   {stack.prometheus.url}  (alerts: {stack.prometheus.url}/alerts)")
    if kept:
        print(f"  Stack        {', '.join(kept)} were already running: they stay up (`make down`)")
    print(BACKGROUND_READY if args.background else INTERACTIVE_READY, flush=True)

    started_at = time.monotonic()
    failed: Child | None = None
    last_status = 0.0
    while not stopping:
        time.sleep(0.5)
        failed = supervise(children, env)
        if failed is not None:
            stopping = True
        if args.duration and time.monotonic() - started_at >= args.duration:
            stopping = True
        if time.monotonic() - last_status >= 5 and not stopping:
            last_status = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] {status_line(settings)}", flush=True)

    if failed is not None:
        code = failed.proc.returncode if failed.proc else "?"
        policy = failed.restarts
        print(
            f"\nmake run: {failed.name} keeps crashing ({policy.crash_limit} exits within "
            f"{policy.window:.0f} s, the last with code {code}); stopping the run. "
            f"Last lines of {failed.log}:",
            file=sys.stderr,
        )
        print(failed.tail(), file=sys.stderr)
    print("\nstopping: " + ", ".join(c.name for c in children), flush=True)
    stop_platform(children, ot, env)
    return 1 if failed is not None else 0


# -- Dagster: a code server, the UI and the daemon, stopped in an order that fails no run --------
DAGSTER_SERVERS = ("dagster-ui", "dagster-code")


def dagster_children(bin_dir: Path, home: Path, port: int, logs: Path) -> list[Child]:
    """The code server of `workspace.yaml`'s location (on a Unix socket under DAGSTER_HOME; it
    also runs the runs), the daemon (sensors, automation, schedule, run queue) and the UI, as
    three children. `dagster dev` would start the same, but stops them all at once: an in-flight
    run was then killed and marked failed, and its code server lingered until its heartbeat
    timed out."""
    socket_path = home / "code-server.sock"
    if len(str(socket_path)) > 100:  # the limit of a Unix socket path is 108 bytes
        socket_path = Path(tempfile.mkdtemp(prefix="ot-dagster-")) / "code-server.sock"
    socket_path.unlink(missing_ok=True)  # left by a run that was killed
    dagster = str(bin_dir / "dagster")
    module, location = workspace_location()
    return [
        Child(
            "dagster-code",
            [dagster, "code-server", "start", "-m", module, "--location-name", location,
             "-d", str(REPO_ROOT), "--socket", str(socket_path), "--log-level", "warning"],
            logs / "run-dagster-code.log",
        ),
        Child(
            "dagster-daemon",
            [str(bin_dir / "dagster-daemon"), "run", "--grpc-socket", str(socket_path)],
            logs / "run-dagster-daemon.log",
        ),
        Child(
            "dagster-ui",
            [str(bin_dir / "dagster-webserver"), "--grpc-socket", str(socket_path),
             "-h", "127.0.0.1", "-p", str(port)],
            logs / "run-dagster-ui.log",
        ),
    ]  # fmt: skip


def workspace_location(workspace: Path = REPO_ROOT / "workspace.yaml") -> tuple[str, str]:
    """(module, location name) of the code location `workspace.yaml` names: the one place that
    says where the pipeline's definitions are (this package never imports them)."""
    import yaml

    entry = yaml.safe_load(workspace.read_text())["load_from"][0]["python_module"]
    module = entry["module_name"] if isinstance(entry, dict) else entry
    name = entry.get("location_name", module) if isinstance(entry, dict) else module
    return str(module), str(name)


def wait_for_socket(
    child: Child, path: Path, stopping: Callable[[], bool], timeout: float = 120
) -> None:
    """Until the code server listens (its code loaded), exits (the supervisor then says so) or
    the run is asked to stop."""
    deadline = time.monotonic() + timeout
    while not path.exists() and child.alive() and not stopping() and time.monotonic() < deadline:
        time.sleep(0.2)


def stop_platform(children: list[Child], ot: str, env: dict[str, str]) -> None:
    """Stop the children so that no Dagster run fails: the daemon first (no new runs; it winds
    down while the rest stops), then the streaming processes (the producer first, so the
    consumers flush what it sent last), then `ot pipeline settle-runs` lets the runs in flight
    finish (or cancels them, saying which), and only then the UI and the code server, which runs
    them."""
    began = time.time()
    by_name = {c.name: c for c in children}
    daemon = by_name.get("dagster-daemon")
    if daemon is not None:
        daemon.terminate()
    for child in children:
        if child.name not in DAGSTER_SERVERS and child is not daemon:
            child.stop()
    if daemon is not None:
        daemon.stop()
        if by_name["dagster-code"].alive():
            settle_runs(ot, env, began)
    servers = [by_name[name] for name in DAGSTER_SERVERS if name in by_name]
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop()


def settle_runs(ot: str, env: dict[str, str], since: float, wait: float = 30) -> None:
    """`ot pipeline settle-runs`: its lines (which runs finished since the stop began at `since`,
    which were cancelled) printed here; a failure to settle is said, never raised (the stop goes
    on)."""
    try:
        done = subprocess.run(
            [ot, "pipeline", "settle-runs", "--wait", str(wait), "--since", f"{since:.3f}"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=wait + 60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        print("dagster: settling the runs in flight timed out", flush=True)
        return
    for line in done.stdout.splitlines():
        print(f"dagster: {line}", flush=True)
    if done.returncode != 0:
        print(f"dagster: settling the runs failed: {done.stderr.strip()[-500:]}", flush=True)


def supervise(children: list[Child], env: dict[str, str]) -> Child | None:
    """One pass of supervision: restart the children whose backoff is over, note those that
    exited (one line each: name, exit code, last log lines, next attempt). Returns the child that
    keeps crashing, when one does (the run then stops)."""
    now = time.monotonic()
    for child in children:
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.start(env)
                pid = child.proc.pid if child.proc else "?"
                now_text = time.strftime("%H:%M:%S")
                print(f"[{now_text}] {child.name} restarted (pid {pid})", flush=True)
            continue
        if child.alive():
            continue
        code = child.proc.returncode if child.proc else "?"
        delay = child.restarts.exited(now, now - child.started_at)
        if delay is None:
            return child
        child.restart_at = now + delay
        last = " | ".join(line.strip()[:160] for line in child.tail(3).splitlines())
        print(
            f"[{time.strftime('%H:%M:%S')}] {child.name} exited (code {code}); restarting in "
            f"{delay:.0f} s (exit {len(child.restarts.exits)} within {child.restarts.window:.0f} s,"
            f" stop at {child.restarts.crash_limit}); last log: {last}",
            flush=True,
        )
    return None


# -- make start / make stop / make logs ----------------------------------------------------------
def _run_pid(stack: LocalStack) -> int | None:
    """The pid of the background run (`make start`) of this stack, when it is still running."""
    try:
        pid = int((stack.root / "run.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_is(pid, "python", arg="streaming.run") else None


def start_background(stack: LocalStack, argv: list[str], timeout: float = 600) -> int:
    """`make start`: `make run` in a session of its own, output to `logs/run.log`; returns once
    the platform is up (printing what to open) or its start failed (printing why)."""
    running = _run_pid(stack)
    if running is not None:
        print(f"make start: already running (pid {running}); `make stop` first", file=sys.stderr)
        return 1
    log = stack.logs / "run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        out.write(f"\n=== make start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "streaming.run", *argv, "--background"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,  # outlives `make start`
        )
    (stack.root / "run.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _read_from(log, offset)
        if BACKGROUND_READY in text:
            header = text[text.find("The OT platform is running:") :]
            print(header[: header.find(BACKGROUND_READY) + len(BACKGROUND_READY)])
            print(f"  Output       {log}")
            return 0
        if proc.poll() is not None:
            (stack.root / "run.pid").unlink(missing_ok=True)
            print(
                f"make start: the platform did not start (exit {proc.returncode}):", file=sys.stderr
            )
            print(text.strip(), file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(
        f"make start: not up after {timeout:.0f} s; see {log} (`make stop` stops it)",
        file=sys.stderr,
    )
    return 1


def stop_background(stack: LocalStack, timeout: float = 600) -> int:
    """`make stop`: SIGTERM to the background run, which stops what it started; waits for it."""
    pid = _run_pid(stack)
    if pid is None:
        (stack.root / "run.pid").unlink(missing_ok=True)
        print("make stop: no background run (`make start`) is running")
        return 0
    log = stack.logs / "run.log"
    offset = log.stat().st_size if log.exists() else 0
    os.kill(pid, signal.SIGTERM)
    print(f"make stop: stopping the background run (pid {pid}) ...", flush=True)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    print(_read_from(log, offset).strip())
    if pid_alive(pid):
        print(
            f"make stop: pid {pid} still running after {timeout:.0f} s; see {log}", file=sys.stderr
        )
        return 1
    (stack.root / "run.pid").unlink(missing_ok=True)
    return 0


def follow_logs(stack: LocalStack) -> int:
    """`make logs`: follow the run's own output and every child's log (Ctrl-C ends it)."""
    files = [stack.logs / "run.log", *sorted(stack.logs.glob("run-*.log"))]
    existing = [str(f) for f in files if f.exists()]
    if not existing:
        print(f"make logs: no logs yet under {stack.logs} (`make start` or `make run` first)")
        return 1
    os.execvp("tail", ["tail", "-n", "20", "-F", *existing])


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    raise SystemExit(main())
