"""`ot bench e2e`: the whole platform in real time, step by step, at rising reading rates.

Each step starts the platform as `make run` does (`python -m streaming.run`: the simulator in
real time at rate R, `ot api`, the MQTT bridge, the lander, the state writer and `dagster dev`
with its daemon, sensor and automation), in a namespace of its own (topics, lake, Redis prefix,
PostgreSQL schema, DAGSTER_HOME), on the stack the settings point at. After a warm-up it measures
for a while, then pauses the simulator and waits for the lake and Dagster to catch up:

- lag of the lander and the state writer (their groups' committed offsets against the topic's
  end), as seconds of data at R, at the end of the measured window;
- event -> Redis latency: for every reading the change feed shows (the latest per machine and
  metric of each state-writer batch), the feed entry's time (Redis's clock when the batch's
  transaction ran) minus the reading's event time;
- CPU (share of one core) and RSS per component: every child of the run with its descendants
  (Dagster's webserver, daemon, code server and run processes under `dagster`), and the stack's
  servers (Kafka, Redis, PostgreSQL, Mosquitto);
- the hour deadline: once everything produced is landed, every hourly asset of every hour the
  step touched must be materialized by a run that started after that, within the deadline.

A step passes when the produced rate reached 95 % of R, both lags stayed under `max_lag_s`, the
p99 latency under 1 s and every hour met its deadline. Rates rise through a ladder until a step
fails, then halve the gap to the last passing rate `refine` times (`next_rate`); the sustained
rate is the best passing one. A step whose processes together pass `max_rss_mb` is stopped.

Configuration (environment, for `ot bench e2e`; or the same as options of
`python -m ot_tools.bench.e2e`): OT_BENCH_E2E_RATES (comma list), OT_BENCH_E2E_STEP_S,
OT_BENCH_E2E_WARMUP_S, OT_BENCH_E2E_DEADLINE_S, OT_BENCH_E2E_MAX_LAG_S, OT_BENCH_E2E_REFINE,
OT_BENCH_E2E_MAX_RSS_MB, OT_BENCH_E2E_EVERY_RATE (measure every rate of the ladder, failing or
not), OT_BENCH_E2E_REPORT (a file for the full JSON report: every step with its figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson

from ot_tools.bench.gateway import free_port
from ot_tools.bench.proc import children, cmdline, cpu_with_reaped, rss_bytes, tree
from streaming.settings import Settings, Topics
from streaming.stack.local import REPO_ROOT

DEFAULT_RATES = (200, 10_000, 25_000, 50_000, 75_000, 100_000, 125_000, 150_000)
QUICK_RATES = (200, 5_000)
MAX_P99_MS = 1_000.0
KEEP_UP = 0.95
READY = "The OT platform is running:"
METRICS_PER_MACHINE = 3.6  # the simulator's fleet averages this many metrics per machine
SERVERS = ("kafka", "redis", "postgres", "mosquitto")


@dataclass(frozen=True)
class Options:
    rates: tuple[int, ...] = DEFAULT_RATES
    step_s: float = 240.0
    warmup_s: float = 30.0
    deadline_s: float = 300.0
    max_lag_s: float = 30.0
    refine: int = 1
    max_rss_mb: float = 6_000.0  # a guard for a shared machine: twice the 3 GB target
    report: Path | None = None
    every_rate: bool = False  # measure every rate of the ladder, failing or not

    @classmethod
    def from_env(cls, env: Mapping[str, str], quick: bool) -> Options:
        base = cls(rates=QUICK_RATES, step_s=30.0, warmup_s=10.0, deadline_s=240.0, refine=0)
        if not quick:
            base = cls()
        rates = env.get("OT_BENCH_E2E_RATES")
        report = env.get("OT_BENCH_E2E_REPORT")
        return cls(
            rates=tuple(int(r) for r in rates.split(",")) if rates else base.rates,
            step_s=float(env.get("OT_BENCH_E2E_STEP_S", base.step_s)),
            warmup_s=float(env.get("OT_BENCH_E2E_WARMUP_S", base.warmup_s)),
            deadline_s=float(env.get("OT_BENCH_E2E_DEADLINE_S", base.deadline_s)),
            max_lag_s=float(env.get("OT_BENCH_E2E_MAX_LAG_S", base.max_lag_s)),
            refine=int(env.get("OT_BENCH_E2E_REFINE", base.refine)),
            max_rss_mb=float(env.get("OT_BENCH_E2E_MAX_RSS_MB", base.max_rss_mb)),
            report=Path(report) if report else None,
            every_rate=env.get("OT_BENCH_E2E_EVERY_RATE", "") in {"1", "true", "yes"},
        )


# -- pure parts ------------------------------------------------------------------------------------
def next_rate(done: Sequence[tuple[int, bool]], ladder: Sequence[int], refine: int) -> int | None:
    """The next rate to try after the steps `done` (rate, passed), or None when the search is
    over: up the ladder while steps pass; after the first failure, `refine` steps halfway between
    the best pass and the lowest failure above it."""
    if not done:
        return ladder[0] if ladder else None
    failed = [r for r, ok in done if not ok]
    if not failed:
        higher = [r for r in ladder if r > max(r for r, _ in done)]
        return higher[0] if higher else None
    refinements = len(done) - 1 - min(i for i, (_, ok) in enumerate(done) if not ok)
    if refinements >= refine:
        return None
    passed = [r for r, ok in done if ok]
    if not passed:
        return None
    best = max(passed)
    above = [r for r in failed if r > best]
    if not above:
        return None
    middle = (best + min(above)) // 2
    middle = int(round(middle, -3)) if middle >= 10_000 else middle
    if middle in {r for r, _ in done}:
        return None
    return middle


def machines_for(rate: float) -> int:
    """Fleet size for a rate: one reading per metric per second up to 1,000 machines, then the
    same fleet reporting faster (the simulator's interval shrinks)."""
    return int(min(1000, max(20, round(rate / METRICS_PER_MACHINE))))


COMPONENTS = (
    ("simulator", ("simulate",)),
    ("api", ("api",)),
    ("mqtt_bridge", ("bridge",)),
    ("lander", ("land",)),
    ("state_writer", ("state",)),
)


def component_of(argv: Sequence[str]) -> str:
    """Which platform component a child of `make run` is, from its command line (every part of
    Dagster is `dagster`: `dagster dev`, or its code server, daemon and webserver apart)."""
    words = [Path(a).name for a in argv]
    if any(w.startswith("dagster") for w in words[:3]):
        return "dagster"
    for runner in ("ot", "streaming.cli"):
        if runner in words[:3]:
            start = words.index(runner) + 1
            command = words[start] if start < len(words) else ""
            for name, commands in COMPONENTS:
                if command in commands:
                    return name
    return "other"


def dagster_part(argv: Sequence[str]) -> str:
    """Which part of Dagster a process is: webserver, daemon, code server (and the gRPC server
    it runs), a run or step process, or `dagster dev` itself."""
    text = " ".join(argv)
    runs = ("execute_run", "execute_step", "execute_plan", "multiprocessing")
    if any(word in text for word in runs):  # a run, or a step process of its executor
        return "dagster_runs"
    if "webserver" in text:
        return "dagster_webserver"
    if "daemon" in text:
        return "dagster_daemon"
    if "grpc" in text or "code-server" in text or "code_server" in text:
        return "dagster_code_server"
    return "dagster_dev"


def feed_latencies(entries: Iterable[tuple[bytes, Mapping[bytes, bytes]]]) -> list[float]:
    """Latencies (ms) from change-feed entries: the entry id's time minus each reading's event
    time, for every machine value of every `machines` entry."""
    out: list[float] = []
    for entry_id, fields in entries:
        if fields.get(b"t") != b"machines":
            continue
        at = int(entry_id.split(b"-")[0])
        for machine in orjson.loads(fields[b"d"]):
            for value in machine.get("values", {}).values():
                out.append(float(at - int(value["ts"])))
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=float)
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": round(float(a.max()), 1),
    }


