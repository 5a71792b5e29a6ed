"""`make run`: the whole platform on one machine.

Starts the local stack, then the simulator (real time), the HTTP API (`ot api`: the webhook
gateway, port 8000), the lander, the state writer and `dagster dev` (UI on port 3000, with the
daemon that runs the sensor, automation and schedules).
Each child writes its log under `.stack/logs/run-*.log`; this process prints one status line every
few seconds. Ctrl-C (or SIGTERM) stops every process it started, the stack services included.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from streaming.api.keys import Role, new_key
from streaming.lake import Lake
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings
from streaming.stack.local import REPO_ROOT, LocalStack, StackError


@dataclass
class Child:
    name: str
    cmd: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
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
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    stack = LocalStack.from_env()
    try:
        started_services = stack.up()
    except StackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    env = {**os.environ, **stack.env()}
    settings = Settings.from_env(env)
    bin_dir = Path(sys.executable).parent
    ot = str(bin_dir / "ot")
    try:
        env["DAGSTER_HOME"] = str(prepare_dagster_home(ot, env))
    except subprocess.CalledProcessError as exc:
        print(f"make run: `ot pipeline home` failed:\n{exc.stderr}", file=sys.stderr)
        if started_services:
            stack.down(only=started_services)
        return 1
    env.setdefault("OT_LAKE_DIR", str(REPO_ROOT / settings.lake_dir))
    settings = Settings.from_env(env)
    session_key = None
    # Its server binds to loopback: the operator API's GETs need no key here (a wall display).
    env.setdefault("OT_API_ANONYMOUS_READ", "true")
    if not settings.api_keys:  # a key for this run only, so the webhook can be tried at once
        session_key, entry = new_key("make-run", Role.INGEST)
        env["OT_API_KEYS"] = entry.entry
    logs = stack.logs
    children = [
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
        Child("mqtt-bridge", [ot, "bridge", "mqtt"], logs / "run-mqtt-bridge.log"),
        Child("lander", [ot, "land"], logs / "run-lander.log"),
        Child("state-writer", [ot, "state"], logs / "run-state-writer.log"),
    ]  # fmt: skip
    if not args.no_dagster:
        children.append(
            Child(
                "dagster",
                [str(bin_dir / "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
                 "-h", "127.0.0.1", "-p", str(args.port)],
                logs / "run-dagster.log",
            )
        )  # fmt: skip

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    for child in children:
        child.start(env)
    print("The OT platform is running:")
    print(f"  Kafka        {settings.kafka_bootstrap_servers}")
    live = RedisKeys(settings.redis_prefix).scan_machines
    print(f"  Redis        {settings.redis_url}  (live state: {live})")
    print(f"  PostgreSQL   {settings.pg_dsn}  (schema {settings.pg_schema})")
    print(f"  Lake         {settings.lake_dir}")
    if not args.no_dagster:
        print(f"  Dagster UI   http://127.0.0.1:{args.port}  (DAGSTER_HOME={env['DAGSTER_HOME']})")
    api_url = f"http://127.0.0.1:{args.api_port}"
    print(f"  HTTP API     {api_url}  (webhook POST /webhook/sensor-data, docs {api_url}/docs)")
    print(f"  Operator API {api_url}/api/v1/machines  (reads without a key: OT_API_ANONYMOUS_READ)")
    topics = f"{settings.mqtt_topic_root}/{{line}}/{{machine}}/{{metric}}"
    print(f"  MQTT         {settings.mqtt_url}  (QoS 1 to {topics}, bridged to Kafka)")
    if session_key:
        print(f"  Ingest key   {session_key}  (this run only; set OT_API_KEYS for your own)")
    print(f"  Logs         {logs}/run-*.log")
    print("Press Ctrl-C to stop everything started here.", flush=True)

    started_at = time.monotonic()
    failed: Child | None = None
    last_status = 0.0
    while not stopping:
        time.sleep(0.5)
        for child in children:
            if not child.alive():
                failed = child
                stopping = True
                break
        if args.duration and time.monotonic() - started_at >= args.duration:
            stopping = True
        if time.monotonic() - last_status >= 5 and not stopping:
            last_status = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] {status_line(settings)}", flush=True)

    if failed is not None:
        code = failed.proc.returncode if failed.proc else "?"
        print(f"\n{failed.name} exited (code {code}); last lines of {failed.log}:", file=sys.stderr)
        print(failed.tail(), file=sys.stderr)
    print("\nstopping: " + ", ".join(c.name for c in children), flush=True)
    for child in children:  # the producer first, so the consumers flush what it sent last
        child.stop()
    if started_services:
        stack.down(only=started_services)
        print("stopped stack services: " + ", ".join(started_services))
    return 1 if failed is not None else 0


if __name__ == "__main__":
    raise SystemExit(main())
