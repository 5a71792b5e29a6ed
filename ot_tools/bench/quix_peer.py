"""The peer of `ot bench peers`: the lander's work and the 1-minute windows written the way a Quix
Streams user would write them (an Application, a StreamingDataFrame, a tumbling window, the
Parquet file sink), with the library's defaults.

It runs in its own virtual environment (`.venv-peers`, from `ot_tools/bench/peers.lock`): Quix
Streams 3.28 requires confluent-kafka < 2.13 while the platform locks a newer one, so the two
cannot share an environment. This file therefore imports nothing of the project; the schema
comes as a file path and the figures leave as one JSON line on stdout.

Per machine (the topic's key) and minute of event time, the window keeps count, min, max, sum,
sum of squares, first and last per metric, and emits one row per (machine, metric, minute) when
the window closes, as a Quix user would do without a repartition topic.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from quixstreams import Application
from quixstreams.models.serializers.avro import AvroDeserializer
from quixstreams.sinks.community.file.formats import ParquetFormat
from quixstreams.sinks.community.file.local import LocalFileSink


class WireAvroDeserializer(AvroDeserializer):
    """The topic's values are in the Confluent wire format (a magic byte and a 4-byte schema id
    before the Avro body). Without a schema registry a Quix user strips that header and lets
    the library's Avro deserializer (fastavro) read the body."""

    def __call__(self, value: bytes, ctx: Any) -> Any:
        return super().__call__(value[5:], ctx)


def _event_ms(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
    """Windows follow event time (`ts`), not the time Kafka received the message."""
    return int(value["ts"].timestamp() * 1000)


def _initial(value: dict[str, Any]) -> dict[str, list[float]]:
    v = value["value"]
    return {value["metric"]: [1, v, v, v, v * v, v, v]}


def _add(state: dict[str, list[float]], value: dict[str, Any]) -> dict[str, list[float]]:
    v, metric = value["value"], value["metric"]
    s = state.get(metric)
    if s is None:
        state[metric] = [1, v, v, v, v * v, v, v]
    else:
        s[0] += 1
        s[1] = min(s[1], v)
        s[2] = max(s[2], v)
        s[3] += v
        s[4] += v * v
        s[6] = v
    return state


def _rows(window: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for metric, (count, lo, hi, total, squares, first, last) in window["value"].items():
        mean = total / count
        var = (squares - count * mean * mean) / (count - 1) if count > 1 else None
        out.append(
            {
                "bucket": window["start"],
                "metric": metric,
                "count": int(count),
                "min": lo,
                "max": hi,
                "mean": mean,
                "stddev": math.sqrt(max(var, 0.0)) if var is not None else None,
                "first": first,
                "last": last,
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--schema", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--windows", action="store_true", help="also the 1-minute windows")
    p.add_argument("--idle", type=float, default=5.0, help="stop after this long without data")
    args = p.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=str(args.out / "state"),
    )
    schema = parse_schema(json.loads(args.schema.read_text()))
    topic = app.topic(
        args.topic,
        key_deserializer="str",
        value_deserializer=WireAvroDeserializer(schema=schema),
        timestamp_extractor=_event_ms,
    )
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def stamp(value: Any) -> None:
        now = time.monotonic()
        if not seen["n"]:
            seen["first"] = now
        seen["n"] += 1
        seen["last"] = now

    sdf = app.dataframe(topic)
    sdf = sdf.update(stamp)
    # Relative paths only (the sink refuses other characters); the bench runs us in `out`.
    sdf.sink(LocalFileSink(directory="landing", format=ParquetFormat(compression="zstd")))
    if args.windows:
        windows = (
            sdf.tumbling_window(timedelta(minutes=1))
            .reduce(reducer=_add, initializer=_initial)
            .final()
        )
        windows = windows.apply(_rows, expand=True)
        windows.sink(LocalFileSink(directory="windows", format=ParquetFormat(compression="zstd")))
    app.run(timeout=args.idle)
    print(
        json.dumps(
            {
                "consumed": int(seen["n"]),
                "consuming_s": round(seen["last"] - seen["first"], 3),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