@dataclass
class Step:
    """What one step measured (flat: it becomes `r{rate}_*` figures)."""

    rate: int
    machines: int
    load_avg_start: float = 0.0
    load_avg_end: float = 0.0
    produced_per_s: float = 0.0
    lander_lag_s: float | None = None
    state_lag_s: float | None = None
    lander_lag_max_s: float | None = None
    state_lag_max_s: float | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    latency_samples: int = 0
    cpu_pct: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    hours: list[str] = field(default_factory=list)
    landed_after_stop_s: float | None = None
    materialized_s: float | None = None
    missing: list[str] = field(default_factory=list)
    aborted: str | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons


def judge(step: Step, options: Options) -> list[str]:
    """Why a step failed (empty: it passed)."""
    why = []
    if step.aborted:
        why.append(step.aborted)
    if step.produced_per_s < KEEP_UP * step.rate:
        why.append(f"simulator produced {step.produced_per_s:.0f}/s of {step.rate}")
    for name, lag in (("lander", step.lander_lag_s), ("state writer", step.state_lag_s)):
        if lag is None or lag > options.max_lag_s:
            why.append(f"{name} lag {lag} s > {options.max_lag_s:.0f} s")
    p99 = step.latency_ms.get("p99")
    if p99 is None or p99 >= MAX_P99_MS:
        why.append(f"event->Redis p99 {p99} ms")
    if step.missing:
        why.append(f"not materialized within {options.deadline_s:.0f} s: {step.missing[:4]}")
    elif step.materialized_s is None or step.materialized_s > options.deadline_s:
        why.append(f"hours materialized after {step.materialized_s} s")
    return why


