"""`X-API-Key` authentication and role checks, as FastAPI dependencies for every router, and the
same check for the WebSocket stream (whose key may come in a query parameter or a first message,
since browsers cannot set headers on a WebSocket).

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


def authenticate(
    ring: KeyRing, presented: str | None, role: Role, *, anonymous_read: bool = False
) -> ApiKey:
    """The key presented, if it may do what `role` allows; Problem 401/403 otherwise."""
    key = identify(ring, presented, role, anonymous_read=anonymous_read)
    permit(key, role)
    return key


def identify(
    ring: KeyRing, presented: str | None, role: Role, *, anonymous_read: bool = False
) -> ApiKey:
    """The configured key presented (or ANONYMOUS for a read without one, when allowed)."""
    if not presented and anonymous_read and role == Role.READ:
        return ANONYMOUS
    key = ring.verify(presented)
    if key is None:
        detail = f"no {HEADER} header" if not presented else f"unknown {HEADER}"
        raise Problem(401, "unauthorized", detail, headers=_CHALLENGE)
    return key


def permit(key: ApiKey, role: Role) -> None:
    if not key.allows(role):
        raise Problem(403, "forbidden", f"key {key.name!r} has role {key.role}, this needs {role}")


def require(role: Role) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that answers 401 without a known key and 403 when its role is not enough."""

    async def authenticated(
        request: Request, presented: str | None = Security(api_key_header)
    ) -> ApiKey:
        ring: KeyRing = request.app.state.keyring
        anonymous = bool(getattr(request.app.state, "anonymous_read", False))
        key = identify(ring, presented, role, anonymous_read=anonymous)
        request.state.key_name = key.name
        permit(key, role)
        return key

    return authenticated
