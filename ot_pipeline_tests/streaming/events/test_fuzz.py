"""decode_batch never raises, and never lets a damaged message pass as something it is not.

The reference is fastavro: a payload that decode_batch accepts must be exactly one record that
fastavro reads to the same values; every strict prefix of a valid message must be rejected.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from ot_pipeline_tests.support.samples import (
    MAX_AGE_MS,
    MAX_FUTURE_MS,
    NOW_MS,
    fastavro_read_exactly,
    fastavro_wire,
    random_readings,
)
from streaming.events import Reason, decode_batch, encode_avro_many, encode_json
from streaming.events import validation as validation_module


@pytest.fixture(autouse=True)
def no_safety_net(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("decode_batch fell back to one-by-one decoding")

    monkeypatch.setattr(validation_module, "_decode_one_by_one", fail)


def _batch(payloads: list[bytes | None]) -> Any:
    return decode_batch(payloads, NOW_MS, max_future_ms=MAX_FUTURE_MS, max_age_ms=MAX_AGE_MS)


def _as_record(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "ts": int(row["ts"].timestamp() * 1000)}


def _check(payloads: list[bytes | None]) -> dict[int, Reason]:
    """Every payload is accounted for once; accepted Avro ones are what fastavro reads."""
    batch = _batch(payloads)
    rejected = {r.index: r.reason for r in batch.rejected}
    assert len(rejected) == len(batch.rejected)
    valid = batch.valid_index.tolist()
    assert sorted(valid + list(rejected)) == list(range(len(payloads)))
    for i, row in zip(valid, batch.valid.to_pylist(), strict=True):
        payload = payloads[i]
        assert payload is not None
        if payload[:1] == b"{":
            expected = json.loads(payload)
            expected = {k: expected[k] for k in row}
        else:
            reference = fastavro_read_exactly(payload)
            assert reference is not None, f"accepted what fastavro cannot read: {payload!r}"
            expected = reference
        got = _as_record(row)
        assert got == {**expected, "value": float(expected["value"])}
        assert math.isfinite(got["value"])
    return rejected


def test_random_bytes_never_raise_and_are_all_rejected() -> None:
    rng = random.Random(1234)
    payloads: list[bytes | None] = []
    for _ in range(3000):
        n = rng.choice([0, 1, 4, 5, 6, 20, 60, 200])
        head = rng.choice([b"", b"\x00", b"\x00\x00\x00\x00\x01", b"{"])
        payloads.append(head + rng.randbytes(n))
    payloads.append(None)
    rejected = _check(payloads)
    assert len(rejected) == len(payloads)


def test_every_truncation_of_a_valid_message_is_rejected_and_neighbours_survive() -> None:
    records = random_readings(40, seed=99)
    good = encode_avro_many(records)
    payloads: list[bytes | None] = []
    truncated: list[int] = []
    for msg in good:
        payloads.append(msg)
        for cut in range(len(msg)):
            truncated.append(len(payloads))
            payloads.append(msg[:cut])
    rejected = _check(payloads)
    assert sorted(rejected) == truncated


def test_every_single_byte_corruption_is_rejected_or_reads_exactly_like_fastavro() -> None:
    rng = random.Random(5)
    records = random_readings(25, seed=98)
    payloads: list[bytes | None] = []
    for msg in encode_avro_many(records):
        for pos in range(len(msg)):
            for byte in {0x00, 0x01, 0x7F, 0x80, 0xFF, msg[pos] ^ 0x01, rng.randrange(256)}:
                if byte != msg[pos]:
                    payloads.append(msg[:pos] + bytes([byte]) + msg[pos + 1 :])
    rejected = _check(payloads)
    assert 0 < len(rejected) < len(payloads)


def test_fastavro_readable_corruptions_are_not_called_undecodable() -> None:
    """Not stricter than Avro: if a payload is the canonical encoding of a record fastavro reads
    (ints within Avro's 32/64 bits), the rejection, if any, names a contract rule instead.
    fastavro silently drops the excess bits of an over-long 10-byte varint; decode_batch calls
    such a message undecodable, and its canonical re-encoding differs, so it is left out here."""
    records = random_readings(15, seed=97)
    payloads: list[bytes | None] = []
    for msg in encode_avro_many(records):
        for pos in range(5, len(msg)):
            for byte in (0x00, 0x02, 0x7E, msg[pos] ^ 0x04):
                payloads.append(msg[:pos] + bytes([byte]) + msg[pos + 1 :])
    rejected = _check(payloads)
    for i, reason in rejected.items():
        payload = payloads[i]
        assert payload is not None
        reference = fastavro_read_exactly(payload)
        if (
            reference is not None
            and reason == Reason.UNDECODABLE
            and _fits_avro_ints(reference)
            and fastavro_wire(reference) == payload
        ):
            raise AssertionError(
                f"fastavro reads {payload!r} but decode_batch calls it undecodable"
            )


def _fits_avro_ints(record: dict[str, Any]) -> bool:
    if not -(2**31) <= record["status_code"] < 2**31:
        return False
    return all(-(2**63) <= record[f] < 2**63 for f in ("ts", "seq"))


def test_json_mutations_never_raise_and_accepted_ones_match_their_json() -> None:
    rng = random.Random(3)
    payloads: list[bytes | None] = []
    for record in random_readings(30, seed=96):
        msg = encode_json(record)
        payloads.append(msg)
        for _ in range(60):
            pos = rng.randrange(len(msg))
            payloads.append(msg[:pos] + bytes([rng.randrange(256)]) + msg[pos + 1 :])
        payloads.extend(msg[:cut] for cut in range(1, len(msg), 7))
    rejected = _check(payloads)
    assert 0 < len(rejected) < len(payloads)
