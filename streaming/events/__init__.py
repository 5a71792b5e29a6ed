"""Event contract v1 of topic `sensor-readings`: model, codecs, batch validation, dead letters."""

from streaming.events.arrow import EVENT_SCHEMA
from streaming.events.codec import (
    DecodeError,
    decode_avro,
    decode_json,
    encode_avro,
    encode_avro_many,
    encode_avro_table,
    encode_json,
)
from streaming.events.columnar import HEADER
from streaming.events.deadletter import (
    DeadLetter,
    dlq_headers,
    fit_dead_letter,
    parse_dlq_headers,
)
from streaming.events.model import (
    FIELDS,
    MACHINE_ID_PATTERN,
    MAX_PAYLOAD_BYTES,
    RANGES,
    SCHEMA_ID,
    STATUS_CODES,
    UNITS,
    MachineType,
    Metric,
    Quality,
    SensorReading,
    event_id_for,
    load_schema,
)
from streaming.events.reasons import Reason, Rejection
from streaming.events.validation import VALID_SCHEMA, DecodedBatch, decode_batch

__all__ = [
    "EVENT_SCHEMA",
    "FIELDS",
    "HEADER",
    "MACHINE_ID_PATTERN",
    "MAX_PAYLOAD_BYTES",
    "RANGES",
    "SCHEMA_ID",
    "STATUS_CODES",
    "UNITS",
    "VALID_SCHEMA",
    "DeadLetter",
    "DecodeError",
    "DecodedBatch",
    "MachineType",
    "Metric",
    "Quality",
    "Reason",
    "Rejection",
    "SensorReading",
    "decode_avro",
    "decode_batch",
    "decode_json",
    "dlq_headers",
    "encode_avro",
    "encode_avro_many",
    "encode_avro_table",
    "encode_json",
    "event_id_for",
    "fit_dead_letter",
    "load_schema",
    "parse_dlq_headers",
]
