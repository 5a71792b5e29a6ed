"""The webhook's pure core: splitting a body into readings and validating many requests at once."""

from __future__ import annotations

import json

import orjson
import pytest

from ot_pipeline_tests.support import samples
from streaming.api.webhook_body import (
    BodyForm,
    NotReadings,
    TooManyReadings,
    UnparsableBody,
    UnsupportedMediaType,
    body_form,
    parse_body,
)
from streaming.api.webhook_checks import check_requests
from streaming.events import decode_avro


@pytest.mark.parametrize(
    ("content_type", "form"),
    [
        ("application/json", BodyForm.JSON),
        ("Application/JSON; charset=UTF-8", BodyForm.JSON),
        ("application/x-ndjson", BodyForm.NDJSON),
        ("application/jsonl", BodyForm.NDJSON),
    ],
)
def test_json_and_ndjson_content_types_are_understood(content_type, form):
    assert body_form(content_type) is form


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/xml", "application/json; charset=latin-1"]
)
def test_other_content_types_are_refused(content_type):
    with pytest.raises(UnsupportedMediaType):
        body_form(content_type)


def test_a_single_object_is_one_reading_kept_byte_for_byte():
    body = b'  {"machine_id": "m1", "x": [1, 2]}\n'
    parsed = parse_body(body, BodyForm.JSON, 10)
    assert parsed.readings == [body.strip()] and parsed.rejected == []


def test_an_array_is_a_batch_and_non_objects_are_rejected_in_place():
    parsed = parse_body(b'[{"a": 1}, 5, null, {"b": "\\u00e9"}, []]', BodyForm.JSON, 10)
    assert parsed.readings[0] == b'{"a":1}' and json.loads(parsed.readings[3]) == {"b": "é"}
    assert [(r.index, r.reason, r.detail) for r in parsed.rejected] == [
        (1, "INVALID_JSON", "a JSON number, not an object"),
        (2, "INVALID_JSON", "a JSON null, not an object"),
        (4, "INVALID_JSON", "a JSON array, not an object"),
    ]
    assert parsed.to_check == [0, 3]


def test_ndjson_lines_are_readings_and_blank_lines_are_skipped():
    body = b'{"a": 1}\r\n\n  \n[1]\n{"b": 2}\n{broken'
    parsed = parse_body(body, BodyForm.NDJSON, 10)
    assert parsed.readings == [b'{"a": 1}', b"[1]", b'{"b": 2}', b"{broken"]
    assert parsed.lines == [1, 4, 5, 6]
    assert [(r.index, r.detail) for r in parsed.rejected] == [(1, "line 4: not a JSON object")]


def test_unparsable_json_names_the_position():
    with pytest.raises(UnparsableBody) as info:
        parse_body(b'[\n  {"a": 1},\n  {"b": }\n]', BodyForm.JSON, 10)
    assert info.value.position == {"line": 3, "column": 9, "offset": 22}
    with pytest.raises(UnparsableBody, match="not UTF-8 at byte 1"):
        parse_body(b'"\xff"', BodyForm.JSON, 10)
    with pytest.raises(UnparsableBody):
        parse_body(b"", BodyForm.JSON, 10)
    with pytest.raises(NotReadings):
        parse_body(b"42", BodyForm.JSON, 10)


def test_the_readings_limit_applies_to_arrays_and_ndjson():
    with pytest.raises(TooManyReadings):
        parse_body(b"[" + b",".join([b"{}"] * 4) + b"]", BodyForm.JSON, 3)
    with pytest.raises(TooManyReadings):
        parse_body(b"{}\n" * 4, BodyForm.NDJSON, 3)
    assert len(parse_body(b"{}\n" * 3, BodyForm.NDJSON, 3).readings) == 3


def test_what_only_the_contract_can_judge_reaches_it_per_reading():
    # Beyond 64 bits, NaN and lone surrogates: orjson refuses them, the contract decides.
    body = b'[{"seq": 123456789012345678901234567890}, {"value": NaN}, {"line_id": "\\ud800"}]'
    parsed = parse_body(body, BodyForm.JSON, 10)
    assert parsed.rejected == []
    checked = check_requests([parsed.readings], samples.NOW_MS, max_future_ms=1, max_age_ms=1)
    assert [r.reason for r in checked[0].rejected] == ["MISSING_FIELD"] * 3


def test_many_requests_are_checked_in_one_call_and_split_back():
    good = [samples.reading(machine_id=f"m{i}", seq=i) for i in range(5)]
    bad = samples.reading(machine_id="m9", seq=9, value=1e9)
    requests = [
        [orjson.dumps(good[0])],
        [],
        [orjson.dumps(bad), orjson.dumps(good[1]), b"{oops"],
        [orjson.dumps(r) for r in good[2:]],
    ]
    out = check_requests(
        requests,
        samples.NOW_MS,
        max_future_ms=samples.MAX_FUTURE_MS,
        max_age_ms=samples.MAX_AGE_MS,
    )
    assert [c.event_ids for c in out] == [["m0:0"], [], ["m1:1"], ["m2:2", "m3:3", "m4:4"]]
    assert [(r.index, r.reason) for r in out[2].rejected] == [
        (0, "OUT_OF_RANGE"),
        (2, "INVALID_JSON"),
    ]
    assert out[3].keys == [b"m2", b"m3", b"m4"]
    assert [decode_avro(v) for v in out[3].values] == good[2:]  # the lander's wire format
