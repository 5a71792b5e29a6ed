"""Event contract v1 of topic `sensor-readings`: enums, units, physical ranges and limits.

One place holds every fact the producers, the validator and the docs agree on, so a change to the
contract is a change to this module (and `schemas/sensor_reading.avsc`, which must stay in step).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

SCHEMA_PATH = Path(__file__).with_name("schemas") / "sensor_reading.avsc"
SCHEMA_ID = 1  # the id carried in the Confluent wire-format header of every v1 message


class MachineType(StrEnum):
    MOTOR = "MOTOR"
    PUMP = "PUMP"
    TANK = "TANK"
    PCB = "PCB"
    SENSOR = "SENSOR"


class Metric(StrEnum):
    TEMPERATURE = "temperature"
    VIBRATION = "vibration"
    PRESSURE = "pressure"
    ENERGY = "energy"
    RPM = "rpm"
    VOLTAGE = "voltage"
    CURRENT = "current"
    LEVEL = "level"
    FLOW = "flow"
    HUMIDITY = "humidity"


class Quality(StrEnum):
    """OPC UA style quality of a reading, as the device reports it."""

    GOOD = "GOOD"
    UNCERTAIN = "UNCERTAIN"
    BAD = "BAD"


# The one canonical unit per metric: a reading in any other unit is rejected, never converted.
UNITS: dict[Metric, str] = {
    Metric.TEMPERATURE: "°C",
    Metric.VIBRATION: "mm/s",
    Metric.PRESSURE: "bar",
    Metric.ENERGY: "kW",
    Metric.RPM: "rpm",
    Metric.VOLTAGE: "V",
    Metric.CURRENT: "A",
    Metric.LEVEL: "%",
    Metric.FLOW: "L/min",
    Metric.HUMIDITY: "%RH",
}

# Physically possible (min, max) per metric, inclusive. Generous on purpose: a reading outside is
# a broken sensor or a corrupt message, not an anomaly (anomalies are the detectors' job).
RANGES: dict[Metric, tuple[float, float]] = {
    Metric.TEMPERATURE: (-50.0, 400.0),
    Metric.VIBRATION: (0.0, 100.0),
    Metric.PRESSURE: (0.0, 1000.0),
    Metric.ENERGY: (0.0, 100_000.0),
    Metric.RPM: (0.0, 20_000.0),
    Metric.VOLTAGE: (0.0, 50_000.0),
    Metric.CURRENT: (0.0, 10_000.0),
    Metric.LEVEL: (0.0, 100.0),
    Metric.FLOW: (0.0, 100_000.0),
    Metric.HUMIDITY: (0.0, 100.0),
}

# Device-reported status codes.
STATUS_CODES: dict[int, str] = {0: "OK", 1: "WARNING", 2: "FAULT", 3: "MAINTENANCE"}

MACHINE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MACHINE_ID_RE = re.compile(MACHINE_ID_PATTERN)

# Size limits. A v1 reading is ~60 bytes in Avro and ~250 in JSON; anything near these limits is
# not a reading.
MAX_PAYLOAD_BYTES = 4096
MAX_MACHINE_ID_CHARS = 64
MAX_LINE_ID_CHARS = 64
MAX_EVENT_ID_CHARS = MAX_MACHINE_ID_CHARS + 1 + 20  # "{machine_id}:{seq}", seq up to 2**63-1
MAX_UNIT_CHARS = 16

# Field order of the Avro record (and of the first 11 landed columns).
FIELDS: tuple[str, ...] = (
    "event_id",
    "machine_id",
    "machine_type",
    "line_id",
    "metric",
    "unit",
    "value",
    "ts",
    "seq",
    "status_code",
    "quality",
)


def load_schema() -> dict[str, Any]:
    """The Avro schema as a JSON object, read from the file kept in the repo."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


# event_id = "{machine_id}:{seq}": a resent reading keeps its id, so duplicates are detectable.
# The functions below are the only places that spell it: one per kind of input.
EVENT_ID_SEPARATOR = ":"


def event_id_for(machine_id: str, seq: int) -> str:
    """The event_id of one reading."""
    return f"{machine_id}{EVENT_ID_SEPARATOR}{seq}"


def event_ids_for(machine_ids: Iterable[str], seqs: Iterable[int]) -> list[str]:
    """The event_ids of readings given as two equally long sequences."""
    return [event_id_for(m, s) for m, s in zip(machine_ids, seqs, strict=True)]


def event_id_expr(machine_id: pl.Expr | str = "machine_id", seq: pl.Expr | str = "seq") -> pl.Expr:
    """The event_id as a Polars expression (named event_id) over a machine_id and a seq column."""
    import polars as pl

    m = pl.col(machine_id) if isinstance(machine_id, str) else machine_id
    s = pl.col(seq) if isinstance(seq, str) else seq
    return pl.concat_str([m, pl.lit(EVENT_ID_SEPARATOR), s.cast(pl.String)]).alias("event_id")


def event_id_array(machine_id: pa.Array | pa.ChunkedArray, seq: pa.Array | pa.ChunkedArray) -> Any:
    """The event_id as an Arrow array over machine_id (string) and seq (integer) arrays."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(
        machine_id, pc.cast(seq, machine_id.type), pa.scalar(EVENT_ID_SEPARATOR, machine_id.type)
    )


@dataclass(slots=True, frozen=True)
class SensorReading:
    """One reading of one metric of one machine (typed form of a record dict)."""

    event_id: str
    machine_id: str
    machine_type: MachineType
    line_id: str
    metric: Metric
    unit: str
    value: float
    ts: int  # event time, epoch milliseconds UTC
    seq: int
    status_code: int
    quality: Quality

    @classmethod
    def create(
        cls,
        machine_id: str,
        machine_type: MachineType | str,
        line_id: str,
        metric: Metric | str,
        value: float,
        ts: int,
        seq: int,
        status_code: int = 0,
        quality: Quality | str = Quality.GOOD,
    ) -> SensorReading:
        """A reading with its derived fields (event_id, canonical unit) filled in."""
        m = Metric(metric)
        return cls(
            event_id=event_id_for(machine_id, seq),
            machine_id=machine_id,
            machine_type=MachineType(machine_type),
            line_id=line_id,
            metric=m,
            unit=UNITS[m],
            value=float(value),
            ts=int(ts),
            seq=int(seq),
            status_code=int(status_code),
            quality=Quality(quality),
        )

    def to_record(self) -> dict[str, Any]:
        """Record dict: ts as int epoch ms, enums as their plain string names."""
        return {
            "event_id": self.event_id,
            "machine_id": self.machine_id,
            "machine_type": str(self.machine_type),
            "line_id": self.line_id,
            "metric": str(self.metric),
            "unit": self.unit,
            "value": self.value,
            "ts": self.ts,
            "seq": self.seq,
            "status_code": self.status_code,
            "quality": str(self.quality),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SensorReading:
        """Inverse of `to_record`; raises KeyError/ValueError on a record that does not fit."""
        return cls(
            event_id=str(record["event_id"]),
            machine_id=str(record["machine_id"]),
            machine_type=MachineType(record["machine_type"]),
            line_id=str(record["line_id"]),
            metric=Metric(record["metric"]),
            unit=str(record["unit"]),
            value=float(record["value"]),
            ts=int(record["ts"]),
            seq=int(record["seq"]),
            status_code=int(record["status_code"]),
            quality=Quality(record["quality"]),
        )
