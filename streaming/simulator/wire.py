"""Bytes on the wire: a vectorised Avro encoder for simulator blocks, and the malformed payloads.

`encode_avro_many` (streaming.events) encodes one dict at a time with fastavro, ~3-4 µs a record
with the dict built; the simulator's budget is a few µs per reading *including* the produce call.
So blocks are encoded column-wise here: rows with the same byte layout (same field lengths) form
a (rows, bytes) uint8 matrix whose columns are filled by numpy, and each row is one message.
The output is byte-for-byte what `streaming.events.encode_avro_many` produces (tested).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streaming.events import HEADER
from streaming.events.model import RANGES, UNITS
from streaming.simulator.fleet import METRIC_ORDER, TYPE_INDEX, Fleet
from streaming.simulator.generator import QUALITY_NAMES, ReadingBlock

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

_POW10 = np.array([10**i for i in range(1, 19)], dtype=np.int64)
_OUT_OF_RANGE = np.array([RANGES[m][1] * 10 + 1 for m in METRIC_ORDER])


def _zigzag_varint(value: int) -> bytes:
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_string(text: str) -> bytes:
    raw = text.encode()
    return _zigzag_varint(len(raw)) + raw


def _zigzag(x: I64) -> npt.NDArray[np.uint64]:
    return ((x << 1) ^ (x >> 63)).astype(np.uint64)


def _varint_len(z: npt.NDArray[np.uint64]) -> I64:
    bits = np.zeros(len(z), dtype=np.int64)
    v = z.copy()
    while True:
        nz = v > 0
        if not nz.any():
            break
        bits += nz
        v >>= np.uint64(1)
    return np.asarray(np.maximum(1, -(-bits // 7)), dtype=np.int64)


def _put_varint(mat: U8, col: int, z: npt.NDArray[np.uint64], nbytes: int) -> None:
    for i in range(nbytes):
        byte = (z >> np.uint64(7 * i)) & np.uint64(0x7F)
        if i < nbytes - 1:
            byte |= np.uint64(0x80)
        mat[:, col + i] = byte


def _table(rows: list[bytes]) -> tuple[U8, I64]:
    width = max(len(r) for r in rows)
    table = np.zeros((len(rows), width), dtype=np.uint8)
    for i, r in enumerate(rows):
        table[i, : len(r)] = np.frombuffer(r, dtype=np.uint8)
    return table, np.array([len(r) for r in rows], dtype=np.int64)


@dataclass
class AvroBlockEncoder:
    """Encodes `ReadingBlock` rows of one fleet into Confluent wire-format Avro messages."""

    fleet: Fleet

    def __post_init__(self) -> None:
        fleet = self.fleet
        n_metric = len(METRIC_ORDER)
        self.ids = [m.machine_id for m in fleet.machines]
        self.keys = [i.encode() for i in self.ids]
        self.id_bytes, self.id_len = _table([f"{i}:".encode() for i in self.ids])
        # Everything between event_id and value depends only on (machine, metric).
        tails = []
        for m in fleet.machines:
            for code in range(n_metric):
                metric = METRIC_ORDER[code]
                tails.append(
                    _avro_string(m.machine_id)
                    + _zigzag_varint(TYPE_INDEX[m.machine_type])
                    + _avro_string(m.line_id)
                    + _zigzag_varint(code)
                    + _avro_string(UNITS[metric])
                )
        self.tail_bytes, self.tail_len = _table(tails)
        self.n_metric = n_metric

    def encode(
        self, block: ReadingBlock, value: npt.NDArray[np.float64] | None = None
    ) -> list[bytes]:
        """One message per row, in row order (`value` overrides the block's values)."""
        n = len(block)
        if n == 0:
            return []
        values = block.value if value is None else value
        seq = block.seq
        digits = 1 + np.searchsorted(_POW10, seq, side="right")
        id_len = self.id_len[block.machine]
        eid_len = id_len + digits
        eid_vlen = np.where(eid_len < 64, 1, 2)
        tail_row = block.machine * self.n_metric + block.metric
        tail_len = self.tail_len[tail_row]
        z_ts = _zigzag(block.ts)
        z_seq = _zigzag(seq)
        ts_len = _varint_len(z_ts)
        seq_len = _varint_len(z_seq)
        # rows with the same layout share one matrix
        # every length is < 128: pack the six into one int64 key (1-D unique is a cheap sort)
        layout = (
            id_len
            | (digits << 7)
            | (eid_vlen << 14)
            | (tail_len << 21)
            | (ts_len << 28)
            | (seq_len << 35)
        )
        packed, group = np.unique(layout, return_inverse=True)
        group = group.reshape(-1)
        keys = [[(int(k) >> shift) & 0x7F for shift in (0, 7, 14, 21, 28, 35)] for k in packed]
        out: npt.NDArray[np.object_] = np.empty(n, dtype=object)
        z_status = _zigzag(block.status)
        z_quality = _zigzag(block.quality)
        value_bytes = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(n, 8)
        for g, (il, dg, vl, tl, tsl, sl) in enumerate(keys):
            rows = np.nonzero(group == g)[0]
            width = 5 + vl + il + dg + tl + 8 + tsl + sl + 2
            mat = np.empty((len(rows), width), dtype=np.uint8)
            mat[:, :5] = np.frombuffer(HEADER, dtype=np.uint8)
            _put_varint(mat, 5, _zigzag(eid_len[rows]), vl)
            col = 5 + vl
            mat[:, col : col + il] = self.id_bytes[block.machine[rows], :il]
            col += il
            s = seq[rows]
            for i in range(dg):
                mat[:, col + dg - 1 - i] = 48 + (s // 10**i) % 10
            col += dg
            mat[:, col : col + tl] = self.tail_bytes[tail_row[rows], :tl]
            col += tl
            mat[:, col : col + 8] = value_bytes[rows]
            col += 8
            _put_varint(mat, col, z_ts[rows], tsl)
            col += tsl
            _put_varint(mat, col, z_seq[rows], sl)
            col += sl
            mat[:, col] = z_status[rows]
            mat[:, col + 1] = z_quality[rows]
            buf = mat.tobytes()
            out[rows] = [buf[i : i + width] for i in range(0, len(buf), width)]
        result: list[bytes] = out.tolist()
        return result

    def key_list(self, block: ReadingBlock) -> list[bytes]:
        keys = self.keys
        return [keys[m] for m in block.machine.tolist()]

    def record(self, block: ReadingBlock, row: int) -> dict[str, object]:
        """The record dict of one row (for JSON and for the slow, reference encoder)."""
        machine = self.fleet.machines[int(block.machine[row])]
        metric = METRIC_ORDER[int(block.metric[row])]
        seq = int(block.seq[row])
        return {
            "event_id": f"{machine.machine_id}:{seq}",
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
