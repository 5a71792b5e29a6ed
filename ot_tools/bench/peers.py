"""`ot bench peers`: the platform's landing and 1-minute windows against the same work written
the way a Quix Streams user would write it, and a bare confluent-kafka loop, in one run.

One topic of simulated readings (fast-forward, 1,000 machines, no chaos, 6 partitions) is read
from the start by each contender in turn, each in a fresh group and as a process of its own, in
rounds that alternate the order:

- `bare`: a confluent-kafka loop that reads every message's value (the project's consumer
  settings), nothing else: the ceiling;
- `land`: `ot land` (decode + validate, zstd Parquet, fsync, rename);
- `windows`: the project's 1-minute windows (`tumbling_windows`, the `windows_1m` transform) over
  what `land` landed, written as zstd Parquet;
- `quix_land`: Quix Streams consuming, decoding the Avro (its AvroDeserializer) and writing zstd
  Parquet (its file sink);
- `quix_land_windows`: the same app with a second branch, a 1-minute tumbling window per machine
  and metric (`ot_tools/bench/quix_peer.py`).

Every output is counted: landed rows and window counts must equal the readings produced, the
peer's windows must equal the project's (bar each machine's last minute, which a streaming window
closes only when later data arrives). CPU seconds and peak RSS come from wait4 (exact); rates are
readings over the time from the first to the last message. Figures: readings per CPU-second,
ratios to the bare loop and to the peer.

Sizes: 1,000,000 readings and 2 rounds (`--quick`: 100,000 and 1), or OT_BENCH_PEERS_READINGS
and OT_BENCH_PEERS_ROUNDS.

The peer runs in `.venv-peers` (made on first use from `ot_tools/bench/peers.lock`): Quix
Streams 3.28 needs confluent-kafka < 2.13 and the platform locks a newer one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ot_tools import drills
from ot_tools.bench.proc import Finished, run_measured
from streaming.settings import Settings, Topics
from streaming.stack.local import REPO_ROOT
from streaming.stack.topics import create_topics, delete_topics

MACHINES = 1000
PEER_VENV = REPO_ROOT / ".venv-peers"
PEER_LOCK = Path(__file__).with_name("peers.lock")
PEER_SCRIPT = Path(__file__).with_name("quix_peer.py")
SCHEMA = REPO_ROOT / "streaming" / "events" / "schemas" / "sensor_reading.avsc"
CONTENDERS = ("bare", "land", "windows", "quix_land", "quix_land_windows")
ROUND_BACK = ("quix_land_windows", "quix_land", "land", "windows", "bare")


def peer_python() -> Path:
    """The peer's interpreter; the venv is created from the lock on first use."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(PEER_LOCK)], check=True
        )
    return python


def produce(settings: Settings, readings: int) -> int:
    """Simulated readings into `settings.topics.readings`; returns how many were produced."""
    from streaming.simulator.fleet import build_fleet
    from streaming.simulator.runner import Options, Simulation

    per_tick = int(build_fleet(MACHINES, 1).n_metrics.sum())
    hours = readings / per_tick / 3600.0
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    options = Options(machines=MACHINES, seed=1, chaos="none", hours=hours, start=start)
    summary = Simulation(settings, options, log=lambda line: None).run()
    if summary["delivery_failures"] or summary["undelivered_at_exit"]:
        raise RuntimeError(f"producing the bench topic failed: {summary}")
    return int(summary["readings"])


