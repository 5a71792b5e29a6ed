"""Event contract v1: every rule of `decode_batch`, each with its own reason code."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from ot_pipeline_tests.support.samples import (
    MAX_AGE_MS,
    MAX_FUTURE_MS,
    NOW_MS,
    random_readings,
    reading,
)
from streaming.events import (
    HEADER,
    MAX_PAYLOAD_BYTES,
    RANGES,
    VALID_SCHEMA,
    Metric,
    Reason,
    decode_batch,
    encode_avro,
    encode_avro_many,
    encode_json,
    load_schema,
)
from streaming.events import validation as validation_module
from streaming.lake import LANDED_SCHEMA


def _batch(payloads: list[bytes | None]) -> Any:
    return decode_batch(payloads, NOW_MS, max_future_ms=MAX_FUTURE_MS, max_age_ms=MAX_AGE_MS)


@pytest.fixture(autouse=True)
def no_safety_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch path must handle every case itself: its per-payload fallback would hide bugs."""

    def fail(*args: object) -> None:
        raise AssertionError("decode_batch fell back to one-by-one decoding")

    monkeypatch.setattr(validation_module, "_decode_one_by_one", fail)


def _json(**changes: Any) -> bytes:
    record = {**reading(), **changes}
    for key in [k for k, v in changes.items() if v is _DROP]:
        del record[key]
    return json.dumps(record).encode()


_DROP = object()


def _avro_with_extra_metric_symbol() -> bytes:
    """A well-formed record whose metric enum index (10) is beyond the v1 symbols."""
    schema = load_schema()
    for field in schema["fields"]:
        if field["name"] == "metric":
            field["type"]["symbols"] = [*field["type"]["symbols"], "torque"]
        if field["name"] == "ts":
            field["type"] = "long"
    buf = io.BytesIO()
    buf.write(HEADER)
    fastavro.schemaless_writer(
        buf, fastavro.parse_schema(schema), {**reading(), "metric": "torque", "unit": "Nm"}
    )
    return buf.getvalue()


def _avro_with_bad_utf8() -> bytes:
    payload = encode_avro(reading(line_id="ZZ"))
    assert payload.count(b"ZZ") == 1
    return payload.replace(b"ZZ", b"\xff\xfe")


CASES: dict[Reason, list[Callable[[], bytes | None]]] = {
    Reason.EMPTY: [lambda: None, lambda: b""],
    Reason.TOO_LARGE: [
        lambda: HEADER + b"\x00" * MAX_PAYLOAD_BYTES,
        lambda: _json(line_id="x" * MAX_PAYLOAD_BYTES),
    ],
    Reason.BAD_MAGIC: [lambda: b"\x01" + encode_avro(reading())[1:], lambda: b"[1, 2]"],
    Reason.UNKNOWN_SCHEMA_ID: [lambda: b"\x00\x00\x00\x00\x02" + encode_avro(reading())[5:]],
    Reason.UNDECODABLE: [
        lambda: encode_avro(reading())[:-1],
        lambda: encode_avro(reading()) + b"\x00",
        lambda: b"\x00\x00\x00",
        lambda: HEADER,
        _avro_with_bad_utf8,
        lambda: HEADER + b"\xff" * 12,
    ],
    Reason.INVALID_JSON: [
        lambda: b"{not json",
        lambda: b'{"a": 1',
        lambda: b"{\xff}",
        lambda: _json(line_id="LINE").replace(b"LINE", b"\\ud800"),
    ],
    Reason.MISSING_FIELD: [lambda: _json(unit=_DROP), lambda: b"{}"],
    Reason.BAD_TYPE: [
        lambda: _json(value="71.2"),
        lambda: _json(ts=1.5e12),
        lambda: _json(seq=True),
        lambda: _json(status_code=2**31),
        lambda: _json(machine_id=None),
        lambda: _json(metric=3),
    ],
    Reason.UNKNOWN_ENUM: [
        lambda: _json(metric="torque"),
        lambda: _json(quality="good"),
        lambda: _json(machine_type="ROBOT"),
        _avro_with_extra_metric_symbol,
    ],
    Reason.BAD_MACHINE_ID: [
        lambda: encode_avro(reading(machine_id="Press-07")),
        lambda: encode_avro(reading(machine_id="-press")),
        lambda: encode_avro(reading(machine_id="p" * 65)),
        lambda: encode_avro(reading(machine_id="press\n")),
        lambda: encode_avro(reading(machine_id="")),
    ],
    Reason.BAD_LINE_ID: [
        lambda: encode_avro(reading(line_id="")),
        lambda: encode_avro(reading(line_id="l" * 65)),
    ],
    Reason.NEGATIVE_SEQ: [lambda: encode_avro(reading(seq=-1))],
    Reason.BAD_EVENT_ID: [
        lambda: encode_avro(reading(event_id="press-07:4712")),
        lambda: encode_avro(reading(event_id="press-07-4711")),
        lambda: _json(event_id="other:4711"),
    ],
    Reason.UNIT_MISMATCH: [
        lambda: encode_avro(reading(unit="K")),
        lambda: encode_avro(reading(metric="pressure", unit="psi")),
    ],
    Reason.NON_FINITE: [
        lambda: encode_avro(reading(value=float("nan"))),
        lambda: encode_avro(reading(value=float("inf"))),
        lambda: _json(value=float("-inf")),
    ],
    Reason.OUT_OF_RANGE: [
        lambda: encode_avro(reading(value=400.001)),
        lambda: encode_avro(reading(metric="level", value=-0.5)),
        lambda: encode_avro(reading(metric="rpm", value=20_000.5)),
    ],
    Reason.BAD_STATUS_CODE: [
        lambda: encode_avro(reading(status_code=4)),
        lambda: encode_avro(reading(status_code=-1)),
    ],
    Reason.FUTURE_TIMESTAMP: [lambda: encode_avro(reading(ts=NOW_MS + MAX_FUTURE_MS + 1))],
    Reason.TOO_OLD: [lambda: encode_avro(reading(ts=NOW_MS - MAX_AGE_MS - 1))],
}


