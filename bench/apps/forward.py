"""The retry benchmark's baseline: a plain Faust agent forwarding raw records from one topic to
another (FORWARD_SRC -> FORWARD_DST), on walstream's Faust settings."""

from __future__ import annotations

import os
from typing import Any

from walstream.app import create_app
from walstream.settings import Settings

app = create_app(Settings.from_env(), app_id=os.environ["FORWARD_APP_ID"])
source = app.topic(os.environ["FORWARD_SRC"], key_serializer="raw", value_serializer="raw")
destination = app.topic(os.environ["FORWARD_DST"], key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def forward(stream: Any) -> None:
    async for event in stream.events():
        await destination.send(key=event.key, value=event.value)