# -- the contenders' own processes -------------------------------------------------------------
def bare_loop(settings: Settings, n: int) -> dict[str, Any]:
    """The ceiling: consume every message and read its value (`python -m ... bare`)."""
    from confluent_kafka import Consumer

    from streaming.kafka.config import consumer_config

    consumer = Consumer(consumer_config(settings, f"bench-bare-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([settings.topics.readings])
    seen = nbytes = 0
    first = None
    while seen < n:
        for m in consumer.consume(num_messages=20_000, timeout=1.0):
            if first is None:
                first = time.monotonic()
            if m.error() is None:
                value = m.value()
                nbytes += len(value) if value else 0
                seen += 1
    took = time.monotonic() - (first or time.monotonic())
    consumer.close()
    return {"consumed": seen, "bytes": nbytes, "consuming_s": round(took, 3)}


def project_windows(lake: Path, out: Path) -> dict[str, Any]:
    """The `windows_1m` transform over everything landed, written as zstd Parquet."""
    import polars as pl

    from ot_pipeline.transforms.windows import tumbling_windows
    from streaming.lake import Lake

    started = time.monotonic()
    paths = [str(f.path) for f in Lake(lake).landed_files()]
    readings = pl.read_parquet(paths, columns=["ts", "machine_id", "metric", "value"])
    windows = tumbling_windows(readings, "1m", "5m")
    windows.write_parquet(out, compression="zstd", compression_level=1)
    return {
        "readings": readings.height,
        "windows": windows.height,
        "counted": int(windows["count"].sum()),
        "consuming_s": round(time.monotonic() - started, 3),
    }


# -- one contender, measured --------------------------------------------------------------------
def _json_line(done: Finished, what: str) -> dict[str, Any]:
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} exited {done.returncode}: {done.stderr[-800:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_one(what: str, settings: Settings, n: int, work: Path) -> dict[str, Any]:
    """Run one contender to its end; its figures and the counts of what it wrote."""
    env = drills.child_env(settings)
    env["PYTHONPATH"] = str(REPO_ROOT)
    me = [sys.executable, "-m", "ot_tools.bench.peers"]
    group = f"bench-{what}-{uuid.uuid4().hex[:8]}"
    out = work / what
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if what == "bare":
        done = run_measured([*me, "bare", "--messages", str(n)], env, 900)
        figures = _json_line(done, what)
        rows = figures["consumed"]
    elif what == "land":
        env["OT_LAKE_DIR"] = str(work / "lake")
        shutil.rmtree(work / "lake", ignore_errors=True)
        cmd = [sys.executable, "-m", "streaming.cli", "land", "--group", group]
        done = run_measured([*cmd, "--max-messages", str(n)], env, 900)
        figures = _json_line(done, what)
        rows = figures["landed"]
    elif what == "windows":
        cmd = [*me, "windows", "--lake", str(work / "lake"), "--out", str(out / "w.parquet")]
        done = run_measured(cmd, env, 900)
        figures = _json_line(done, what)
        rows = figures["counted"]
    else:
        cmd = [str(peer_python()), str(PEER_SCRIPT), "--bootstrap"]
        cmd += [settings.kafka_bootstrap_servers, "--topic", settings.topics.readings]
        cmd += ["--group", group, "--schema", str(SCHEMA), "--out", str(out)]
        if what == "quix_land_windows":
            cmd.append("--windows")
        done = run_measured(cmd, {**os.environ, "PYTHONPATH": ""}, 1800, cwd=out)
        figures = _json_line(done, what)
        rows = parquet_rows(out / "landing")
        if what == "quix_land_windows":
            figures["windows"], figures["counted"] = window_counts(out / "windows")
    return {
        "rows": rows,
        "cpu_s": round(done.cpu_s, 2),
        "wall_s": round(done.wall_s, 2),
        "peak_rss_mb": round(done.peak_rss_mb),
        **{k: figures[k] for k in ("consuming_s", "windows", "counted") if k in figures},
    }


def parquet_rows(root: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in root.rglob("*.parquet"))


def window_counts(root: Path) -> tuple[int, int]:
    """(windows, readings they counted) of the peer's window files."""
    import polars as pl

    paths = [str(p) for p in root.rglob("*.parquet")]
    if not paths:
        return 0, 0
    frame = pl.read_parquet(paths, columns=["count"])
    return frame.height, int(frame["count"].sum())


def closed_windows(project: Path) -> tuple[int, int]:
    """The project's windows without each machine's last minute: what a streaming window can
    have closed when the data ends (windows, readings counted)."""
    import polars as pl

    w = pl.read_parquet(project)
    last = w.group_by("machine_id").agg(pl.col("bucket").max().alias("_last"))
    closed = w.join(last, on="machine_id").filter(pl.col("bucket") < pl.col("_last"))
    return closed.height, int(closed["count"].sum())


def check(what: str, result: dict[str, Any], n: int, expected_windows: tuple[int, int]) -> None:
    """Every output holds exactly what was produced."""
    if result["rows"] != n:
        raise RuntimeError(f"{what}: {result['rows']} rows, expected {n}")
    if what == "quix_land_windows":
        got = (result["windows"], result["counted"])
        if got != expected_windows:
            raise RuntimeError(f"{what}: windows/readings {got}, project {expected_windows}")


def summarize(results: dict[str, list[dict[str, Any]]], n: int) -> dict[str, Any]:
    """Best of the rounds per contender (least CPU, shortest consuming time), and the ratios."""

    def best(what: str, key: str) -> float:
        return min(float(r[key]) for r in results[what])

    out: dict[str, Any] = {}
    for what, runs in results.items():
        out[f"{what}_cpu_s"] = best(what, "cpu_s")
        out[f"{what}_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        out[f"{what}_per_cpu_s"] = round(n / best(what, "cpu_s"))
        if what != "windows":
            out[f"{what}_per_s"] = round(n / best(what, "consuming_s"))
    land, quix = out["land_cpu_s"], out["quix_land_cpu_s"]
    ours_both = land + out["windows_cpu_s"]
    out["land_vs_bare_rate"] = round(out["land_per_s"] / out["bare_per_s"], 3)
    out["quix_land_vs_bare_rate"] = round(out["quix_land_per_s"] / out["bare_per_s"], 3)
    out["land_vs_quix_per_cpu_s"] = round(quix / land, 2)
    out["land_windows_vs_quix_per_cpu_s"] = round(out["quix_land_windows_cpu_s"] / ours_both, 2)
    out["land_vs_quix_rate"] = round(out["land_per_s"] / out["quix_land_per_s"], 2)
    return out


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    wanted = int(os.environ.get("OT_BENCH_PEERS_READINGS", 100_000 if quick else 1_000_000))
    rounds = int(os.environ.get("OT_BENCH_PEERS_ROUNDS", 1 if quick else 2))
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        readings=f"bench-peers-{suffix}",
        dlq=f"bench-peers-{suffix}.dlq",
        alerts=f"bench-peers-alerts-{suffix}",
        faults=f"bench-peers-faults-{suffix}",
    )
    bench = replace(settings, topics=topics)
    work = Path(tempfile.mkdtemp(prefix="ot-bench-peers-"))
    create_topics(settings.kafka_bootstrap_servers, topics, readings_partitions=6)
    figures: dict[str, Any] = {"load_avg_1m_start": round(os.getloadavg()[0], 2)}
    try:
        peer_python()
        n = produce(bench, wanted)
        results: dict[str, list[dict[str, Any]]] = {what: [] for what in CONTENDERS}
        expected_windows = (0, 0)
        for i in range(rounds):
            # Alternate the order; the project's windows read what `land` landed just before.
            order = CONTENDERS if i % 2 == 0 else ROUND_BACK
            for what in order:
                result = run_one(what, bench, n, work)
                if what == "windows":
                    expected_windows = closed_windows(work / "windows" / "w.parquet")
                check(what, result, n, expected_windows)
                results[what].append(result)
        figures |= {"readings": n, "rounds": rounds, **summarize(results, n)}
        figures["closed_windows_checked"], figures["closed_window_readings"] = expected_windows
    finally:
        delete_topics(settings.kafka_bootstrap_servers, topics.all())
        shutil.rmtree(work, ignore_errors=True)
    figures["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return figures


def main(argv: list[str]) -> int:
    """The bench's own child processes: `bare` and `windows`."""
    p = argparse.ArgumentParser(prog="python -m ot_tools.bench.peers")
    sub = p.add_subparsers(dest="what", required=True)
    bare = sub.add_parser("bare")
    bare.add_argument("--messages", type=int, required=True)
    windows = sub.add_parser("windows")
    windows.add_argument("--lake", type=Path, required=True)
    windows.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.what == "bare":
        result = bare_loop(Settings.from_env(), args.messages)
    else:
        result = project_windows(args.lake, args.out)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