def figures(steps: Sequence[Step]) -> dict[str, Any]:
    """The flat figures of `ot bench`: per step `r{rate}_*`, then the sustained rate."""
    out: dict[str, Any] = {}
    for s in steps:
        p = f"r{s.rate}_"
        out[p + "passed"] = s.passed
        out[p + "machines"] = s.machines
        out[p + "produced_per_s"] = round(s.produced_per_s)
        out[p + "lander_lag_s"] = s.lander_lag_s
        out[p + "state_lag_s"] = s.state_lag_s
        for k, v in s.latency_ms.items():
            out[f"{p}latency_{k}_ms"] = v
        for k, v in s.cpu_pct.items():
            out[f"{p}cpu_pct_{k}"] = v
        for k, v in s.rss_mb.items():
            out[f"{p}rss_mb_{k}"] = v
        out[p + "materialized_s"] = s.materialized_s
        out[p + "load_avg"] = s.load_avg_end
        if s.reasons:
            out[p + "failed"] = "; ".join(s.reasons)[:300]
    passing = [s.rate for s in steps if s.passed]
    out["sustained_readings_per_s"] = max(passing) if passing else 0
    return out


def tables(steps: Sequence[Mapping[str, Any]]) -> str:
    """Markdown tables of a JSON report (`--report`): one row per step, then CPU and RSS per
    component of every step (for docs/benchmarks.md)."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    head = "| R (readings/s) | produced/s | lander lag s | state lag s | latency p50 / p99 ms "
    head += "| hours done after s | CPU platform / total % | RSS platform / total MB | load | |"
    lines = [head, "|" + "---|" * 10]
    for s in steps:
        lat, cpu, rss = s["latency_ms"], s["cpu_pct"], s["rss_mb"]
        verdict = "pass" if not s["reasons"] else "fail: " + "; ".join(s["reasons"])
        lines.append(
            f"| {cell(s['rate'])} | {cell(round(s['produced_per_s']))} "
            f"| {cell(s['lander_lag_s'])} | {cell(s['state_lag_s'])} "
            f"| {cell(lat.get('p50'))} / {cell(lat.get('p99'))} | {cell(s['materialized_s'])} "
            f"| {cell(cpu.get('platform'))} / {cell(cpu.get('total'))} "
            f"| {cell(rss.get('platform'))} / {cell(rss.get('total'))} "
            f"| {cell(round(s['load_avg_end'], 1))} | {verdict} |"
        )
    names = sorted({k for s in steps for k in s["cpu_pct"]} - {"platform", "total"})
    rates = " | ".join(f"{cell(s['rate'])}/s" for s in steps)
    lines += ["", f"| component (CPU % of a core, peak RSS MB) | {rates} |"]
    lines.append("|---|" + "---|" * len(steps))
    for name in [*names, "platform", "total"]:
        row = " | ".join(
            f"{cell(s['cpu_pct'].get(name))} %, {cell(s['rss_mb'].get(name))} MB" for s in steps
        )
        lines.append(f"| {name} | {row} |")
    return "\n".join(lines)


# -- measuring a running platform ---------------------------------------------------------------
class Sampler:
    """Every `every` s: CPU (utime + stime, plus the CPU of exited children they reaped) and RSS
    per component of the run's process tree and of the stack's servers."""

    def __init__(self, run_pid: int, servers: Mapping[str, int], every: float = 2.0) -> None:
        self.run_pid = run_pid
        self.servers = dict(servers)
        self.every = every
        self.cpu: list[tuple[float, dict[str, float]]] = []
        self.rss: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._dead_cpu: dict[str, float] = {}

    def components(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"make_run": [self.run_pid]}
        for child in children(self.run_pid):
            name = component_of(cmdline(child))
            if name == "dagster":
                for pid in tree(child):
                    out.setdefault(dagster_part(cmdline(pid)), []).append(pid)
            else:
                out.setdefault(name, []).extend(tree(child))
        for name, pid in self.servers.items():
            out[name] = tree(pid)
        return out

    def sample(self) -> tuple[dict[str, float], dict[str, float]]:
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        for name, pids in self.components().items():
            cpu[name] = sum(cpu_with_reaped(p) for p in pids)
            rss[name] = sum(rss_bytes(p) for p in pids) / 2**20
        return cpu, rss

    def _loop(self) -> None:
        while not self._stop.is_set():
            cpu, rss = self.sample()
            self.cpu.append((time.monotonic(), cpu))
            self.rss.append(rss)
            self._stop.wait(self.every)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def total_rss_mb(self) -> float:
        return sum(self.rss[-1].values()) if self.rss else 0.0

    def report(self) -> tuple[dict[str, float], dict[str, float]]:
        """CPU % of one core per component over the window (increases only: a process that
        exits takes its CPU along unless its parent reaped it), and the peak RSS (MB)."""
        cpu: dict[str, float] = {}
        if len(self.cpu) >= 2:
            (t0, first), (t1, last) = self.cpu[0], self.cpu[-1]
            names = set(first) | set(last)
            for name in sorted(names):
                used = max(0.0, last.get(name, 0.0) - first.get(name, 0.0))
                cpu[name] = round(100 * used / max(t1 - t0, 1e-9), 1)
            parts = dict(cpu)
            cpu["total"] = round(sum(parts.values()), 1)
            cpu["platform"] = round(sum(v for k, v in parts.items() if k not in SERVERS), 1)
        rss: dict[str, float] = {}
        for sample in self.rss:
            for name, mb in sample.items():
                rss[name] = max(rss.get(name, 0.0), round(mb))
        totals = [sum(s.values()) for s in self.rss]
        platform = [sum(v for k, v in s.items() if k not in SERVERS) for s in self.rss]
        rss["total"] = round(max(totals)) if totals else 0.0
        rss["platform"] = round(max(platform)) if platform else 0.0
        return cpu, rss


class FeedReader:
    """Reads the change feed in a thread and keeps the latencies of the window it is told."""

    def __init__(self, redis_url: str, key: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.key = key
        self.latencies: list[float] = []
        self.recording = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        last = b"$"
        while not self._stop.is_set():
            try:
                got = self.client.xread({self.key: last}, count=1000, block=500)
            except Exception:
                time.sleep(0.5)
                continue
            for _key, entries in cast(list[Any], got) or []:
                if entries:
                    last = entries[-1][0]
                    if self.recording:
                        self.latencies += feed_latencies(entries)

    def start(self) -> FeedReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def committed_lag(settings: Settings, groups: Sequence[str]) -> tuple[dict[str, int], int]:
    """Per group, messages between its committed offsets and the topic's end; and the end."""
    from confluent_kafka import Consumer, TopicPartition

    from streaming.kafka.config import reader_config

    topic = settings.topics.readings
    probe = Consumer(reader_config(settings.kafka_bootstrap_servers, "e2e-lag"))
    try:
        parts = sorted(probe.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        }
    finally:
        probe.close()
    lags: dict[str, int] = {}
    for group in groups:
        consumer = Consumer(
            {**reader_config(settings.kafka_bootstrap_servers, "x"), "group.id": group}
        )
        try:
            done = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        finally:
            consumer.close()
        lags[group] = sum(ends[tp.partition] - max(tp.offset, 0) for tp in done)
    return lags, sum(ends.values())


