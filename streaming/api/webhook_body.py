"""The body of `POST /webhook/sensor-data` -> one JSON payload per reading (pure, no I/O).

Three forms: one JSON object (one reading), a JSON array (a batch), or NDJSON (one object per
line, for bulk). Each reading becomes the bytes of one JSON object, which is what the contract's
batch validator reads and what a dead letter carries: an NDJSON line or a single-object body
unchanged, an array element re-serialised compactly.

A body that is not JSON at all is the client's mistake as a whole (`UnparsableBody`, with the
position); inside a batch, an element or a line that is not a JSON object is one rejected
reading (`INVALID_JSON`), so its neighbours are still accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from streaming.events import Reason, Rejection


class BodyForm(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"


JSON_MEDIA_TYPES = frozenset({"application/json"})
NDJSON_MEDIA_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


class UnsupportedMediaType(ValueError):
    pass


class UnparsableBody(ValueError):
    """Not JSON; `position` = line, column (1-based) and offset (0-based) of the error."""

    def __init__(self, message: str, line: int, column: int, offset: int) -> None:
        super().__init__(message)
        self.position = {"line": line, "column": column, "offset": offset}


class NotReadings(ValueError):
    """Valid JSON, but neither an object nor an array."""


class TooManyReadings(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} readings in one request")
        self.limit = limit


@dataclass
class ParsedBody:
    """Every reading of a request as JSON bytes, and those already rejected while splitting."""

    readings: list[bytes] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # NDJSON only: the 1-based line number of each reading, for the rejection details.
    lines: list[int] | None = None

    @property
    def to_check(self) -> list[int]:
        """Indices of the readings the validator still has to decide on."""
        if not self.rejected:
            return list(range(len(self.readings)))
        done = {r.index for r in self.rejected}
        return [i for i in range(len(self.readings)) if i not in done]


def body_form(content_type: str | None) -> BodyForm:
    """The form a Content-Type announces; UnsupportedMediaType unless JSON or NDJSON in UTF-8."""
    if not content_type:
        raise UnsupportedMediaType("no Content-Type; send application/json or application/x-ndjson")
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = ""
    for param in params.split(";"):
        k, _, v = param.partition("=")
        if k.strip().lower() == "charset":
            charset = v.strip().strip('"').lower()
    if charset and charset not in {"utf-8", "utf8"}:
        raise UnsupportedMediaType(f"charset {charset!r}: readings must be UTF-8")
    if media in JSON_MEDIA_TYPES:
        return BodyForm.JSON
    if media in NDJSON_MEDIA_TYPES:
        return BodyForm.NDJSON
    raise UnsupportedMediaType(
        f"Content-Type {media!r}: send application/json or application/x-ndjson"
    )


def parse_body(body: bytes, form: BodyForm, max_readings: int) -> ParsedBody:
    if form is BodyForm.NDJSON:
        return _parse_ndjson(body, max_readings)
    return _parse_json(body, max_readings)


def _parse_json(body: bytes, max_readings: int) -> ParsedBody:
    doc, strict = _loads(body)
    if isinstance(doc, dict):
        return ParsedBody([body.strip()])
    if not isinstance(doc, list):
        raise NotReadings(
            f"the body is a JSON {_json_type(doc)}: send a reading (an object) or an array of them"
        )
    if len(doc) > max_readings:
        raise TooManyReadings(max_readings)
    parsed = ParsedBody()
    dumps = _dumps if strict else _dumps_lenient
    for i, element in enumerate(doc):
        parsed.readings.append(dumps(element))
        if not isinstance(element, dict):
            detail = f"a JSON {_json_type(element)}, not an object"
            parsed.rejected.append(Rejection(i, Reason.INVALID_JSON, detail))
    return parsed


def _parse_ndjson(body: bytes, max_readings: int) -> ParsedBody:
    parsed = ParsedBody(lines=[])
    assert parsed.lines is not None
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip()
        if not line:
            continue
        if len(parsed.readings) == max_readings:
            raise TooManyReadings(max_readings)
        if line[:1] != b"{":
            detail = f"line {number}: not a JSON object"
            parsed.rejected.append(Rejection(len(parsed.readings), Reason.INVALID_JSON, detail))
        parsed.readings.append(line)
        parsed.lines.append(number)
    return parsed


def _loads(body: bytes) -> tuple[Any, bool]:
    """Parse with orjson; fall back to the standard library (the contract's own JSON reader) for
    what orjson refuses but the contract decides per reading (integers beyond 64 bits, NaN, lone
    surrogates). Returns the document and whether orjson read it."""
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body), False
    except json.JSONDecodeError as exc:
        raise UnparsableBody(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            exc.lineno,
            exc.colno,
            exc.pos,
        ) from None
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        column = exc.start - (body.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UnparsableBody(
            f"not UTF-8 at byte {exc.start} (line {line})", line, column, exc.start
        ) from None
    except RecursionError:
        raise UnparsableBody("JSON nested too deeply", 1, 1, 0) from None


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _dumps_lenient(value: Any) -> bytes:
    # ensure_ascii keeps a lone surrogate as an escape, so the validator reports it per reading.
    return json.dumps(value, separators=(",", ":")).encode()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
