"""Contract of topic `sim.faults`: the simulator's ground truth, one JSON record per message.

Two kinds of record share the topic (field `kind`): a `fault` (an injected fault: type, machine,
maybe a metric, the window [start_ms, end_ms), its parameters, whether detectors are expected to
see it) and a `machine` (a machine's type, line and per-metric unit and nominal band). The
simulator publishes them, the `ground_truth` asset reads them back into two frames; both go
through this module, so the record layout and the frame schemas are written once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

FAULT_KIND = "fault"
MACHINE_KIND = "machine"

# Frames of the records; params and metrics are kept as JSON text (sorted keys).
FAULT_SCHEMA: dict[str, pl.DataType] = {
    "fault_id": pl.String(),
    "fault_type": pl.String(),
    "machine_id": pl.String(),
    "metric": pl.String(),
    "start_ms": pl.Int64(),
    "end_ms": pl.Int64(),
    "params": pl.String(),
    "detectable": pl.Boolean(),
}
MACHINE_SCHEMA: dict[str, pl.DataType] = {
    "machine_id": pl.String(),
    "machine_type": pl.String(),
    "line_id": pl.String(),
    "metrics": pl.String(),
}


@dataclass(frozen=True)
class FaultRecord:
    fault_id: str
    fault_type: str
    machine_id: str
    metric: str | None
    start_ms: int
    end_ms: int
    params: Mapping[str, Any] = field(default_factory=dict)
    detectable: bool = False

    def to_json(self) -> dict[str, Any]:
        """The message value (as a JSON object), `kind` first."""
        return {
            "kind": FAULT_KIND,
            "fault_id": self.fault_id,
            "fault_type": self.fault_type,
            "machine_id": self.machine_id,
            "metric": self.metric,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "params": self.params,
            "detectable": self.detectable,
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> FaultRecord:
        return cls(
            fault_id=record.get("fault_id"),  # type: ignore[arg-type]
            fault_type=record.get("fault_type"),  # type: ignore[arg-type]
            machine_id=record.get("machine_id"),  # type: ignore[arg-type]
            metric=record.get("metric"),
            start_ms=record.get("start_ms"),  # type: ignore[arg-type]
            end_ms=record.get("end_ms"),  # type: ignore[arg-type]
            params=record.get("params") or {},
            detectable=record.get("detectable"),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class MachineRecord:
    machine_id: str
    machine_type: str
    line_id: str
    # metric -> {"unit": ..., "nominal_min": ..., "nominal_max": ...}
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The message value (as a JSON object), `kind` first."""
        return {
            "kind": MACHINE_KIND,
            "machine_id": self.machine_id,
            "machine_type": self.machine_type,
            "line_id": self.line_id,
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> MachineRecord:
        return cls(
            machine_id=record.get("machine_id"),  # type: ignore[arg-type]
            machine_type=record.get("machine_type"),  # type: ignore[arg-type]
            line_id=record.get("line_id"),  # type: ignore[arg-type]
            metrics=record.get("metrics") or {},
        )


def json_text(value: Mapping[str, Any]) -> str:
    """How params and metrics are kept in the frames."""
    return json.dumps(value, sort_keys=True)


def faults_frame(faults: Iterable[FaultRecord]) -> pl.DataFrame:
    rows = list(faults)
    return pl.DataFrame(
        {
            "fault_id": [f.fault_id for f in rows],
            "fault_type": [f.fault_type for f in rows],
            "machine_id": [f.machine_id for f in rows],
            "metric": [f.metric for f in rows],
            "start_ms": [f.start_ms for f in rows],
            "end_ms": [f.end_ms for f in rows],
            "params": [json_text(f.params) for f in rows],
            "detectable": [f.detectable for f in rows],
        },
        schema=FAULT_SCHEMA,
    )


def machines_frame(machines: Iterable[MachineRecord]) -> pl.DataFrame:
    rows = list(machines)
    return pl.DataFrame(
        {
            "machine_id": [m.machine_id for m in rows],
            "machine_type": [m.machine_type for m in rows],
            "line_id": [m.line_id for m in rows],
            "metrics": [json_text(m.metrics) for m in rows],
        },
        schema=MACHINE_SCHEMA,
    )


@dataclass(frozen=True)
class GroundTruth:
    """The topic read back: one row per fault and per machine (the last record of an id wins)."""

    faults: pl.DataFrame  # FAULT_SCHEMA
    machines: pl.DataFrame  # MACHINE_SCHEMA
    messages: int

    @classmethod
    def parse(cls, values: Iterable[bytes]) -> GroundTruth:
        """Message values of the topic, in topic order; records of another kind are ignored."""
        faults: list[FaultRecord] = []
        machines: list[MachineRecord] = []
        messages = 0
        for raw in values:
            messages += 1
            record = json.loads(raw)
            if record.get("kind") == FAULT_KIND:
                faults.append(FaultRecord.from_json(record))
            elif record.get("kind") == MACHINE_KIND:
                machines.append(MachineRecord.from_json(record))
        return cls(
            faults=faults_frame(faults).unique("fault_id", keep="last", maintain_order=True),
            machines=machines_frame(machines).unique(
                "machine_id", keep="last", maintain_order=True
            ),
            messages=messages,
        )
