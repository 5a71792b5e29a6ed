"""Errors as RFC 9457 problem details (`application/problem+json`), for every router of `ot api`.

A handler raises `Problem`; the app turns it (and FastAPI's own 404/405/validation errors) into a
JSON body with `type`, `title`, `status`, `detail`, plus extension members such as `position`
(unparsable JSON), `rejected` (readings that broke the contract) or `retry_after` (429/503).
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ot:problem:"


class Problem(Exception):
    """An error answer: `kind` names it (`urn:ot:problem:{kind}`), `detail` says what to fix."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions
        if retry_after is not None:
            seconds = max(1, math.ceil(retry_after))
            self.headers["Retry-After"] = str(seconds)
            self.extensions["retry_after"] = seconds

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": TYPE_PREFIX + self.kind,
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            out["instance"] = instance
        out.update(self.extensions)
        return out

    def response(self, instance: str | None = None) -> JSONResponse:
        return JSONResponse(
            self.body(instance), self.status, headers=self.headers, media_type=MEDIA_TYPE
        )


async def problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response(request.url.path)


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    problem = Problem(exc.status_code, kind, detail, headers=dict(exc.headers or {}))
    return problem.response(request.url.path)


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    problem = Problem(422, "invalid-request", "the request does not fit its schema", errors=errors)
    return problem.response(request.url.path)


def problem_schema() -> dict[str, Any]:
    """OpenAPI schema of a problem body (for the `responses` of each route)."""
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "example": TYPE_PREFIX + "body-too-large"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
        "additionalProperties": True,
    }
