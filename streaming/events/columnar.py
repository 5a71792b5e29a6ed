"""Columnar Avro codec specialised to the fixed v1 schema, written with numpy.

Why: fastavro costs a few µs per record and one Python call per record; the simulator and the
lander need hundreds of thousands of readings per second on one core. The v1 record is a fixed
sequence of 11 fields, so every record of a batch can be encoded or parsed in lock-step, one field
at a time, with array operations over the whole batch.

Exactness: each record is parsed only inside its own bytes `[start, end)`; a record that runs out
of bytes, carries trailing bytes or an impossible varint is flagged on its own and can never shift
or corrupt its neighbours. Both directions are verified byte-identical against fastavro in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streaming.events.model import (
    FIELDS,
    MAX_PAYLOAD_BYTES,
    SCHEMA_ID,
    MachineType,
    Metric,
    Quality,
)
from streaming.events.reasons import Reason

HEADER = bytes([0]) + SCHEMA_ID.to_bytes(4, "big")
HEADER_LEN = len(HEADER)

MACHINE_TYPES = pa.array([str(v) for v in MachineType], pa.string())
METRICS = pa.array([str(v) for v in Metric], pa.string())
QUALITIES = pa.array([str(v) for v in Quality], pa.string())
ENUM_SYMBOLS: dict[str, pa.Array] = {
    "machine_type": MACHINE_TYPES,
    "metric": METRICS,
    "quality": QUALITIES,
}
STRING_FIELDS = ("event_id", "machine_id", "line_id", "unit")
# Decoded rows before the contract rules (ints stay int64 until their ranges are checked).
RAW_SCHEMA = pa.schema(
    [
        (f, pa.large_string())
        if f in STRING_FIELDS
        else (f, pa.string())
        if f in ("machine_type", "metric", "quality")
        else (f, pa.float64())
        if f == "value"
        else (f, pa.int64())
        for f in FIELDS
    ]
)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

_K8 = np.arange(8, dtype=np.int64)
_PAD = bytes(16)  # lets a varint read up to 10 bytes past any record end without bounds checks


# ---------------------------------------------------------------------------------- encoding


def _zigzag(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.int64, copy=False)
    return ((v << 1) ^ (v >> 63)).view(np.uint64)


def _varint_len(z: np.ndarray) -> np.ndarray:
    n = np.ones(z.shape, dtype=np.int64)
    for k in range(1, 10):
        n += z >= np.uint64(1 << (7 * k))
    return n


def _put_varint(out: np.ndarray, cur: np.ndarray, z: np.ndarray, n: np.ndarray) -> None:
    """Write zigzag value `z` as a varint of `n` bytes at `cur` (vectorised)."""
    maxlen = int(n.max()) if n.size else 0
    for k in range(maxlen):
        sel = n > k
        if k == 0 or sel.all():
            zk, ck, nk = z, cur, n
        else:
            zk, ck, nk = z[sel], cur[sel], n[sel]
        byte = (zk >> np.uint64(7 * k)) & np.uint64(0x7F)
        byte |= np.where(nk > k + 1, np.uint64(0x80), np.uint64(0))
        out[ck + k] = byte.astype(np.uint8)


def _string_parts(values: pa.Array | pa.ChunkedArray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64[n+1], utf-8 data uint8) of a string column, without copying the data."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.large_string())
    if values.null_count:
        raise ValueError(f"{name}: null where a string is required")
    bufs = values.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[
        values.offset : values.offset + len(values) + 1
    ]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _enum_index(values: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    idx = pc.index_in(values, value_set=ENUM_SYMBOLS[name])
    if idx.null_count:
        bad = values.filter(pc.is_null(idx))[0].as_py()
        raise ValueError(f"{name}={bad!r} is not a known symbol")
    return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int64)


def _int_column(values: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    if values.null_count:
        raise ValueError(f"{name}: null where an integer is required")
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.timestamp("ms", tz=values.type.tz)).cast(pa.int64())
    if not pa.types.is_integer(values.type):
        raise ValueError(f"{name}: {values.type} is not an integer type")
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)


def encode_table(table: pa.Table) -> list[bytes]:
    """Columns named like the v1 fields -> one wire-format message per row.

    Enums are strings (or dictionary-encoded strings), ts is int64 epoch ms or a timestamp column.
    Raises ValueError on what the schema cannot carry (unknown enum symbol, null, int overflow).
    """
    n = table.num_rows
    if n == 0:
        return []
    strings = {f: _string_parts(table[f], f) for f in STRING_FIELDS}
    enums = {f: _enum_index(table[f].cast(pa.string()), f) for f in ENUM_SYMBOLS}
    value = table["value"]
    if value.null_count:
        raise ValueError("value: null where a double is required")
    values = np.ascontiguousarray(
        value.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype="<f8"
    )
    ts = _int_column(table["ts"], "ts")
    seq = _int_column(table["seq"], "seq")
    status = _int_column(table["status_code"], "status_code")
    if status.size and (status.min() < INT32_MIN or status.max() > INT32_MAX):
        raise ValueError("status_code: outside the 32-bit range of an Avro int")

    # One (zigzag value, varint length, payload length) triple per field, in schema order.
    plan: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = []
    for f in FIELDS:
        if f in strings:
            offsets, _ = strings[f]
            lens = np.diff(offsets)
            z = _zigzag(lens)
            plan.append((f, z, _varint_len(z), lens))
        elif f in enums:
            z = _zigzag(enums[f])
            plan.append((f, z, np.ones(n, np.int64), None))
        elif f == "value":
            plan.append((f, np.zeros(0, np.uint64), np.full(n, 8, np.int64), None))
        else:
            z = _zigzag({"ts": ts, "seq": seq, "status_code": status}[f])
            plan.append((f, z, _varint_len(z), None))

    sizes = np.full(n, HEADER_LEN, dtype=np.int64)
    for _, _, vlen, plen in plan:
        sizes += vlen
        if plen is not None:
            sizes += plen
    ends = np.cumsum(sizes)
    starts = ends - sizes
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    for k, byte in enumerate(HEADER):
        out[starts + k] = byte
    cur = starts + HEADER_LEN
    for f, z, vlen, plen in plan:
        if f == "value":
            out[cur[:, None] + _K8] = values.view(np.uint8).reshape(n, 8)
            cur = cur + 8
            continue
        _put_varint(out, cur, z, vlen)
        cur = cur + vlen
        if plen is not None:
            offsets, data = strings[f]
            total = int(offsets[-1] - offsets[0])
            if total:
                dest = np.repeat(cur - offsets[:-1], plen) + np.arange(
                    offsets[0], offsets[-1], dtype=np.int64
                )
                out[dest] = data[offsets[0] : offsets[-1]]
            cur = cur + plen
    blob = out.tobytes()
    return [blob[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


# ---------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class RawColumns:
    """Decoded Avro rows before the contract rules: strings, enums as symbols, ints as int64."""

    index: np.ndarray  # position in the input of each row of `table`
    table: pa.Table
    failures: list[tuple[int, Reason, str]]  # (position, reason, detail) of undecodable payloads
    json_index: np.ndarray  # positions of payloads that start with '{' (left to the JSON path)


def _mask(size: int, rows: np.ndarray) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[rows] = True
    return mask


class _Cursor:
    """Parse state of m records in lock-step: position, end and 'broken' flag per record."""

    def __init__(self, buf: np.ndarray, pos: np.ndarray, end: np.ndarray) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end
        self.broken = np.zeros(pos.shape, dtype=bool)
        self.why = np.full(pos.shape, "", dtype=object)

    def _fail(self, mask: np.ndarray, why: str) -> None:
        new = mask & ~self.broken
        if new.any():
            self.why[new] = why
            self.broken |= new

    def varint(self, field: str) -> np.ndarray:
        """Zigzag-decoded varint per record.

        Byte k of every still-open varint at once: one-byte varints (lengths, enums, status) cost
        one pass, ts (6 bytes) six passes over the rows still open.
        """
        pos, buf = self.pos, self.buf
        b0 = buf[pos]
        z = (b0 & 0x7F).astype(np.uint64)
        nbytes = np.ones(pos.shape, dtype=np.int64)
        rows = np.flatnonzero(b0 >= 0x80)
        for k in range(1, 10):
            if not rows.size:
                break
            if rows.size == pos.size:  # all still open (ts): dense arrays, no scatter
                bk = buf[pos + k]
                z |= (bk & 0x7F).astype(np.uint64) << np.uint64(7 * k)
                nbytes += 1
                last = bk
            else:
                bk = buf[pos[rows] + k]
                z[rows] |= (bk & 0x7F).astype(np.uint64) << np.uint64(7 * k)
                nbytes[rows] += 1
                last = bk
            if k == 9:  # the 10th byte may only carry bit 63
                self._fail(_mask(pos.size, rows[last > 1]), f"varint overflow in {field}")
            rows = rows[last >= 0x80]
        if rows.size:
            self._fail(_mask(pos.size, rows), f"varint overflow in {field}")
        self._fail(pos + nbytes > self.end, f"truncated in {field}")
        self.pos = np.where(self.broken, self.pos, pos + nbytes)
        return ((z >> np.uint64(1)).view(np.int64)) ^ -((z & np.uint64(1)).view(np.int64))

    def string(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of a string's bytes per record (length 0 for broken records)."""
        length = self.varint(field)
        self._fail((length < 0) | (length > self.end - self.pos), f"truncated in {field}")
        length = np.where(self.broken, 0, length)
        start = self.pos
        self.pos = self.pos + length
        return start, length

    def double(self, field: str) -> np.ndarray:
        self._fail(self.pos + 8 > self.end, f"truncated in {field}")
        raw = self.buf[self.pos[:, None] + _K8]
        self.pos = np.where(self.broken, self.pos, self.pos + 8)
        return np.ascontiguousarray(raw).view("<f8").reshape(-1)


