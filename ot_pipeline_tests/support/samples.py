"""Sample readings for tests and benchmarks, and fastavro as the reference codec to compare with."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro

from streaming.events import HEADER, UNITS, MachineType, Metric, Quality, SensorReading
from streaming.events.codec import PLAIN_SCHEMA

NOW_MS = 1_790_000_000_000  # a fixed ingest time: 2026-09-21
MAX_FUTURE_MS = 300_000
MAX_AGE_MS = 30 * 24 * 3600 * 1000


def reading(**overrides: Any) -> dict[str, Any]:
    """A valid record dict; overrides replace fields (event_id follows machine_id and seq)."""
    record = SensorReading.create(
        machine_id=overrides.pop("machine_id", "press-07"),
        machine_type=overrides.pop("machine_type", "MOTOR"),
        line_id=overrides.pop("line_id", "line-a"),
        metric=overrides.pop("metric", "temperature"),
        value=overrides.pop("value", 71.25),
        ts=overrides.pop("ts", NOW_MS - 1_000),
        seq=overrides.pop("seq", 4711),
        status_code=overrides.pop("status_code", 0),
        quality=overrides.pop("quality", "GOOD"),
    ).to_record()
    record.update(overrides)
    return record


def random_readings(n: int, seed: int) -> list[dict[str, Any]]:
    """Valid readings with varied strings (incl. non-ASCII line ids), values, times and enums."""
    rng = random.Random(seed)
    metrics = list(Metric)
    lines = ["line-a", "l", "Linie-Süd-3", "线-2", "x" * 64]
    out = []
    for i in range(n):
        metric = metrics[rng.randrange(len(metrics))]
        machine = f"m{rng.randrange(10_000)}" + rng.choice(["", "-pump", "_x"])
        seq = rng.choice([0, 1, 63, 64, 8191, 8192, rng.randrange(2**40), 2**63 - 1])
        lo, hi = {Metric.TEMPERATURE: (-50.0, 400.0)}.get(metric, (0.0, 100.0))
        out.append(
            SensorReading.create(
                machine_id=machine,
                machine_type=rng.choice(list(MachineType)),
                line_id=rng.choice(lines),
                metric=metric,
                value=rng.choice([lo, hi, rng.uniform(lo, hi), 0.0]),
                ts=NOW_MS - rng.randrange(MAX_AGE_MS) + rng.randrange(MAX_FUTURE_MS),
                seq=seq,
                status_code=i % 4,
                quality=rng.choice(list(Quality)),
            ).to_record()
        )
        assert out[-1]["unit"] == UNITS[metric]
    return out


def fastavro_wire(record: dict[str, Any]) -> bytes:
    """The reference encoding: header + fastavro's schemaless writer."""
    buf = io.BytesIO()
    buf.write(HEADER)
    fastavro.schemaless_writer(buf, PLAIN_SCHEMA, record)
    return buf.getvalue()


def fastavro_read_exactly(payload: bytes) -> dict[str, Any] | None:
    """fastavro's reading of a wire-format payload, or None unless it is exactly one record."""
    if len(payload) < 5 or payload[:5] != HEADER:
        return None
    body = io.BytesIO(payload[5:])
    try:
        record = fastavro.schemaless_reader(body, PLAIN_SCHEMA)
    except Exception:
        return None
    if body.tell() != len(payload) - 5:
        return None
    return record  # type: ignore[return-value]