def hourly_assets() -> list[str]:
    """The hourly assets of the code location (what an hour's deadline covers)."""
    from ot_pipeline.definitions import defs

    return sorted(
        spec.key.to_user_string()
        for spec in defs.resolve_all_asset_specs()
        if spec.tags.get("ot/cadence") == "hourly"
    )


def missing_materializations(
    home: Path, assets: Sequence[str], hours: Sequence[str], since: float
) -> list[str]:
    """`asset@hour` not yet materialized by a run that started after `since` (epoch s)."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    instance = dg.DagsterInstance.from_config(str(home))
    missing = []
    starts: dict[str, float | None] = {}
    for asset in assets:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey.from_user_string(asset),
                asset_partitions=list(hours),
                after_timestamp=since,
            ),
            limit=1000,
        ).records
        done = set()
        for record in records:
            if record.run_id not in starts:
                run = instance.get_run_record_by_id(record.run_id)
                starts[record.run_id] = run.start_time if run else None
            start = starts[record.run_id]
            if start is not None and start >= since and record.partition_key:
                done.add(record.partition_key)
        missing += [f"{asset}@{h}" for h in hours if h not in done]
    instance.dispose()
    return missing


# -- one step --------------------------------------------------------------------------------------
def _servers() -> dict[str, int]:
    """The stack's server processes (their pid files), when the stack is local."""
    from streaming.stack.local import LocalStack

    stack = LocalStack.from_env()
    out = {}
    for name in stack.pids.names():
        pid = stack.pids.read(name)
        if pid is not None and Path(f"/proc/{pid}").exists():
            out[name.split("-")[0]] = pid
    postmaster = stack.postgres.owned_pid()  # its backends are its children
    if postmaster is not None:
        out["postgres"] = postmaster
    return out


