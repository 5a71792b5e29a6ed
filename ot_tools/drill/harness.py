"""What every drill shares: its stack, its children (supervised as `make run` supervises them),
the samplers (group lag, peak memory), the phases and checks it records, and the reconciliation
of what was produced against the lake, the dead-letter topic and Redis.

A drill runs on a stack of its own (`.drill-stack/`, three brokers, Redis and PostgreSQL on ports
from `--port-base`, never the development stack), with fresh topics, a Redis prefix, a PostgreSQL
schema and lakes of its own, so drills can follow each other on one stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition

from ot_tools import drills
from ot_tools.coverage import lake_coverage
from streaming.kafka.config import reader_config
from streaming.lake import Lake
from streaming.redis_keys import RedisKeys
from streaming.run import Restarts
from streaming.settings import Settings
from streaming.stack.local import REPO_ROOT, LocalStack, StackError

DEFAULT_PORT_BASE = 29092
# Brokers and their controllers, then Redis, PostgreSQL and Mosquitto above them.
PORT_OFFSETS = (0, 1, 2, 100, 101, 102, 200, 201, 202)
SERVICES = ("kafka", "redis", "postgres")
# Events of the consumers' logs that say what they did (progress and per-file lines left out).
QUIET_EVENTS = {"progress", "landed", "started", "kafka_log"}


class DrillError(RuntimeError):
    """The drill itself could not run (its stack did not start, a child never got going)."""


@dataclass
class DrillOptions:
    quick: bool = False  # short phases and a lighter load: the tests' version
    stack_dir: Path = REPO_ROOT / ".drill-stack"
    port_base: int = DEFAULT_PORT_BASE
    keep_stack: bool = False  # leave the drill stack up afterwards
    rate: float | None = None  # readings/s; each drill has its default


def drill_stack(options: DrillOptions) -> LocalStack:
    base = options.port_base
    return LocalStack(
        root=options.stack_dir.resolve(),
        brokers=3,
        kafka_port=base,
        redis_port=base + 200,
        pg_port=base + 201,
        mqtt_port=base + 202,
        services=SERVICES,
    )


def now() -> float:
    return time.time()


# -- children --------------------------------------------------------------------------------
@dataclass
class Child:
    """One `ot` command run by the drill. Supervised (the default): when it exits without the
    drill asking, it is restarted with `make run`'s backoff, and the exit is recorded."""

    name: str
    command: str
    args: list[str]
    settings: Settings
    work: Path
    prefix: Sequence[str] = ()
    supervised: bool = True
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    exits: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_kb: int = 0
    restarts: Restarts = field(default_factory=Restarts)
    started_at: float = 0.0
    restart_at: float | None = None
    stopping: bool = False

    @property
    def log(self) -> Path:
        return self.work / f"{self.name}.log"

    @property
    def out(self) -> Path:
        return self.work / f"{self.name}.out"

    def start(self) -> None:
        self.started_at, self.restart_at, self.stopping = now(), None, False
        self.proc = drills.spawn(
            self.command, self.settings, self.args, self.log, self.prefix, self.out, self.env
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> None:
        """Peak resident memory (VmHWM) of the live process; restart it when it died."""
        if self.proc is None:
            return
        rc = self.proc.poll()
        if rc is None:
            self.peak_rss_kb = max(self.peak_rss_kb, _vm_hwm_kb(self.proc.pid))
            return
        if self.stopping or not self.supervised:
            return
        t = now()
        if self.restart_at is None:
            delay = self.restarts.exited(time.monotonic(), t - self.started_at)
            self.exits.append({"at": t, "rc": rc, "last_error": self.last_error()})
            self.restart_at = t + (delay if delay is not None else 30.0)
        elif t >= self.restart_at:
            self.start()

    def signal(self, sig: signal.Signals) -> float:
        """Send `sig` (SIGKILL/SIGTERM: the drill asked for this exit); returns when."""
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.stopping = True
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)
        return now()

    def stop(self, timeout: float = 60) -> dict[str, Any] | None:
        """SIGTERM and wait; the JSON summary it printed, if any."""
        self.stopping = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.summary()

    def summary(self) -> dict[str, Any] | None:
        try:
            lines = [x for x in self.out.read_text().splitlines() if x.startswith("{")]
        except FileNotFoundError:
            return None
        if not lines:
            return None
        parsed: dict[str, Any] = json.loads(lines[-1])
        return parsed

    def events(self, name: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        return [e for e in log_events(self.log) if e["ts"] >= since and name in (None, e["event"])]

    def last_error(self) -> str | None:
        for e in reversed(log_events(self.log)):
            if e["event"] in {"failed", "kafka_fatal", "error"}:
                return str(e.get("error"))[:300]
        try:
            tail = self.log.read_text().strip().splitlines()
        except FileNotFoundError:
            return None
        return tail[-1][:300] if tail else None


def log_events(log: Path) -> list[dict[str, Any]]:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "event" in record and "ts" in record:
                out.append(record)
    return out


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# -- group lag -------------------------------------------------------------------------------
class LagMonitor:
    """Committed lag of each consumer group on the readings topic, sampled every second (what
    every Kafka monitor reads; the lander commits after a file landed, the state writer after a
    transaction). A sample is None while the cluster cannot answer."""

    def __init__(self, settings: Settings, groups: Sequence[str], every: float = 1.0) -> None:
        self.settings, self.groups, self.every = settings, list(groups), every
        self.samples: list[tuple[float, dict[str, int | None]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-monitor", daemon=True)

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        topic = self.settings.topics.readings
        boot = self.settings.kafka_bootstrap_servers
        parts = [TopicPartition(topic, p) for p in range(self.settings.readings_partitions)]
        readers = {
            g: Consumer({**reader_config(boot, "lag"), "group.id": g, "log_level": 0})
            for g in self.groups
        }
        seen: set[tuple[str, int]] = set()
        try:
            while not self._stop.is_set():
                t = now()
                sample: dict[str, int | None] = {}
                try:
                    highs = {
                        tp.partition: readers[self.groups[0]].get_watermark_offsets(
                            tp, timeout=2, cached=False
                        )
                        for tp in parts
                    }
                except Exception:
                    highs = None
                for g, reader in readers.items():
                    if highs is None:
                        sample[g] = None
                        continue
                    try:
                        done = reader.committed(parts, timeout=2)
                    except Exception:
                        sample[g] = None
                        continue
                    # A partition without a commit counts from its start, unless it had one:
                    # then the coordinator did not answer for it (unknown, not a huge lag).
                    if any(
                        tp.error is not None or (tp.offset < 0 and (g, tp.partition) in seen)
                        for tp in done
                    ):
                        sample[g] = None
                        continue
                    seen.update((g, tp.partition) for tp in done if tp.offset >= 0)
                    sample[g] = sum(
                        high - (tp.offset if tp.offset >= 0 else low)
                        for tp in done
                        for low, high in [highs[tp.partition]]
                    )
                self.samples.append((t, sample))
                self._stop.wait(max(0.0, self.every - (now() - t)))
        finally:
            for reader in readers.values():
                reader.close()

    def latest(self) -> dict[str, int | None]:
        return self.samples[-1][1] if self.samples else {}

    def recovered_at(self, start: float, threshold: int, quiet: float = 15.0) -> float | None:
        """After `start`: the first sample where every group's lag is known and at most
        `threshold` again, once it had been above it (a fault the consumers absorbed without ever
        going over counts as recovered at `start`, after `quiet` seconds of samples)."""
        over = False
        first_good: float | None = None
        for t, sample in self.samples:
            if t < start:
                continue
            bad = not sample or any(v is None or v > threshold for v in sample.values())
            if bad:
                over, first_good = True, None
            elif over:
                return t
            else:
                first_good = first_good or t
                if t - start >= quiet:
                    return first_good
        return None

    def baseline(self, before: float, seconds: float = 6.0) -> int:
        """The highest lag of any group in the `seconds` before `before` (steady state)."""
        values = [
            v
            for t, sample in self.samples
            if before - seconds <= t < before
            for v in sample.values()
            if v is not None
        ]
        return max(values, default=0)

    def peak(self, start: float, end: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for t, sample in self.samples:
            if start <= t <= end:
                for g, v in sample.items():
                    if v is not None:
                        out[g] = max(out.get(g, 0), v)
        return out


# -- the drill -------------------------------------------------------------------------------
class Drill:
    """One drill run: its stack, isolated settings, children, samplers, phases and checks."""

    def __init__(self, name: str, options: DrillOptions) -> None:
        self.name, self.options = name, options
        self.stack = drill_stack(options)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.work = options.stack_dir.resolve() / "runs" / f"{stamp}-{name}"
        self.children: dict[str, Child] = {}
        self.phases: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.figures: dict[str, Any] = {}
        self.load: dict[str, Any] = {}
        self.lag: LagMonitor | None = None
        self.began = now()
        self._stack_started: list[str] = []
        self._extra: list[Settings] = []
        self._steady: int | None = None
        self._sampler_stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="sampler", daemon=True)
        self.settings: Settings

    # -- context ----------------------------------------------------------------------------
    def __enter__(self) -> Drill:
        self.work.mkdir(parents=True, exist_ok=True)
        self.say(
            f"drill {self.name}: stack in {self.stack.root} (ports from {self.stack.kafka_port})"
        )
        try:
            self._stack_started = self.stack.up()
        except StackError as exc:
            raise DrillError(f"the drill stack did not start: {exc}") from None
        base = Settings.from_env({**os.environ, **self.stack.env()})
        self.settings = drills.isolated_settings(base, self.work / "lake", replication_factor=3)
        self.settings = _with_home(self.settings, self.work / "dagster")
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self.children.values():
            child.stopping = True
            if child.alive:
                assert child.proc is not None
                child.proc.kill()
                child.proc.wait(10)
        self._sampler_stop.set()
        self._sampler.join(10)
        if self.lag is not None:
            self.lag.stop()
        self.heal_stack()
        for settings in [self.settings, *self._extra]:
            try:
                drills.clean_up(settings)
            except Exception as error:
                self.say(f"clean-up: {error}")
        if self._stack_started and not self.options.keep_stack:
            self.stack.down()

    def heal_stack(self) -> None:
        """Every service of the drill stack running and answering again (resumed, restarted)."""
        for name in [*self.stack.kafka.node_names(), "redis", "postgres"]:
            with contextlib.suppress(StackError):
                self.stack.pause(name, resume=True)
        self.stack.up()

    def _sample(self) -> None:
        while not self._sampler_stop.wait(0.5):
            for child in list(self.children.values()):
                child.sample()

    # -- what drills call ----------------------------------------------------------------------
    def say(self, line: str) -> None:
        print(f"[{now() - self.began:7.1f}s] {line}", flush=True)

    def child(
        self,
        name: str,
        command: str,
        args: Sequence[str],
        *,
        settings: Settings | None = None,
        prefix: Sequence[str] = (),
        supervised: bool = True,
        env: dict[str, str] | None = None,
    ) -> Child:
        child = Child(
            name,
            command,
            list(args),
            settings or self.settings,
            self.work,
            prefix=prefix,
            supervised=supervised,
            env=env or {},
        )
        child.start()
        self.children[name] = child
        return child

    def simulate(
        self,
        rate: float,
        seconds: float,
        machines: int = 100,
        *,
        name: str = "simulator",
        settings: Settings | None = None,
    ) -> Child:
        """The simulator in real time: `rate` readings/s of `machines` machines for `seconds`
        (default chaos: malformed messages go to the dead-letter topic)."""
        self.load = {
            "source": "ot simulate (real time, chaos default)",
            "rate_per_s": rate,
            "seconds": seconds,
            "machines": machines,
        }
        args = ["--machines", str(machines), "--rate", str(rate), "--duration", str(seconds)]
        return self.child(name, "simulate", args, settings=settings, supervised=False)

    def wait_for(self, what: str, predicate: Any, timeout: float, interval: float = 0.2) -> float:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise DrillError(f"{what}: not within {timeout:.0f} s")
            time.sleep(interval)
        return now()

    def wait_assigned(self, *names: str, timeout: float = 60) -> None:
        """Until each named consumer has partitions and wrote something (landed/applied)."""
        for name in names:
            child = self.children[name]
            self.wait_for(
                f"{name} got partitions",
                lambda c=child: bool(c.events("assigned")) or not c.alive,
                timeout,
            )

    def monitor_lag(self, *groups: str, settings: Settings | None = None) -> LagMonitor:
        if self.lag is not None:
            self.lag.stop()
        self._steady = None
        self.lag = LagMonitor(settings or self.settings, groups).start()
        return self.lag

    def group(self, name: str, settings: Settings | None = None) -> str:
        """A consumer group name of this run's own. A static member (--instance-id) that joins a
        group already used for another topic can get that group's old assignment back instead of
        the new topic's partitions (a rerun of broker-loss on a kept drill stack: the static
        lander and state writer were assigned the previous run's partitions and read nothing)."""
        topic = (settings or self.settings).topics.readings
        return f"{name}-{topic.rsplit('-', 1)[-1]}"

    def isolate(self, name: str) -> Settings:
        """Another set of topics, Redis prefix and lake on the drill stack (cleaned up at the
        end), for a second part of a drill."""
        extra = drills.isolated_settings(self.settings, self.work / name / "lake", 3)
        self._extra.append(extra)
        return extra

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait_for_load(self, simulator: Child, timeout: float) -> dict[str, Any]:
        assert simulator.proc is not None
        try:
            simulator.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            simulator.stop()
        summary = simulator.summary() or {}
        self.load.update(
            {
                "produced": summary.get("produced"),
                "delivered": summary.get("delivered"),
                "delivery_failures": summary.get("delivery_failures"),
                "undelivered_at_exit": summary.get("undelivered_at_exit"),
                "achieved_per_s": summary.get("readings_per_s") or summary.get("rate"),
            }
        )
        return summary

    def wait_caught_up(self, timeout: float) -> float | None:
        """Until every monitored group's committed lag is 0; returns when (None: not in time)."""
        assert self.lag is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.lag.latest()
            if latest and all(v == 0 for v in latest.values()):
                return now()
            time.sleep(0.5)
        return None

    def phase(
        self,
        name: str,
        fault: str,
        injected: float,
        healed: float | None,
        *,
        settle: float = 180,
        takeover_s: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Record a phase. Recovery runs from the heal (or the injection, for a fault that does
        not heal) until every group's committed lag is back to its steady state (1.5 x the
        highest lag of the 6 s before the drill's first fault, at least half a second of load),
        and is never shorter than the survivors' `takeover_s`."""
        assert self.lag is not None
        start = healed if healed is not None else injected
        rate = float(self.load.get("rate_per_s") or 0)
        if self._steady is None:  # the lag before the first fault: later ones start from it
            self._steady = self.lag.baseline(injected)
        threshold = int(max(1.5 * self._steady, 0.5 * rate, 100))
        deadline = time.monotonic() + settle
        back = self.lag.recovered_at(start, threshold)
        while back is None and time.monotonic() < deadline:
            time.sleep(0.5)
            back = self.lag.recovered_at(start, threshold)
        recovery = None if back is None else round(back - start, 1)
        if recovery is not None and takeover_s is not None:
            recovery = max(recovery, round(takeover_s, 1))
        end = back or now()
        record = {
            "phase": name,
            "fault": fault,
            "injected_at_s": round(injected - self.began, 1),
            "healed_at_s": None if healed is None else round(healed - self.began, 1),
            "outage_s": None if healed is None else round(healed - injected, 1),
            "recovery_s": recovery,
            "lag_threshold": threshold,
            "peak_lag": self.lag.peak(injected, end),
            "events": self.events_between(injected, end),
            **extra,
        }
        self.phases.append(record)
        self.check(f"{name}: recovered", back is not None, f"lag back under {threshold}")
        self.say(f"{name}: recovery {recovery} s, peak lag {record['peak_lag']}")
        return record

    def events_between(self, start: float, end: float) -> dict[str, dict[str, int]]:
        """Per child: how many of each telling log event (rebalances, rejoins, breaker trips,
        failures) it wrote in [start, end]."""
        out = {}
        for name, child in self.children.items():
            counts = Counter(
                e["event"]
                for e in child.events()
                if start <= e["ts"] <= end and e["event"] not in QUIET_EVENTS
            )
            if counts:
                out[name] = dict(sorted(counts.items()))
        return out

    def check(self, name: str, ok: bool, detail: Any = None) -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    def stop_consumers(self, *names: str) -> dict[str, dict[str, Any] | None]:
        return {name: self.children[name].stop() for name in names}

    # -- the verdict ---------------------------------------------------------------------------
    def reconcile(
        self,
        lakes: dict[str, Path] | None = None,
        state_group: str | None = None,
        settings: Settings | None = None,
        label: str = "",
    ) -> dict[str, Any]:
        """Produced offsets against the lakes (each offset landed or dead-lettered exactly once),
        the dead-letter topic (every dead-lettered offset there) and Redis (counters equal the
        valid readings landed, the offsets hash at the end of every partition)."""
        s = settings or self.settings
        lakes = lakes if lakes is not None else {"lake": s.lake_dir}
        marks = drills.watermarks(s, s.topics.readings)
        produced = sum(high - low for low, high in marks.values())
        out: dict[str, Any] = {"produced": produced, "lost": 0, "duplicated": 0, "lakes": {}}
        landed_valid: int | None = None
        dead_in_lake: int | None = None
        for name, folder in lakes.items():
            cov = lake_coverage(Lake(folder), marks).values()
            figures = {
                "landed": sum(c.landed for c in cov),
                "dead_lettered": sum(c.dead_lettered for c in cov),
                "missing": sum(c.missing_count for c in cov),
                "duplicated": sum(c.duplicated_count for c in cov),
                "outside_file_range": sum(len(c.outside) for c in cov),
                "file_name_gaps": sum(len(c.name_gaps) for c in cov),
            }
            out["lakes"][name] = figures
            out["lost"] += figures["missing"]
            out["duplicated"] += figures["duplicated"] + figures["outside_file_range"]
            self.check(
                f"{label}{name}: file names cover every offset", not figures["file_name_gaps"]
            )
            if landed_valid is None:
                landed_valid, dead_in_lake = figures["landed"], figures["dead_lettered"]
        if dead_in_lake is not None:
            in_dlq = len(set(drills.dead_lettered_sources(s)))
            out["dead_letter_topic"] = {"distinct_sources": in_dlq, "in_lake": dead_in_lake}
            out["lost"] += max(0, dead_in_lake - in_dlq)  # recorded but never dead-lettered
        if state_group is not None:
            client = redis.Redis.from_url(s.redis_url)
            keys = RedisKeys(s.redis_prefix, state_group)
            days = [k for k in client.scan_iter(keys.scan_days) if not k.endswith(b":machines")]
            counted = sum(int(client.get(k) or 0) for k in days)
            applied = int(client.hget(keys.metrics, "applied") or 0)
            invalid = int(client.hget(keys.metrics, "invalid") or 0)
            stored = {int(p): int(o) for p, o in client.hgetall(keys.offsets).items()}
            ends = {p: high - 1 for p, (_, high) in marks.items() if high > 0}
            valid = landed_valid if landed_valid is not None else applied
            out["redis"] = {
                "day_counters": counted,
                "applied": applied,
                "invalid": invalid,
                "valid_in_lake": valid,
                "offsets_at_end": stored == ends,
            }
            out["lost"] += max(0, valid - counted)
            out["duplicated"] += max(0, counted - valid)
            self.check(f"{label}redis: applied == day counters", applied == counted)
            self.check(
                f"{label}redis: applied + invalid == produced", applied + invalid == produced
            )
            self.check(f"{label}redis: offsets hash at the end of every partition", stored == ends)
        return out

    def report(self, reconciled: dict[str, Any]) -> dict[str, Any]:
        lost, duplicated = reconciled["lost"], reconciled["duplicated"]
        self.check("nothing lost", lost == 0, lost)
        self.check("nothing duplicated", duplicated == 0, duplicated)
        recoveries = [p["recovery_s"] for p in self.phases if p.get("recovery_s") is not None]
        crashes = {n: c.exits for n, c in self.children.items() if c.exits}
        return {
            "drill": self.name,
            "passed": all(c["ok"] for c in self.checks),
            "lost": lost,
            "duplicated": duplicated,
            "recovery_s": max(recoveries) if recoveries else None,
            "started": datetime.fromtimestamp(self.began, UTC).isoformat(timespec="seconds"),
            "took_s": round(now() - self.began, 1),
            "quick": self.options.quick,
            "machine": machine(),
            "load": self.load,
            "phases": self.phases,
            "reconciled": reconciled,
            "checks": self.checks,
            "unrequested_exits": crashes,
            "peak_rss_mb": {
                n: round(c.peak_rss_kb / 1024, 1) for n, c in self.children.items() if c.peak_rss_kb
            },
            **self.figures,
            "logs": str(self.work),
        }


def _with_home(settings: Settings, home: Path) -> Settings:
    from dataclasses import replace

    return replace(settings, dagster_home=home)


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_1m": round(load[0], 2),
        "python": platform.python_version(),
    }


def print_report(report: dict[str, Any]) -> None:
    """The human report, then one JSON line (the last line of stdout)."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    print(f"\n== drill {report['drill']}: {verdict} ==")
    print(
        f"lost {report['lost']}, duplicated {report['duplicated']}, "
        f"recovery {report['recovery_s']} s, took {report['took_s']} s"
    )
    for p in report["phases"]:
        print(f"- {p['phase']}: {p['fault']} -> recovery {p['recovery_s']} s")
    for c in report["checks"]:
        mark = "ok  " if c["ok"] else "FAIL"
        detail = "" if c["detail"] is None else f"  ({c['detail']})"
        print(f"  {mark} {c['check']}{detail}")
    if report["peak_rss_mb"]:
        print(
            "peak memory (MB): " + ", ".join(f"{k} {v}" for k, v in report["peak_rss_mb"].items())
        )
    print(f"logs: {report['logs']}")
    print(json.dumps(report, default=str), flush=True)


def combine(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Several reconciliations (parts of one drill) as one: lost and duplicated add up."""
    return {
        "lost": sum(p["lost"] for p in parts.values()),
        "duplicated": sum(p["duplicated"] for p in parts.values()),
        "parts": parts,
    }
