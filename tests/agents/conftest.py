"""Shared fixtures of the agents' tests."""

from __future__ import annotations

import pytest

from walstream.agents.delay import DelayStage
from walstream.settings import Settings


@pytest.fixture
async def stage() -> DelayStage:
    """A delay stage of app ``t``, not started (no Kafka here): each test sets its clients."""
    return DelayStage(Settings(app_id="t"), group_id="t-delay")