def run_step(settings: Settings, rate: int, options: Options, log: Callable[[str], None]) -> Step:
    from streaming.stack.topics import create_topics, delete_topics

    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        readings=f"bench-e2e-{suffix}",
        dlq=f"bench-e2e-{suffix}.dlq",
        alerts=f"bench-e2e-alerts-{suffix}",
        faults=f"bench-e2e-faults-{suffix}",
    )
    work = Path(tempfile.mkdtemp(prefix=f"ot-bench-e2e-{rate}-"))
    home = work / "dagster"
    schema = f"bench_e2e_{suffix}"
    step = Step(rate=rate, machines=machines_for(rate), load_avg_start=os.getloadavg()[0])
    bench = replace(
        settings,
        topics=topics,
        redis_prefix=f"bench-e2e-{suffix}:",
        pg_schema=schema,
        lake_dir=work / "lake",
        dagster_home=home,
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "OT_PG_DSN": settings.pg_dsn,
        "MQTT_URL": settings.mqtt_url,
        "OT_TOPIC_READINGS": topics.readings,
        "OT_TOPIC_DLQ": topics.dlq,
        "OT_TOPIC_ALERTS": topics.alerts,
        "OT_TOPIC_FAULTS": topics.faults,
        "OT_REDIS_PREFIX": bench.redis_prefix,
        "OT_PG_SCHEMA": schema,
        "OT_LAKE_DIR": str(bench.lake_dir),
        "DAGSTER_HOME": str(home),
        "OT_MQTT_TOPIC_ROOT": f"bench-e2e-{suffix}",
    }
    create_topics(settings.kafka_bootstrap_servers, topics, readings_partitions=6)
    out_path = work / "run.log"
    cmd = [sys.executable, "-m", "streaming.run", "--machines", str(step.machines)]
    cmd += ["--rate", str(rate), "--chaos", "none", "--port", str(free_port())]
    cmd += ["--api-port", str(free_port())]
    started_wall = time.time()
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT, start_new_session=True,
        )  # fmt: skip
    sampler: Sampler | None = None
    feed = FeedReader(settings.redis_url, f"{bench.redis_prefix}changes").start()
    try:
        deadline = time.monotonic() + 180
        while READY not in out_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"make run did not start: {out_path.read_text()[-1500:]}")
            time.sleep(0.5)
        log(
            f"e2e: rate {rate}/s, {step.machines} machines: up; warming up {options.warmup_s:.0f} s"
        )
        time.sleep(options.warmup_s)
        groups = ["lake-lander", "state-writer"]
        _, end0 = committed_lag(bench, groups)
        sampler = Sampler(proc.pid, _servers()).start()
        feed.recording = True
        t0 = time.monotonic()
        lag_samples: dict[str, list[float]] = {g: [] for g in groups}
        while time.monotonic() - t0 < options.step_s:
            time.sleep(min(10.0, options.step_s / 6))
            lags, _ = committed_lag(bench, groups)
            for g in groups:
                lag_samples[g].append(lags[g] / rate)
            if sampler.total_rss_mb() > options.max_rss_mb:
                step.aborted = (
                    f"stopped: {sampler.total_rss_mb():.0f} MB RSS > {options.max_rss_mb:.0f}"
                )
                break
        window = time.monotonic() - t0
        feed.recording = False
        lags, end1 = committed_lag(bench, groups)
        sampler.stop()
        step.produced_per_s = (end1 - end0) / window
        step.lander_lag_s = round(lags["lake-lander"] / rate, 2)
        step.state_lag_s = round(lags["state-writer"] / rate, 2)
        step.lander_lag_max_s = round(max(lag_samples["lake-lander"], default=0.0), 2)
        step.state_lag_max_s = round(max(lag_samples["state-writer"], default=0.0), 2)
        step.latency_ms = percentiles(feed.latencies)
        step.latency_samples = len(feed.latencies)
        step.cpu_pct, step.rss_mb = sampler.report()
        log(f"e2e: rate {rate}/s measured: {json.dumps(asdict(step))[:600]}")
        # The hour deadline: stop producing, wait until the lake holds everything, then for
        # Dagster to materialize every hourly asset of every touched hour.
        simulators = [c for c in children(proc.pid) if component_of(cmdline(c)) == "simulator"]
        for pid in simulators:
            os.killpg(pid, signal.SIGSTOP)
        stopped = time.time()
        time.sleep(1.0)
        landed_by = time.monotonic() + 120
        while time.monotonic() < landed_by:
            lags, _ = committed_lag(bench, ["lake-lander"])
            if lags["lake-lander"] == 0:
                break
            time.sleep(1.0)
        landed = time.time()
        step.landed_after_stop_s = round(landed - stopped, 1)
        step.hours = sorted({hour_key_ms(ms) for ms in _hours_between(started_wall, stopped)})
        assets = hourly_assets()
        wait_until = time.monotonic() + options.deadline_s
        while True:
            missing = missing_materializations(home, assets, step.hours, landed)
            if not missing or time.monotonic() > wait_until:
                break
            time.sleep(5.0)
        step.missing = missing
        step.materialized_s = None if missing else round(time.time() - landed, 1)
    finally:
        feed.stop()
        if sampler is not None and sampler._thread.is_alive():
            sampler.stop()
        _stop_run(proc)
        step.load_avg_end = os.getloadavg()[0]
        _clean(settings, topics, bench, work)
        delete_topics(settings.kafka_bootstrap_servers, topics.all())
    step.reasons = judge(step, options)
    return step


