"""Shared fixtures: the real embedded broker (session-scoped) and unique names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from walstream.broker import EmbeddedBroker, wait_for_kafka


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker: WALSTREAM_TEST_BROKER or embedded Tansu.

    Never skipped: a broker that cannot start fails the integration tests (CI gates on them).
    """
    external = os.environ.get("WALSTREAM_TEST_BROKER")
    if external:
        host, port = external.rsplit(":", 1)
        wait_for_kafka(host, int(port))
        yield external
        return
    embedded = EmbeddedBroker().start()
    try:
        yield embedded.bootstrap_servers
    finally:
        embedded.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, groups and app ids."""
    return uuid.uuid4().hex[:10]
