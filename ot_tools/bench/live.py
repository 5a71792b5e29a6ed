"""`ot bench live`: the fixed cost of the live path, `make run` as a user starts it.

Runs `python -m streaming.run` (simulator in real time at `OT_BENCH_LIVE_RATE` readings/s, 200 by
default, the API, the MQTT bridge, the lander, the state writer and Dagster's webserver, daemon and
code server) on free ports against the stack of the environment — with topics, a Redis prefix, a
PostgreSQL schema, a lake and a Dagster instance of its own, removed afterwards (the last run's
instance and log stay in a temporary folder, named in the figures) — waits `warmup` seconds, then
samples /proc for `window` seconds: the CPU of every process it started (reaped children included:
a process's own time plus the time of the children it waited for, zombies counted), of the stack's
servers (their pid files), and the Dagster runs created in the window. Then Ctrl-C, as a user.

Figures: cores in total and per component, runs per hour (extrapolated from the window) and the
runs' job names. Quick: 20 s warm-up, 60 s window; full: 60 s and 240 s (the landing sensor's and
the daemon's intervals are minutes, so the full window is the one to quote).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ot_tools.drills import clean_up, isolated_settings
from streaming.settings import Settings
from streaming.stack.local import REPO_ROOT, LocalStack

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    cpu_s: float  # own user+system time plus that of the children it reaped
    args: str


def processes() -> dict[int, Proc]:
    """Every process of the machine (zombies included: their times are still readable)."""
    found: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            raw = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is field 3 (state): ppid = 4, utime..cstime = 14..17
        ticks = sum(int(x) for x in fields[11:15])
        args = raw.replace(b"\0", b" ").decode(errors="replace").strip() or stat.split()[1]
        found[int(entry.name)] = Proc(int(entry.name), int(fields[1]), ticks / CLOCK_TICKS, args)
    return found


def tree(procs: dict[int, Proc], roots: list[int]) -> list[Proc]:
    """The roots and all their descendants."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    out: list[Proc] = []
    todo = [r for r in roots if r in procs]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(procs[pid])
        todo += children.get(pid, [])
    return out


# (component, substring of the command line), first match wins.
COMPONENTS = [
    ("dagster runs", "api execute_"),
    ("dagster runs", "multiprocessing"),  # the code server starts run workers with spawn
    ("dagster code server", "api grpc"),
    ("dagster code server", "code-server"),
    ("dagster daemon", "dagster._daemon"),
    ("dagster daemon", "dagster-daemon"),
    ("dagster webserver", "dagster_webserver"),
    ("dagster webserver", "dagster-webserver"),
    ("dagster dev", "dagster dev"),
    ("kafka", "kafka.Kafka"),
    ("redis", "redis-server"),
    ("postgres", "postgres"),
    ("mosquitto", "mosquitto"),
    ("simulator", "/ot simulate"),
    ("api", "/ot api"),
    ("mqtt-bridge", "/ot bridge"),
    ("lander", "/ot land"),
    ("state-writer", "/ot state"),
    ("make run", "streaming.run"),
]


def component(args: str) -> str:
    """The component of a command line: its program, script and options, without the paths and
    the JSON among its arguments (a socket named code-server.sock, an instance reference naming
    the code server's settings would mislead)."""
    words = args.split()
    kept = " ".join(words[:2] + [w for w in words[2:] if not w.startswith(("/", "{", '"'))])
    for name, needle in COMPONENTS:
        if needle in kept:
            return name
    return "other"


