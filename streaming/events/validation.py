"""Decode and validate a batch of `sensor-readings` payloads in one call.

`decode_batch` is the one entry point of the consumers: it never raises, whatever the bytes. Each
payload ends either as a row of `DecodedBatch.valid` (with its position in `valid_index`) or as a
`Rejection` naming the rule it broke. Decoding isolates every payload (a bad one cannot shift its
neighbours); the contract rules then run vectorised over whole columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streaming.events import codec
from streaming.events.arrow import EVENT_SCHEMA
from streaming.events.codec import DecodeError
from streaming.events.columnar import RAW_SCHEMA, decode_payloads
from streaming.events.model import (
    FIELDS,
    MACHINE_ID_PATTERN,
    MAX_LINE_ID_CHARS,
    RANGES,
    STATUS_CODES,
    UNITS,
    MachineType,
    Metric,
    Quality,
    event_id_array,
)
from streaming.events.reasons import Reason, Rejection

# Valid rows have the event contract's Arrow schema (the lake's landed schema extends it).
VALID_SCHEMA = EVENT_SCHEMA

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_METRICS = [str(m) for m in Metric]
_METRIC_UNITS = pa.array([UNITS[m] for m in Metric], pa.string())
_METRIC_MIN = np.array([RANGES[m][0] for m in Metric], dtype=np.float64)
_METRIC_MAX = np.array([RANGES[m][1] for m in Metric], dtype=np.float64)
_ENUMS: dict[str, frozenset[str]] = {
    "machine_type": frozenset(str(v) for v in MachineType),
    "metric": frozenset(_METRICS),
    "quality": frozenset(str(v) for v in Quality),
}
_STRING_FIELDS = ("event_id", "machine_id", "line_id", "unit")
_INT_FIELDS: dict[str, tuple[int, int]] = {
    "ts": (INT64_MIN, INT64_MAX),
    "seq": (INT64_MIN, INT64_MAX),
    "status_code": (INT32_MIN, INT32_MAX),
}


@dataclass(frozen=True)
class DecodedBatch:
    """Valid rows (landed event columns) + their positions in the input, and the rejections."""

    valid: pa.Table
    valid_index: np.ndarray
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.valid.num_rows + len(self.rejected)

    def reason_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[r.reason] = counts.get(r.reason, 0) + 1
        return counts


@dataclass
class _Columns:
    """Decoded but not yet validated rows, column-wise, with their positions in the batch."""

    index: list[int] = field(default_factory=list)
    values: dict[str, list[Any]] = field(default_factory=lambda: {f: [] for f in FIELDS})

    def append(self, i: int, record: Mapping[str, Any]) -> None:
        self.index.append(i)
        for f in FIELDS:
            self.values[f].append(record[f])

    def to_table(self) -> pa.Table:
        return pa.Table.from_pydict(self.values, schema=RAW_SCHEMA)


def decode_batch(
    payloads: Sequence[bytes | None],
    ingest_ms: int,
    *,
    max_future_ms: int,
    max_age_ms: int,
) -> DecodedBatch:
    """Decode (Avro wire format, or JSON when the first byte is '{') and validate every payload."""
    ingest_ms, max_future_ms, max_age_ms = int(ingest_ms), int(max_future_ms), int(max_age_ms)
    try:
        return _decode_batch(payloads, ingest_ms, max_future_ms, max_age_ms)
    except Exception:
        # Safety net for a bug in the batch path: isolate each payload so that a single one that
        # trips it is rejected alone and the batch still lands.
        return _decode_one_by_one(payloads, ingest_ms, max_future_ms, max_age_ms)


def _decode_one_by_one(
    payloads: Sequence[bytes | None], ingest_ms: int, max_future_ms: int, max_age_ms: int
) -> DecodedBatch:
    tables: list[pa.Table] = []
    index: list[int] = []
    rejected: list[Rejection] = []
    for i, payload in enumerate(payloads):
        try:
            one = _decode_batch([payload], ingest_ms, max_future_ms, max_age_ms)
        except Exception as exc:
            rejected.append(Rejection(i, Reason.UNDECODABLE, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        if one.valid.num_rows:
            tables.append(one.valid)
            index.append(i)
        rejected.extend(Rejection(i, r.reason, r.detail) for r in one.rejected)
    valid = pa.concat_tables(tables) if tables else VALID_SCHEMA.empty_table()
    return DecodedBatch(valid, np.asarray(index, dtype=np.int64), rejected)


def _decode_batch(
    payloads: Sequence[bytes | None], ingest_ms: int, max_future_ms: int, max_age_ms: int
) -> DecodedBatch:
    raw = decode_payloads(payloads)
    rejected = [Rejection(i, r, d) for i, r, d in raw.failures]
    table, index = raw.table, raw.index
    if raw.json_index.size:
        cols = _Columns()
        for i in raw.json_index.tolist():
            try:
                cols.append(i, _check_json_record(codec.decode_json(payloads[i])))  # type: ignore[arg-type]
            except DecodeError as exc:
                rejected.append(Rejection(i, Reason(exc.reason), exc.detail))
        if cols.index:
            table = pa.concat_tables([table, cols.to_table()])
            index = np.concatenate([index, np.asarray(cols.index, dtype=np.int64)])
    return _validate(table, index, rejected, ingest_ms, max_future_ms, max_age_ms)


def _check_json_record(obj: dict[str, Any]) -> dict[str, Any]:
    """Field presence and JSON types of one JSON message (ranges are checked column-wise later)."""
    for f in FIELDS:
        if f not in obj:
            raise DecodeError(Reason.MISSING_FIELD, f"no field {f!r}")
    for f in _STRING_FIELDS:
        if not isinstance(obj[f], str):
            raise DecodeError(Reason.BAD_TYPE, f"{f} is a {type(obj[f]).__name__}, not a string")
        if not obj[f].isascii():
            try:
                obj[f].encode()
            except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
                raise DecodeError(Reason.INVALID_JSON, f"{f} is not valid Unicode") from None
    for f, symbols in _ENUMS.items():
        v = obj[f]
        if not isinstance(v, str):
            raise DecodeError(Reason.BAD_TYPE, f"{f} is a {type(v).__name__}, not a string")
        if v not in symbols:
            raise DecodeError(Reason.UNKNOWN_ENUM, f"{f}={v[:40]!r}")
    value = obj["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(Reason.BAD_TYPE, f"value is a {type(value).__name__}, not a number")
    if isinstance(value, int):
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
    for f, (lo, hi) in _INT_FIELDS.items():
        v = obj[f]
        if isinstance(v, bool) or not isinstance(v, int):
            raise DecodeError(Reason.BAD_TYPE, f"{f} is a {type(v).__name__}, not an integer")
        if not lo <= v <= hi:
            raise DecodeError(Reason.BAD_TYPE, f"{f}={v} outside its integer range")
    return {**{f: obj[f] for f in FIELDS}, "value": value}


def _validate(
    table: pa.Table,
    index: np.ndarray,
    rejected: list[Rejection],
    ingest_ms: int,
    max_future_ms: int,
    max_age_ms: int,
) -> DecodedBatch:
    """The contract rules, vectorised over columns; the first rule a row breaks is its reason."""
    n = table.num_rows
    if n:
        metric_idx = pc.index_in(table["metric"], value_set=pa.array(_METRICS)).to_numpy(
            zero_copy_only=False
        )
        value = table["value"].to_numpy()
        ts = table["ts"].to_numpy()
        seq = table["seq"].to_numpy()
        status = table["status_code"].to_numpy()
        machine_id = table["machine_id"]
        line_len = pc.utf8_length(table["line_id"]).to_numpy()
        expected_event_id = event_id_array(machine_id, table["seq"])
        with np.errstate(invalid="ignore"):
            checks: list[tuple[Reason, np.ndarray]] = [
                (
                    Reason.BAD_MACHINE_ID,
                    ~_np_bool(pc.match_substring_regex(machine_id, MACHINE_ID_PATTERN)),
                ),
                (Reason.BAD_LINE_ID, (line_len < 1) | (line_len > MAX_LINE_ID_CHARS)),
                (Reason.NEGATIVE_SEQ, seq < 0),
                (Reason.BAD_EVENT_ID, ~_np_bool(pc.equal(table["event_id"], expected_event_id))),
                (
                    Reason.UNIT_MISMATCH,
                    ~_np_bool(pc.equal(table["unit"], pc.take(_METRIC_UNITS, metric_idx))),
                ),
                (Reason.NON_FINITE, ~np.isfinite(value)),
                (
                    Reason.OUT_OF_RANGE,
                    (value < _METRIC_MIN[metric_idx]) | (value > _METRIC_MAX[metric_idx]),
                ),
                (Reason.BAD_STATUS_CODE, (status < 0) | (status > max(STATUS_CODES))),
                (Reason.FUTURE_TIMESTAMP, ts > ingest_ms + max_future_ms),
                (Reason.TOO_OLD, ts < ingest_ms - max_age_ms),
            ]
        failed = np.stack([mask for _, mask in checks])
        any_failed = failed.any(axis=0)
        if any_failed.any():
            first = failed.argmax(axis=0)
            for row in np.flatnonzero(any_failed):
                reason = checks[first[row]][0]
                if reason in (Reason.FUTURE_TIMESTAMP, Reason.TOO_OLD):
                    delta = int(ts[row]) - ingest_ms
                    limit = max_future_ms if delta > 0 else -max_age_ms
                    detail = f"ts={int(ts[row])} is {delta:+d} ms from ingest (limit {limit:+d} ms)"
                else:
                    detail = _DETAILS[reason](table, int(row))
                rejected.append(Rejection(int(index[row]), reason, detail))
            keep = np.flatnonzero(~any_failed)
            table = table.take(keep)
            index = index[keep]
    valid = pa.Table.from_arrays(
        [
            table[f].cast(VALID_SCHEMA.field(f).type)
            if n
            else pa.array([], VALID_SCHEMA.field(f).type)
            for f in FIELDS
        ],
        schema=VALID_SCHEMA,
    )
    if index.size > 1 and np.any(np.diff(index) < 0):
        order = np.argsort(index, kind="stable")
        valid = valid.take(order)
        index = index[order]
    rejected.sort(key=lambda r: r.index)
    return DecodedBatch(valid, index.astype(np.int64, copy=False), rejected)


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def _row(table: pa.Table, row: int, name: str) -> Any:
    return table[name][row].as_py()


def _range_detail(table: pa.Table, row: int) -> str:
    metric = Metric(_row(table, row, "metric"))
    lo, hi = RANGES[metric]
    return f"{metric}={_row(table, row, 'value')!r} outside [{lo:g}, {hi:g}] {UNITS[metric]}"


_DETAILS: dict[Reason, Callable[[pa.Table, int], str]] = {
    Reason.BAD_MACHINE_ID: lambda t, r: f"machine_id={_row(t, r, 'machine_id')[:80]!r}",
    Reason.BAD_LINE_ID: lambda t, r: f"line_id={_row(t, r, 'line_id')[:80]!r}",
    Reason.NEGATIVE_SEQ: lambda t, r: f"seq={_row(t, r, 'seq')}",
    Reason.BAD_EVENT_ID: lambda t, r: (
        f"event_id={_row(t, r, 'event_id')[:100]!r}, expected "
        f"'{_row(t, r, 'machine_id')}:{_row(t, r, 'seq')}'"
    ),
    Reason.UNIT_MISMATCH: lambda t, r: (
        f"unit={_row(t, r, 'unit')[:20]!r} for {_row(t, r, 'metric')}, "
        f"expected {UNITS[Metric(_row(t, r, 'metric'))]!r}"
    ),
    Reason.NON_FINITE: lambda t, r: f"value={_row(t, r, 'value')!r}",
    Reason.OUT_OF_RANGE: _range_detail,
    Reason.BAD_STATUS_CODE: lambda t, r: f"status_code={_row(t, r, 'status_code')}",
}
