"""Bytes on the wire: simulator blocks as contract messages, and the malformed payloads.

Blocks are encoded column-wise by the event contract's own encoder
(`streaming.events.encode_avro_table`, ~1 M readings/s on one core), so there is one Avro encoder
in the project and the simulator's bytes are the contract's by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from streaming.events import encode_avro_table
from streaming.events.model import RANGES, UNITS, event_id_for
from streaming.simulator.fleet import METRIC_ORDER, Fleet
from streaming.simulator.generator import QUALITY_NAMES, ReadingBlock, readings_frame

_OUT_OF_RANGE = np.array([RANGES[m][1] * 10 + 1 for m in METRIC_ORDER])


@dataclass
class AvroBlockEncoder:
    """Encodes `ReadingBlock` rows of one fleet into Confluent wire-format Avro messages."""

    fleet: Fleet

    def __post_init__(self) -> None:
        self.keys = [m.machine_id.encode() for m in self.fleet.machines]

    def encode(
        self, block: ReadingBlock, value: npt.NDArray[np.float64] | None = None
    ) -> list[bytes]:
        """One message per row, in row order (`value` overrides the block's values)."""
        if len(block) == 0:
            return []
        if value is not None:
            block = replace(block, value=np.asarray(value, dtype=np.float64))
        return encode_avro_table(readings_frame(self.fleet, block))

    def key_list(self, block: ReadingBlock) -> list[bytes]:
        keys = self.keys
        return [keys[m] for m in block.machine.tolist()]

    def record(self, block: ReadingBlock, row: int) -> dict[str, object]:
        """The record dict of one row (for JSON and for the slow, reference encoder)."""
        machine = self.fleet.machines[int(block.machine[row])]
        metric = METRIC_ORDER[int(block.metric[row])]
        seq = int(block.seq[row])
        return {
            "event_id": event_id_for(machine.machine_id, seq),
            "machine_id": machine.machine_id,
            "machine_type": str(machine.machine_type),
            "line_id": machine.line_id,
            "metric": str(metric),
            "unit": UNITS[metric],
            "value": float(block.value[row]),
            "ts": int(block.ts[row]),
            "seq": seq,
            "status_code": int(block.status[row]),
            "quality": QUALITY_NAMES[int(block.quality[row])],
        }

    def malformed(self, block: ReadingBlock) -> list[bytes]:
        """Payloads of malformed rows, by kind: 0 undecodable (a valid message cut in half),
        1 out_of_range (value ten times past the metric's physical maximum), 2 unknown_enum
        (JSON with machine_type "ROBOT")."""
        n = len(block)
        if n == 0:
            return []
        valid = self.encode(block)
        bad_values = self.encode(block, value=_OUT_OF_RANGE[block.metric])
        out: list[bytes] = []
        for row, kind in enumerate(block.malformed.tolist()):
            if kind == 0:
                out.append(valid[row][: max(6, len(valid[row]) // 2)])
            elif kind == 1:
                out.append(bad_values[row])
            else:
                record = self.record(block, row)
                record["machine_type"] = "ROBOT"
                out.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())
        return out


@dataclass
class MqttBlockEncoder:
    """Simulator blocks as device messages on the plain MQTT topics (`--sink mqtt`):
    `{root}/{line_id}/{machine_id}/{metric}` with a JSON payload of what a device knows (value,
    ts, seq, status_code, quality, machine_type); the bridge fills in unit and event_id."""

    fleet: Fleet
    root: str

    def __post_init__(self) -> None:
        self.topics = [
            [f"{self.root}/{m.line_id}/{m.machine_id}/{metric}" for metric in METRIC_ORDER]
            for m in self.fleet.machines
        ]
        self.types = [str(m.machine_type) for m in self.fleet.machines]

    def messages(self, block: ReadingBlock) -> list[tuple[str, bytes]]:
        """One (topic, payload) per row, in row order; malformed rows by kind as in
        `AvroBlockEncoder.malformed`: 0 a payload cut in half, 1 a value ten times past the
        metric's maximum, 2 machine_type "ROBOT"."""
        out: list[tuple[str, bytes]] = []
        dumps = json.dumps
        rows = zip(
            block.machine.tolist(),
            block.metric.tolist(),
            block.value.tolist(),
            block.ts.tolist(),
            block.seq.tolist(),
            block.status.tolist(),
            block.quality.tolist(),
            block.malformed.tolist(),
            strict=True,
        )
        for machine, metric, value, ts, seq, status, quality, bad in rows:
            body = {
                "value": value if bad != 1 else float(_OUT_OF_RANGE[metric]),
                "ts": ts,
                "seq": seq,
                "status_code": status,
                "quality": QUALITY_NAMES[quality],
                "machine_type": self.types[machine] if bad != 2 else "ROBOT",
            }
            payload = dumps(body, separators=(",", ":")).encode()
            if bad == 0:
                payload = payload[: len(payload) // 2]
            out.append((self.topics[machine][metric], payload))
        return out