def cpu_by_component(members: list[Proc]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for p in members:
        name = component(p.args)
        totals[name] = totals.get(name, 0.0) + p.cpu_s
    return totals


def stack_pids(stack: LocalStack) -> list[int]:
    """The stack's servers, from their pid files (PostgreSQL: postmaster.pid)."""
    pids: list[int] = []
    for path in [*stack.root.glob("pids/*.pid"), *stack.root.glob("postgres/data/postmaster.pid")]:
        try:
            pids.append(int(path.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def dagster_runs(home: Path, since: float) -> list[tuple[str, str]]:
    """(job name, status) of the runs created after `since` (epoch seconds)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(dg.RunsFilter(created_after=_utc(since)), limit=100_000)
        return [(r.dagster_run.job_name, r.dagster_run.status.value) for r in records]


def _utc(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from ot_tools.bench.gateway import free_port

    warmup, window = (20.0, 60.0) if quick else (60.0, 240.0)
    warmup = float(os.environ.get("OT_BENCH_LIVE_WARMUP", warmup))
    window = float(os.environ.get("OT_BENCH_LIVE_WINDOW", window))
    rate = float(os.environ.get("OT_BENCH_LIVE_RATE", 200))
    folder = Path(tempfile.mkdtemp(prefix="ot-bench-live-"))
    own = isolated_settings(settings, folder / "lake")
    suffix = own.topics.readings.rsplit("-", 1)[-1]
    env = {
        **os.environ,
        "OT_TOPIC_READINGS": own.topics.readings,
        "OT_TOPIC_DLQ": own.topics.dlq,
        "OT_TOPIC_ALERTS": own.topics.alerts,
        "OT_TOPIC_FAULTS": own.topics.faults,
        "OT_REDIS_PREFIX": own.redis_prefix,
        "OT_PG_SCHEMA": own.pg_schema,
        "OT_MQTT_TOPIC_ROOT": f"bench-{suffix}",
        "OT_LAKE_DIR": str(own.lake_dir),
        "DAGSTER_HOME": str(folder / "dagster"),
        "OT_API_KEYS": "",
    }
    try:
        return measure(rate, warmup, window, free_port(), free_port(), env, folder)
    finally:
        clean_up(own)
        shutil.rmtree(folder / "lake", ignore_errors=True)


def measure(
    rate: float,
    warmup: float,
    window: float,
    ui_port: int,
    api_port: int,
    env: dict[str, str],
    folder: Path,
) -> dict[str, Any]:
    """`make run` with `env` (outputs under `folder`), measured as the module says."""
    stack = LocalStack.from_env()
    out = folder / "run.log"
    cmd = [
        sys.executable, "-m", "streaming.run", "--rate", str(rate),
        "--port", str(ui_port), "--api-port", str(api_port),
    ]  # fmt: skip
    with out.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    try:
        deadline = time.monotonic() + 300
        while "Press Ctrl-C" not in out.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"make run did not start: {out.read_text()[-2000:]}")
            time.sleep(0.5)
        home = Path(env["DAGSTER_HOME"])
        time.sleep(warmup)
        roots = [proc.pid, *stack_pids(stack)]
        before = cpu_by_component(tree(processes(), roots))
        started, t0 = time.time(), time.monotonic()
        samples = []
        while time.monotonic() - t0 < window:
            time.sleep(2)
            samples.append(len(tree(processes(), roots)))
        after = cpu_by_component(tree(processes(), roots))
        elapsed = time.monotonic() - t0
        runs = dagster_runs(home, started)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    cores = {
        name: round((after.get(name, 0.0) - before.get(name, 0.0)) / elapsed, 3)
        for name in sorted(set(before) | set(after))
    }
    jobs = Counter(job for job, _ in runs)
    return {
        "rate": rate,
        "window_s": round(elapsed),
        "cores_total": round(sum(cores.values()), 3),
        **{f"cores {k}": v for k, v in cores.items() if abs(v) >= 0.001},
        "processes_mean": round(sum(samples) / max(len(samples), 1), 1),
        "runs": len(runs),
        "runs_per_hour": round(len(runs) * 3600 / elapsed),
        "runs_failed": sum(1 for _, status in runs if status == "FAILURE"),
        "jobs": ", ".join(f"{k} x{v}" for k, v in jobs.most_common()),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "log": str(out),
    }


if __name__ == "__main__":
    import json

    from ot_tools.bench.cli import machine

    print(f"# machine: {machine()}", flush=True)
    print(json.dumps(run(Settings.from_env(), quick="--quick" in sys.argv)), flush=True)
