"""Why a message was rejected: one code per rule, carried in the DLQ header `ot.reason`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    EMPTY = "EMPTY"  # no value (tombstone) or zero bytes
    TOO_LARGE = "TOO_LARGE"  # more than MAX_PAYLOAD_BYTES
    BAD_MAGIC = "BAD_MAGIC"  # neither JSON ('{') nor Confluent wire format (magic byte 0)
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"  # wire-format header names a schema we do not know
    UNDECODABLE = "UNDECODABLE"  # Avro body truncated, garbage, bad UTF-8 or trailing bytes
    INVALID_JSON = "INVALID_JSON"  # not parseable JSON, or not a JSON object
    MISSING_FIELD = "MISSING_FIELD"  # a JSON message lacks a required field
    BAD_TYPE = "BAD_TYPE"  # a JSON field has the wrong type (or an int out of its Avro range)
    UNKNOWN_ENUM = "UNKNOWN_ENUM"  # machine_type, metric or quality not a known symbol
    BAD_MACHINE_ID = "BAD_MACHINE_ID"  # machine_id does not match ^[a-z0-9][a-z0-9_-]{0,63}$
    BAD_LINE_ID = "BAD_LINE_ID"  # line_id empty or longer than MAX_LINE_ID_CHARS
    NEGATIVE_SEQ = "NEGATIVE_SEQ"  # seq < 0
    BAD_EVENT_ID = "BAD_EVENT_ID"  # event_id is not "{machine_id}:{seq}"
    UNIT_MISMATCH = "UNIT_MISMATCH"  # unit is not the canonical unit of the metric
    NON_FINITE = "NON_FINITE"  # value is NaN or infinite
    OUT_OF_RANGE = "OUT_OF_RANGE"  # value outside the physical range of the metric
    BAD_STATUS_CODE = "BAD_STATUS_CODE"  # status_code not in 0..3
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"  # ts more than max_future_ms ahead of ingest
    TOO_OLD = "TOO_OLD"  # ts older than max_age_ms before ingest


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected payload: its position in the batch, the rule it broke and a short detail."""

    index: int
    reason: Reason
    detail: str
