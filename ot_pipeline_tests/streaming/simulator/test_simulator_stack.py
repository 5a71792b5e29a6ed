"""`ot simulate` against the real local Kafka: what the summary says is what is in the topics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streaming.events import decode_batch
from streaming.settings import Settings
from streaming.simulator.runner import Options, Simulation

pytestmark = pytest.mark.stack


def _read_all(settings: Settings, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every message of `topic` as (partition, key, value), read up to the high watermarks."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"sim-test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                 for p in meta.partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in highs])
        out: list[tuple[int, bytes | None, bytes | None]] = []
        done = {p: h == 0 for p, h in highs.items()}
        deadline = time.monotonic() + 60
        while not all(done.values()) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                assert msg.error() is None, msg.error()
                p, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                out.append((p, msg.key(), msg.value()))
                if offset + 1 >= highs[p]:
                    done[p] = True
        assert all(done.values()), "timed out reading back"
        return out
    finally:
        consumer.close()


def test_fast_forward_hour_reads_back_exactly_what_the_summary_reports(
    isolated: Settings,
) -> None:
    # default chaos, with duplicates, latency and malformed made frequent enough to be present
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0).timestamp() - 2 * 3600
    options = Options(
        machines=5,
        seed=21,
        chaos="default",
        rates={"duplicate": 1.0, "latency": 1.0, "packet_loss": 1.0, "malformed": 0.002},
        interval_s=5.0,
        hours=1.0,
        start=datetime.fromtimestamp(start, UTC),
    )
    summary = Simulation(isolated, options, log=lambda *_, **__: None).run()
    assert summary["delivery_failures"] == 0 and summary["undelivered_at_exit"] == 0
    assert summary["delivered"] == summary["messages_sent"]
    assert summary["duplicates"] > 0 and summary["malformed"]["total"] > 0
    assert summary["lost_packet_loss"] > 0 and summary["late_after_hour"] >= 0

    readings = _read_all(isolated, isolated.topics.readings)
    assert len(readings) == summary["produced"]
    payloads = [v for _, _, v in readings]
    decoded = decode_batch(
        payloads, int(time.time() * 1000), max_future_ms=300_000, max_age_ms=10 * 86_400_000
    )
    valid = decoded.valid
    assert valid.num_rows == summary["readings"]
    reasons = Counter(str(r.reason) for r in decoded.rejected)
    kinds = summary["malformed"]
    assert reasons == Counter(
        {
            "UNDECODABLE": kinds["undecodable"],
            "OUT_OF_RANGE": kinds["out_of_range"],
            "UNKNOWN_ENUM": kinds["unknown_enum"],
        }
    )
    event_ids = valid.column("event_id").to_pylist()
    assert len(event_ids) - len(set(event_ids)) == summary["duplicates"]
    # key = machine_id, and each machine stays in one partition
    machine_ids = valid.column("machine_id").to_pylist()
    partition_of: dict[str, set[int]] = {}
    for row, idx in enumerate(decoded.valid_index.tolist()):
        partition, key, _ = readings[idx]
        assert key == machine_ids[row].encode()
        partition_of.setdefault(machine_ids[row], set()).add(partition)
    assert len(partition_of) == 5 and all(len(p) == 1 for p in partition_of.values())
    # packet loss = seq gaps: the missing seq numbers are exactly the lost readings
    seqs = valid.column("seq").to_numpy()
    missing = 0
    for machine in partition_of:
        s = np.unique(seqs[np.array(machine_ids) == machine])
        missing += int((np.diff(s) - 1).sum())
    assert missing == summary["lost_packet_loss"]

    truth = [json.loads(v) for _, _, v in _read_all(isolated, isolated.topics.faults) if v]
    machines = [t for t in truth if t["kind"] == "machine"]
    faults = [t for t in truth if t["kind"] == "fault"]
    assert len(machines) == summary["machine_records"] == 5
    assert len(faults) == summary["fault_records"]
    assert Counter(f["fault_type"] for f in faults) == Counter(
        {k: v for k, v in summary["faults"].items() if v}
    )
    assert summary["faults"]["malformed"] == kinds["total"]
    assert {f["machine_id"] for f in faults} <= set(partition_of)


def test_real_time_run_is_paced_by_rate_with_event_time_now(isolated: Settings) -> None:
    options = Options(machines=4, seed=1, chaos="none", rate=400.0, duration_s=3.0)
    before = time.time() * 1000
    summary = Simulation(isolated, options, log=lambda *_, **__: None).run()
    after = time.time() * 1000
    assert summary["mode"] == "real-time" and summary["delivery_failures"] == 0
    assert 0.8 * 1200 <= summary["readings"] <= 1.1 * 1200
    first = datetime.fromisoformat(summary["first_event_ts"]).timestamp() * 1000
    last = datetime.fromisoformat(summary["last_event_ts"]).timestamp() * 1000
    assert before - 1000 <= first and last <= after + 1000
    assert len(_read_all(isolated, isolated.topics.readings)) == summary["produced"]


def test_sigterm_ends_a_real_time_run_like_ctrl_c_with_flush_and_summary(
    isolated: Settings,
) -> None:
    """A supervisor's SIGTERM (make run, make stop) stops an open-ended run cleanly: what was
    generated is delivered and the summary line says so, as on Ctrl-C."""
    from ot_tools import drills

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streaming.cli",
            "simulate",
            "--machines",
            "3",
            "--rate",
            "200",
            "--duration",
            "0",
            "--chaos",
            "none",
        ],
        env=drills.child_env(isolated),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(4)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] is True
    assert summary["readings"] > 0
    assert summary["delivered"] == summary["messages_sent"]
    assert summary["undelivered_at_exit"] == 0
    readings = _read_all(isolated, isolated.topics.readings)
    assert len(readings) == summary["produced"]
