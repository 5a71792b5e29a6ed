"""`ot bench events`: encode and decode+validate rates of the v1 codec on realistic readings.

Pure CPU, no servers. Each figure is the best of a few repetitions of CPU time (process time) on
one core, so that other work on the machine distorts it less; fastavro's per-record calls on a
subset give the ratio to the reference codec measured in the same run.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa

from streaming.events.codec import PLAIN_SCHEMA, encode_avro_many, encode_avro_table
from streaming.events.columnar import HEADER
from streaming.events.model import UNITS, MachineType, Metric, Quality, event_ids_for
from streaming.events.validation import decode_batch
from streaming.settings import Settings

LANDER_BATCH = 10_000  # a typical consumer micro-batch


def realistic_table(n: int, now_ms: int, machines: int = 500, seed: int = 42) -> pa.Table:
    """A fleet's readings: every machine reports every metric of its type once per second."""
    rng = np.random.default_rng(seed)
    metrics = list(Metric)
    i = np.arange(n)
    machine = i % machines
    metric_idx = (i // machines) % len(metrics)
    tick = i // (machines * len(metrics))
    machine_ids = np.array([f"machine-{m:04d}" for m in range(machines)], dtype=object)
    types = [str(t) for t in MachineType]
    seq = (tick * len(metrics) + metric_idx).astype(np.int64)
    mid = machine_ids[machine]
    values = rng.normal(50.0, 10.0, n).clip(0.0, 100.0)
    return pa.table(
        {
            "event_id": pa.array(event_ids_for(mid, seq.tolist())),
            "machine_id": pa.array(mid.tolist(), pa.string()),
            "machine_type": pa.array([types[m % len(types)] for m in machine.tolist()]),
            "line_id": pa.array([f"line-{m // 50:02d}" for m in machine.tolist()]),
            "metric": pa.array([str(metrics[k]) for k in metric_idx.tolist()]),
            "unit": pa.array([UNITS[metrics[k]] for k in metric_idx.tolist()]),
            "value": pa.array(values),
            "ts": pa.array(now_ms - 600_000 + tick * 1000, pa.int64()),
            "seq": pa.array(seq),
            "status_code": pa.array((rng.random(n) < 0.02).astype(np.int64)),
            "quality": pa.array([str(Quality.GOOD)] * n),
        }
    )


def _best_cpu_seconds(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def _figures(name: str, n: int, seconds: float) -> dict[str, float]:
    return {
        f"{name}_per_s": round(n / seconds) if seconds > 0 else 0.0,
        f"{name}_us_per_record": round(seconds / n * 1e6, 3),
    }


def _progress(message: str) -> None:
    print(f"[bench events] {message}", file=sys.stderr, flush=True)


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    """Encode and decode+validate rates, with fastavro per-record calls as the reference."""
    n = 50_000 if quick else 500_000
    reference_n = min(n, 20_000 if quick else 50_000)
    repeat = 2 if quick else 3
    now_ms = int(time.time() * 1000)
    max_future_ms = settings.max_future_ms
    max_age_ms = settings.max_age_ms
    table = realistic_table(n, now_ms)
    records = table.to_pylist()
    figures: dict[str, Any] = {"records": n}

    _progress(f"encoding {n} records")
    figures |= _figures(
        "encode_dicts", n, _best_cpu_seconds(lambda: encode_avro_many(records), repeat)
    )
    figures |= _figures(
        "encode_table", n, _best_cpu_seconds(lambda: encode_avro_table(table), repeat)
    )

    def fastavro_encode() -> None:
        buf = io.BytesIO()
        for record in records[:reference_n]:
            buf.seek(0)
            buf.truncate()
            buf.write(HEADER)
            fastavro.schemaless_writer(buf, PLAIN_SCHEMA, record)
            buf.getvalue()

    figures |= _figures("fastavro_encode", reference_n, _best_cpu_seconds(fastavro_encode, 1))

    payloads: list[bytes | None] = list(encode_avro_table(table))
    figures["avg_message_bytes"] = round(sum(map(len, payloads)) / n, 1)  # type: ignore[arg-type]

    def decode_in_lander_batches(items: list[bytes | None]) -> int:
        valid = 0
        for start in range(0, len(items), LANDER_BATCH):
            batch = decode_batch(
                items[start : start + LANDER_BATCH],
                now_ms,
                max_future_ms=max_future_ms,
                max_age_ms=max_age_ms,
            )
            valid += batch.valid.num_rows
        return valid

    _progress(f"decoding {n} records in batches of {LANDER_BATCH}")
    assert decode_in_lander_batches(payloads) == n, "realistic readings must all be valid"
    figures |= _figures(
        "decode_validate", n, _best_cpu_seconds(lambda: decode_in_lander_batches(payloads), repeat)
    )

    # 1% damaged messages spread through the batch: the isolation must not cost much.
    rng = np.random.default_rng(7)
    damaged = list(payloads)
    for i in rng.choice(n, size=n // 100, replace=False).tolist():
        msg = damaged[i]
        assert msg is not None
        damaged[i] = msg[: int(rng.integers(0, len(msg)))]
    figures |= _figures(
        "decode_validate_1pct_bad",
        n,
        _best_cpu_seconds(lambda: decode_in_lander_batches(damaged), repeat),
    )

    def fastavro_decode() -> None:
        for payload in payloads[:reference_n]:
            assert payload is not None
            fastavro.schemaless_reader(io.BytesIO(payload[5:]), PLAIN_SCHEMA)

    figures |= _figures("fastavro_decode_only", reference_n, _best_cpu_seconds(fastavro_decode, 1))
    figures["decode_speedup_vs_fastavro"] = round(
        figures["fastavro_decode_only_us_per_record"] / figures["decode_validate_us_per_record"], 1
    )
    figures["encode_table_speedup_vs_fastavro"] = round(
        figures["fastavro_encode_us_per_record"] / figures["encode_table_us_per_record"], 1
    )
    figures["timing"] = "best-of CPU process time, one core; machine shared, figures noisy"
    return figures
