"""Dead-letter headers: what a DLQ message says about why and where it was rejected."""

from __future__ import annotations

from ot_pipeline_tests.support.samples import MAX_AGE_MS, MAX_FUTURE_MS, NOW_MS, reading
from streaming.events import (
    Reason,
    decode_batch,
    dlq_headers,
    encode_avro,
    fit_dead_letter,
    parse_dlq_headers,
)


def test_dlq_headers_name_reason_stage_and_source_position() -> None:
    headers = dlq_headers(Reason.OUT_OF_RANGE, "lander", "sensor-readings", 3, 1234567, "x=1")
    assert headers == [
        ("ot.reason", b"OUT_OF_RANGE"),
        ("ot.stage", b"lander"),
        ("ot.source.topic", b"sensor-readings"),
        ("ot.source.partition", b"3"),
        ("ot.source.offset", b"1234567"),
        ("ot.detail", b"x=1"),
    ]
    letter = parse_dlq_headers(list(headers))
    assert (letter.reason, letter.stage, letter.topic) == (
        "OUT_OF_RANGE",
        "lander",
        "sensor-readings",
    )
    assert (letter.partition, letter.offset, letter.detail) == (3, 1234567, "x=1")


def test_a_rejection_becomes_headers_that_read_back_the_same() -> None:
    batch = decode_batch(
        [encode_avro(reading(ts=NOW_MS + 2 * MAX_FUTURE_MS))],
        NOW_MS,
        max_future_ms=MAX_FUTURE_MS,
        max_age_ms=MAX_AGE_MS,
    )
    (rejection,) = batch.rejected
    assert rejection.reason == Reason.FUTURE_TIMESTAMP
    assert f"+{2 * MAX_FUTURE_MS} ms" in rejection.detail
    headers = dlq_headers(rejection.reason, "state", "t", 0, 7, rejection.detail)
    letter = parse_dlq_headers(list(headers))
    assert Reason(letter.reason) == Reason.FUTURE_TIMESTAMP and letter.detail == rejection.detail


def test_long_or_non_ascii_details_are_cut_to_valid_utf8() -> None:
    headers = dict(dlq_headers("UNDECODABLE", "lander", "t", 0, 0, "ü" * 1000))
    detail = headers["ot.detail"]
    assert len(detail) <= 512
    assert detail.decode("utf-8") == "ü" * 256


def test_dead_letter_too_big_to_forward_whole_is_cut_to_fit_and_says_so() -> None:
    headers = dlq_headers(Reason.TOO_LARGE, "lander", "sensor-readings", 1, 7, "big")
    small = fit_dead_letter(b"x" * 100, b"m1", headers, limit=1000)
    assert small == (b"x" * 100, b"m1", headers)
    assert not parse_dlq_headers(small[2]).truncated

    value, key, cut = fit_dead_letter(b"x" * 5000, b"k" * 3000, headers, limit=2000)
    letter = parse_dlq_headers(cut)
    assert letter.truncated and letter.original_size == 5000 and letter.offset == 7
    assert key == b"k" * 1024 and value and set(value) == {ord("x")}
    assert len(value) + len(key) + sum(len(k) + len(v) for k, v in cut) == 2000
