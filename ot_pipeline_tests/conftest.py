"""Shared fixtures.

Tests that touch Kafka, Redis, PostgreSQL or MQTT use the real servers of the project's local stack
(`stack` fixture): it starts whatever is not running and, at the end of the session, stops only
what it started itself (set OT_KEEP_STACK=1 to leave it up). Each test that produces or consumes
gets topics of its own (`isolated`), so tests never see each other's messages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from streaming.settings import Settings


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    from streaming.stack.local import LocalStack

    local = LocalStack.from_env()
    started = local.up()
    # Subprocesses started by tests (`ot land`, `ot simulate`, ...) find the stack through these.
    os.environ.update(local.env())
    env = dict(os.environ)
    try:
        yield Settings.from_env(env)
    finally:
        if started and not os.environ.get("OT_KEEP_STACK"):
            local.down(only=started)


@pytest.fixture
def isolated(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings with fresh, uniquely named topics, a Redis key prefix, a PostgreSQL schema and a
    lake of its own; all removed again after the test."""
    settings = isolated_settings(stack, tmp_path / "lake")
    yield settings
    clean_up(settings)


def isolated_settings(stack: Settings, lake_dir: Path) -> Settings:
    """`stack` with fresh, uniquely named topics (created), a Redis key prefix, a PostgreSQL schema
    and a lake of its own; `clean_up` removes them again."""
    from ot_tools.drills import isolated_settings as isolate

    return isolate(stack, lake_dir)


@pytest.fixture
def mqtt_isolated(isolated: Settings) -> Iterator[Settings]:
    """`isolated` plus a topic root of its own on the stack's Mosquitto (`test-<suffix>/factory`),
    so parallel tests never see each other's messages. Tests that open persistent MQTT sessions
    name them in the `mqtt_sessions` fixture."""
    suffix = isolated.topics.readings.rsplit("-", 1)[-1]
    yield replace(isolated, mqtt_topic_root=f"test-{suffix}/factory")


@pytest.fixture
def mqtt_sessions(stack: Settings) -> Iterator[list[str]]:
    """Client ids of persistent sessions a test opens; ended (with their queues) afterwards, so
    the shared broker does not keep queueing for bridges that are gone."""
    from streaming.bridge.client import MqttAddress, MqttError, end_session

    ids: list[str] = []
    yield ids
    for client_id in ids:
        with contextlib.suppress(MqttError):
            end_session(MqttAddress.from_url(stack.mqtt_url), client_id)


def clean_up(settings: Settings) -> None:
    from ot_tools.drills import clean_up as remove

    remove(settings)
