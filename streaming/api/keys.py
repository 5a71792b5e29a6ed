"""API keys: how they are made, how they are configured, and how a presented key is checked.

A key is 32 random bytes (`ot_` + URL-safe base64). `OT_API_KEYS` holds one entry per key,
`NAME:ROLE:sha256:HEX`, comma-separated: the name (for logs and rate limits), the role and the
SHA-256 of the key, never the key itself. A fast hash is enough (and a slow one would cost every
request milliseconds): the keys are random, so there is no dictionary to try against the hash.

A presented key is hashed and compared with every configured hash in constant time, without an
early exit, so the time taken says nothing about which key, or how much of one, matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "ot_"
HASH_SCHEME = "sha256"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class Role(StrEnum):
    INGEST = "ingest"  # may push readings (the webhook)
    READ = "read"  # may read state, history, alerts (operator API)
    OPERATE = "operate"  # read + acknowledge, assign, escalate alerts
    ADMIN = "admin"  # everything


# What each role may do: a role grants itself and the roles listed here.
GRANTS: dict[Role, frozenset[Role]] = {
    Role.INGEST: frozenset({Role.INGEST}),
    Role.READ: frozenset({Role.READ}),
    Role.OPERATE: frozenset({Role.READ, Role.OPERATE}),
    Role.ADMIN: frozenset(Role),
}


class KeyEntryError(ValueError):
    """An `OT_API_KEYS` entry that cannot be used; the message says which and why (one line)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One configured key: who it is, what it may do, and the SHA-256 of the secret."""

    name: str
    role: Role
    digest: bytes

    def allows(self, required: Role) -> bool:
        return required in GRANTS[self.role]

    @property
    def entry(self) -> str:
        """The `OT_API_KEYS` entry of this key."""
        return f"{self.name}:{self.role}:{HASH_SCHEME}:{self.digest.hex()}"


def hash_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", errors="surrogateescape")).digest()


def new_key(name: str, role: Role | str) -> tuple[str, ApiKey]:
    """A fresh random secret and its entry (the secret is shown once, the entry is configured)."""
    if not _NAME.match(name):
        raise KeyEntryError(f"key name {name!r} must match {_NAME.pattern}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, ApiKey(name, _role(role, name), hash_key(secret))


def _role(role: Role | str, name: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise KeyEntryError(f"key {name!r}: role {role!r} is not one of {roles}") from None


def parse_entry(entry: str) -> ApiKey:
    """`NAME:ROLE:sha256:HEX` -> ApiKey; KeyEntryError (without echoing the hash) otherwise."""
    parts = entry.strip().split(":")
    if len(parts) != 4:
        raise KeyEntryError(
            f"entry {parts[0][:64]!r}... must be NAME:ROLE:{HASH_SCHEME}:HEX "
            "(make one with `ot api keys new NAME --role ROLE`)"
        )
    name, role, scheme, digest = parts
    if not _NAME.match(name):
        raise KeyEntryError(f"key name {name[:64]!r} must match {_NAME.pattern}")
    if scheme != HASH_SCHEME:
        raise KeyEntryError(f"key {name!r}: hash scheme {scheme[:16]!r} is not {HASH_SCHEME}")
    if not _HEX.match(digest):
        raise KeyEntryError(f"key {name!r}: the hash must be 64 lower-case hex digits")
    return ApiKey(name, _role(role, name), bytes.fromhex(digest))


def parse_entries(value: str) -> tuple[ApiKey, ...]:
    """The comma-separated `OT_API_KEYS` value -> keys; names must be unique."""
    keys = tuple(parse_entry(e) for e in value.split(",") if e.strip())
    seen: set[str] = set()
    for key in keys:
        if key.name in seen:
            raise KeyEntryError(f"key name {key.name!r} is configured twice")
        seen.add(key.name)
    return keys


class KeyRing:
    """The configured keys; `verify` finds the key a request presented, in constant time."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)

    def verify(self, presented: str | None) -> ApiKey | None:
        if not presented:
            return None
        digest = hash_key(presented)
        found: ApiKey | None = None
        for key in self.keys:  # every key is compared: no early exit
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