def hour_key_ms(ms: int) -> str:
    from datetime import UTC, datetime

    from streaming.lake.hours import hour_key

    return hour_key(datetime.fromtimestamp(ms / 1000, UTC))


def _hours_between(start_s: float, end_s: float) -> list[int]:
    first = int(start_s) // 3600 * 3600
    return [h * 1000 for h in range(first, int(end_s) + 1, 3600)]


def _stop_run(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM `make run` (it stops its children in order); a paused simulator is woken so it
    can take its SIGTERM."""
    if proc.poll() is None:
        paused = [c for c in children(proc.pid) if component_of(cmdline(c)) == "simulator"]
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _clean(settings: Settings, topics: Topics, bench: Settings, work: Path) -> None:
    """Drop the step's namespace: Redis keys, the PostgreSQL schema, its folder."""
    import psycopg
    import redis

    from streaming.redis_keys import RedisKeys

    try:
        client = redis.Redis.from_url(settings.redis_url)
        for key in client.scan_iter(RedisKeys(bench.redis_prefix).scan_all, count=1000):
            client.delete(key)
    except Exception:
        pass
    try:
        with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{bench.pg_schema}" CASCADE')
    except Exception:
        pass
    shutil.rmtree(work, ignore_errors=True)


# -- the search ------------------------------------------------------------------------------------
def search(settings: Settings, options: Options, log: Callable[[str], None]) -> list[Step]:
    steps: list[Step] = []
    while True:
        done = [(s.rate, s.passed or options.every_rate) for s in steps]
        rate = next_rate(done, options.rates, options.refine)
        if rate is None:
            return steps
        step = run_step(settings, rate, options, log)
        steps.append(step)
        verdict = "passed" if step.passed else "failed: " + "; ".join(step.reasons)
        log(f"e2e: rate {rate}/s {verdict}")


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    options = Options.from_env(os.environ, quick)
    return _run(settings, options)


def _run(settings: Settings, options: Options) -> dict[str, Any]:
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = os.getloadavg()[0]
    steps = search(settings, options, log)
    if options.report:
        options.report.write_text(json.dumps([asdict(s) for s in steps], indent=1, default=str))
    return {
        "load_avg_1m_start": round(started, 2),
        "step_s": options.step_s,
        "deadline_s": options.deadline_s,
        **figures(steps),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ot_tools.bench.e2e", description=__doc__)
    p.add_argument("--rates", help="comma list (default: the full ladder)")
    p.add_argument("--step-seconds", type=float, default=Options.step_s)
    p.add_argument("--warmup-seconds", type=float, default=Options.warmup_s)
    p.add_argument("--deadline-seconds", type=float, default=Options.deadline_s)
    p.add_argument("--max-lag-seconds", type=float, default=Options.max_lag_s)
    p.add_argument("--refine", type=int, default=Options.refine)
    p.add_argument("--max-rss-mb", type=float, default=Options.max_rss_mb)
    p.add_argument("--report", type=Path)
    p.add_argument("--every-rate", action="store_true", help="measure every rate, failing or not")
    p.add_argument("--tables", type=Path, help="print a --report file as markdown tables")
    args = p.parse_args(argv)
    if args.tables:
        print(tables(json.loads(args.tables.read_text())))
        return 0
    options = Options(
        rates=tuple(int(r) for r in args.rates.split(",")) if args.rates else DEFAULT_RATES,
        step_s=args.step_seconds,
        warmup_s=args.warmup_seconds,
        deadline_s=args.deadline_seconds,
        max_lag_s=args.max_lag_seconds,
        refine=args.refine,
        max_rss_mb=args.max_rss_mb,
        report=args.report,
        every_rate=args.every_rate,
    )
    print(json.dumps({"bench": "e2e", **_run(Settings.from_env(), options)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
