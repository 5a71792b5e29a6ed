"""API keys without servers: making, configuring and verifying them, and the roles they grant."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streaming.api.keys import (
    ApiKey,
    KeyEntryError,
    KeyRing,
    Role,
    hash_key,
    new_key,
    parse_entries,
    parse_entry,
)
from streaming.settings import Settings, SettingsError


def test_a_new_key_is_random_and_its_entry_holds_only_the_hash():
    secret, key = new_key("plant-a", Role.INGEST)
    other, _ = new_key("plant-a", Role.INGEST)
    assert secret != other and secret.startswith("ot_") and len(secret) >= 40
    assert secret not in key.entry
    assert key.entry == f"plant-a:ingest:sha256:{hash_key(secret).hex()}"
    assert parse_entry(key.entry) == key


def test_the_key_ring_finds_the_presented_key_and_nothing_else():
    a_secret, a = new_key("a", Role.INGEST)
    b_secret, b = new_key("b", Role.ADMIN)
    ring = KeyRing([a, b])
    assert ring.verify(a_secret) == a and ring.verify(b_secret) == b
    assert ring.verify(None) is None and ring.verify("") is None
    assert ring.verify(a_secret[:-1]) is None and ring.verify(a.entry) is None
    assert ring.verify(hash_key(a_secret).hex()) is None  # the hash is not a key
    assert KeyRing([]).verify(a_secret) is None


def test_roles_grant_what_their_names_say():
    def key(role: Role) -> ApiKey:
        return new_key("k", role)[1]

    assert key(Role.INGEST).allows(Role.INGEST) and not key(Role.INGEST).allows(Role.READ)
    assert key(Role.READ).allows(Role.READ) and not key(Role.READ).allows(Role.INGEST)
    assert key(Role.OPERATE).allows(Role.READ) and not key(Role.OPERATE).allows(Role.ADMIN)
    assert all(key(Role.ADMIN).allows(r) for r in Role)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("justakey", "NAME:ROLE:sha256:HEX"),
        ("a:ingest:md5:" + "0" * 64, "md5"),
        ("a:root:sha256:" + "0" * 64, "'root' is not one of ingest, read, operate, admin"),
        ("a:ingest:sha256:" + "0" * 63, "64 lower-case hex"),
        ("a b:ingest:sha256:" + "0" * 64, "must match"),
    ],
)
def test_bad_entries_are_refused_with_a_reason(entry, fragment):
    with pytest.raises(KeyEntryError, match=None) as info:
        parse_entry(entry)
    assert fragment in str(info.value)


def test_entries_are_comma_separated_and_names_unique():
    _, a = new_key("a", Role.INGEST)
    _, b = new_key("b", Role.READ)
    assert parse_entries(f" {a.entry} ,{b.entry},") == (a, b)
    with pytest.raises(KeyEntryError, match="twice"):
        parse_entries(f"{a.entry},{a.entry}")


def test_settings_parse_the_keys_and_name_the_variable_on_a_bad_one():
    _, a = new_key("a", Role.INGEST)
    assert Settings.from_env({"OT_API_KEYS": a.entry}).api_keys == (a,)
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"OT_API_KEYS": "plain-secret"})
    assert str(info.value).startswith("OT_API_KEYS: ") and "plain-secret" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("OT_API_MAX_BODY_BYTES", "10", "at least 1024"),
        ("OT_API_MAX_READINGS", "many", "whole number"),
        ("OT_API_RATE_READINGS", "-1", "at least 0"),
        ("OT_API_KAFKA_TIMEOUT_SECONDS", "0", "at least 1"),
    ],
)
def test_gateway_limits_are_checked_at_start_up(name, value, fragment):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value) and fragment in str(info.value)


def test_ot_api_keys_new_prints_the_key_and_its_entry():
    out = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "api", "keys", "new", "line-3", "--role", "read"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [line.split(": ")[0] for line in out] == ["key", "entry"]
    secret, entry = out[0].removeprefix("key: "), out[1].removeprefix("entry: ")
    assert KeyRing(parse_entries(entry)).verify(secret) == parse_entry(entry)
    assert entry.startswith("line-3:read:sha256:")