def _gather_strings(
    buf: np.ndarray, start: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64[n+1], data) of strings scattered through `buf`, gathered in one pass."""
    offsets = np.zeros(len(length) + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    total = int(offsets[-1])
    if total:
        src = np.repeat(start - offsets[:-1], length) + np.arange(total, dtype=np.int64)
        data = buf[src]
    else:
        data = np.zeros(0, np.uint8)
    return offsets, data


def _string_array(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    return pa.LargeStringArray.from_buffers(
        len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data)
    )


def _invalid_utf8_rows(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Rows whose bytes are not UTF-8 (error path only: one Python check per row)."""
    raw = data.tobytes()
    bad = []
    for i, (a, b) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)):
        try:
            raw[a:b].decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    return np.asarray(bad, dtype=np.int64)


def decode_payloads(payloads: Sequence[bytes | None]) -> RawColumns:
    """Split a batch into header/size failures, JSON payloads and Avro rows decoded column-wise."""
    n = len(payloads)
    items: Sequence[bytes] = (
        [b"" if p is None else p for p in payloads]
        if None in payloads
        else cast(Sequence[bytes], payloads)
    )
    lens = np.fromiter(map(len, items), dtype=np.int64, count=n)
    blob = b"".join(items) + _PAD
    buf = np.frombuffer(blob, dtype=np.uint8)
    ends = np.cumsum(lens)
    starts = ends - lens
    failures: list[tuple[int, Reason, str]] = []

    def fail(mask: np.ndarray, reason: Reason, detail: str | list[str]) -> None:
        rows = np.flatnonzero(mask).tolist()
        details = detail if isinstance(detail, list) else [detail] * len(rows)
        failures.extend(zip(rows, [reason] * len(rows), details, strict=True))

    empty = lens == 0
    too_large = lens > MAX_PAYLOAD_BYTES
    fail(empty, Reason.EMPTY, "no value")
    if too_large.any():
        fail(
            too_large,
            Reason.TOO_LARGE,
            [f"{x} bytes > {MAX_PAYLOAD_BYTES}" for x in lens[too_large]],
        )
    sized = ~empty & ~too_large
    head = buf[starts[:, None] + np.arange(HEADER_LEN)]
    is_json = sized & (head[:, 0] == 0x7B)
    bad_magic = sized & ~is_json & (head[:, 0] != 0)
    fail(bad_magic, Reason.BAD_MAGIC, [f"first byte 0x{b:02x}" for b in head[bad_magic, 0]])
    framed = sized & ~is_json & ~bad_magic
    short = framed & (lens < HEADER_LEN)
    fail(short, Reason.UNDECODABLE, "shorter than the 5-byte wire-format header")
    framed &= ~short
    schema_id = (head[:, 1:].astype(np.int64) << np.array([24, 16, 8, 0])).sum(axis=1)
    unknown = framed & (schema_id != SCHEMA_ID)
    fail(unknown, Reason.UNKNOWN_SCHEMA_ID, [f"schema id {s}" for s in schema_id[unknown]])
    avro = np.flatnonzero(framed & ~unknown)

    cur = _Cursor(buf, starts[avro] + HEADER_LEN, ends[avro])
    spans: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    enum_idx: dict[str, np.ndarray] = {}
    ints: dict[str, np.ndarray] = {}
    value = np.zeros(0)
    for f in FIELDS:
        if f in STRING_FIELDS:
            spans[f] = cur.string(f)
        elif f in ENUM_SYMBOLS:
            enum_idx[f] = cur.varint(f)
        elif f == "value":
            value = cur.double(f)
        else:
            ints[f] = cur.varint(f)
    cur._fail(cur.pos != cur.end, "trailing bytes after the record")
    status = ints["status_code"]
    cur._fail((status < INT32_MIN) | (status > INT32_MAX), "status_code outside Avro int range")

    # Strings must be UTF-8; checked over whole columns, rows isolated only when one is not.
    ok = ~cur.broken
    string_cols: dict[str, pa.Array] = {}
    for f in STRING_FIELDS:
        start, length = spans[f]
        offsets, data = _gather_strings(buf, start[ok], length[ok])
        arr = _string_array(offsets, data)
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid:
            bad_rows = _invalid_utf8_rows(offsets, data)
            sub = np.flatnonzero(ok)[bad_rows]
            cur.broken[sub] = True
            cur.why[sub] = f"invalid UTF-8 in {f}"
            ok = ~cur.broken
            return _decode_again_without(payloads, avro[sub], cur, avro)
        string_cols[f] = arr
    fail_rows = np.flatnonzero(cur.broken)
    failures.extend(
        zip(
            avro[fail_rows].tolist(),
            [Reason.UNDECODABLE] * len(fail_rows),
            cur.why[fail_rows].tolist(),
            strict=True,
        )
    )

    # Enum indexes beyond the symbols: the record is well-formed, the symbol is unknown.
    unknown_enum = np.zeros(ok.shape, dtype=bool)
    enum_why = np.full(ok.shape, "", dtype=object)
    for f, symbols in ENUM_SYMBOLS.items():
        idx = enum_idx[f]
        out = ok & ~unknown_enum & ((idx < 0) | (idx >= len(symbols)))
        enum_why[out] = [f"{f} symbol index {i}" for i in idx[out]]
        unknown_enum |= out
    if unknown_enum.any():
        rows = np.flatnonzero(unknown_enum)
        failures.extend(
            zip(
                avro[rows].tolist(),
                [Reason.UNKNOWN_ENUM] * len(rows),
                enum_why[rows].tolist(),
                strict=True,
            )
        )
        keep_in_ok = ~unknown_enum[ok]
        ok &= ~unknown_enum
        string_cols = {f: a.filter(pa.array(keep_in_ok)) for f, a in string_cols.items()}

    columns: dict[str, pa.Array] = {}
    for f in FIELDS:
        if f in string_cols:
            columns[f] = string_cols[f]
        elif f in ENUM_SYMBOLS:
            columns[f] = pc.take(ENUM_SYMBOLS[f], pa.array(enum_idx[f][ok]))
        elif f == "value":
            columns[f] = pa.array(value[ok], pa.float64())
        else:
            columns[f] = pa.array(ints[f][ok], pa.int64())
    return RawColumns(
        index=avro[ok],
        table=pa.Table.from_arrays([columns[f] for f in FIELDS], schema=RAW_SCHEMA),
        failures=failures,
        json_index=np.flatnonzero(is_json),
    )


def _decode_again_without(
    payloads: Sequence[bytes | None],
    bad_positions: np.ndarray,
    cur: _Cursor,
    avro: np.ndarray,
) -> RawColumns:
    """Error path: some records hold invalid UTF-8. Blank them out and decode the batch again."""
    why = dict(zip(avro.tolist(), cur.why.tolist(), strict=True))
    blanked = list(payloads)
    for p in bad_positions.tolist():
        blanked[p] = None
    again = decode_payloads(blanked)
    bad = set(bad_positions.tolist())
    kept = [f for f in again.failures if f[0] not in bad]
    kept.extend((p, Reason.UNDECODABLE, why[p]) for p in sorted(bad))
    return RawColumns(
        index=again.index, table=again.table, failures=kept, json_index=again.json_index
    )
