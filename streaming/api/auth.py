"""`X-API-Key` authentication and role checks, as FastAPI dependencies for every router.

With `OT_API_ANONYMOUS_READ=true` a request *without* a key may still do what the `read` role
allows (a wall display on a trusted network); a key that is presented is always checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from streaming.api.keys import ApiKey, KeyRing, Role
from streaming.api.problems import Problem

HEADER = "X-API-Key"
api_key_header = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="An API key from `ot api keys new NAME --role ROLE`, configured in OT_API_KEYS.",
)
_CHALLENGE = {"WWW-Authenticate": f'ApiKey header="{HEADER}"'}
# Who an anonymous read is (logs show this name); never in a key ring, so it matches no key.
ANONYMOUS = ApiKey("anonymous", Role.READ, b"")


def require(role: Role) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that answers 401 without a known key and 403 when its role is not enough."""

    async def authenticated(
        request: Request, presented: str | None = Security(api_key_header)
    ) -> ApiKey:
        if not presented and role is Role.READ and request.app.state.anonymous_read:
            request.state.key_name = ANONYMOUS.name
            return ANONYMOUS
        ring: KeyRing = request.app.state.keyring
        key = ring.verify(presented)
        if key is None:
            detail = f"no {HEADER} header" if not presented else f"unknown {HEADER}"
            raise Problem(401, "unauthorized", detail, headers=_CHALLENGE)
        request.state.key_name = key.name
        if not key.allows(role):
            raise Problem(
                403, "forbidden", f"key {key.name!r} has role {key.role}, this needs {role}"
            )
        return key

    return authenticated