def test_every_reason_code_has_a_case() -> None:
    assert set(CASES) == set(Reason)


@pytest.mark.parametrize(
    ("reason", "make"),
    [(reason, make) for reason, makers in CASES.items() for make in makers],
    ids=[f"{reason}-{i}" for reason, makers in CASES.items() for i in range(len(makers))],
)
def test_each_rule_rejects_with_exactly_its_reason_code(
    reason: Reason, make: Callable[[], bytes | None]
) -> None:
    batch = _batch([make()])
    assert batch.valid.num_rows == 0
    assert [(r.index, r.reason) for r in batch.rejected] == [(0, reason)]
    assert isinstance(batch.rejected[0].detail, str) and batch.rejected[0].detail


def test_limits_are_inclusive() -> None:
    lo, hi = RANGES[Metric.TEMPERATURE]
    payloads: list[bytes | None] = [
        *encode_avro_many(
            [
                reading(value=lo),
                reading(value=hi),
                reading(ts=NOW_MS + MAX_FUTURE_MS),
                reading(ts=NOW_MS - MAX_AGE_MS),
                reading(status_code=3),
                reading(seq=0),
                reading(machine_id="p" * 64, line_id="l" * 64),
            ]
        )
    ]
    batch = _batch(payloads)
    assert batch.rejected == []
    assert batch.valid.num_rows == 7


def test_mixed_batch_keeps_every_valid_row_at_its_input_position() -> None:
    good = random_readings(400, seed=21)
    makers = [make for makers in CASES.values() for make in makers]
    payloads: list[bytes | None] = []
    expected_valid: list[int] = []
    expected_bad: dict[int, Reason] = {}
    bad_reasons = [r for r, makers in CASES.items() for _ in makers]
    good_payloads = encode_avro_many(good)
    g = b = 0
    for i in range(len(good) + len(makers)):
        if i % 5 == 2 and b < len(makers):
            payloads.append(makers[b]())
            expected_bad[i] = bad_reasons[b]
            b += 1
        elif g < len(good):
            payloads.append(good_payloads[g] if g % 3 else encode_json(good[g]))
            expected_valid.append(g)
            g += 1
    batch = _batch(payloads)
    assert {r.index: r.reason for r in batch.rejected} == expected_bad
    assert [r.index for r in batch.rejected] == sorted(expected_bad)
    assert batch.valid_index.dtype == np.int64
    assert batch.valid_index.tolist() == [i for i in range(len(payloads)) if i not in expected_bad]
    rows = batch.valid.to_pylist()
    for row, g in zip(rows, expected_valid, strict=True):
        assert row["event_id"] == good[g]["event_id"] and row["value"] == good[g]["value"]
    assert batch.total == len(payloads)


def test_valid_table_has_exactly_the_first_eleven_landed_columns() -> None:
    expected = pa.schema(list(LANDED_SCHEMA)[:11])
    for payloads in ([], [None], encode_avro_many(random_readings(10, seed=1))):
        batch = _batch(list(payloads))
        assert batch.valid.schema == expected == VALID_SCHEMA
    assert _batch([]).valid_index.dtype == np.int64


def test_the_first_broken_rule_is_the_reason() -> None:
    record = reading(machine_id="BAD", value=float("nan"), ts=NOW_MS + 10 * MAX_FUTURE_MS)
    batch = _batch([encode_avro(record)])
    assert [r.reason for r in batch.rejected] == [Reason.BAD_MACHINE_ID]


def test_json_ignores_unknown_extra_fields() -> None:
    batch = _batch([_json(firmware="1.2.3")])
    assert batch.rejected == [] and batch.valid.num_rows == 1


def test_a_bug_in_the_batch_path_rejects_only_the_payloads_that_trip_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.undo()  # this test exercises the safety net itself
    real = validation_module._decode_batch

    def flaky(payloads: Any, *args: Any) -> Any:
        if any(p == b"boom" for p in payloads):
            raise RuntimeError("simulated bug")
        return real(payloads, *args)

    monkeypatch.setattr(validation_module, "_decode_batch", flaky)
    good = encode_avro_many(random_readings(3, seed=2))
    batch = _batch([good[0], b"boom", good[1], None, good[2]])
    assert batch.valid_index.tolist() == [0, 2, 4]
    assert [(r.index, r.reason) for r in batch.rejected] == [
        (1, Reason.UNDECODABLE),
        (3, Reason.EMPTY),
    ]


def test_time_limits_may_be_given_as_floats() -> None:
    payloads: list[bytes | None] = [encode_avro(reading(ts=NOW_MS + 2 * MAX_FUTURE_MS))]
    batch = decode_batch(payloads, NOW_MS + 0.5, max_future_ms=300_000.0, max_age_ms=1e12)  # type: ignore[arg-type]
    assert [r.reason for r in batch.rejected] == [Reason.FUTURE_TIMESTAMP]
