"""A worker that writes attempt counts through TableAttempts: the attempts-recovery test's subject.

Each event is a record id (key) and a count (value): a count above 0 is recorded, 0 forgets the
id. Configured by environment: WALSTREAM_* plus KEEPER_APP_ID and KEEPER_TOPIC."""

from __future__ import annotations

import os
from typing import Any, cast

from faust.tables.manager import TableManager

from walstream.agents.attempts import TableAttempts
from walstream.app import create_app
from walstream.settings import Settings
from walstream.worker import bind_event

settings = Settings.from_env()
# Commits every 0.5 s (Faust's default is 2.8 s): the test waits for each commit before a kill.
app = create_app(settings, app_id=os.environ["KEEPER_APP_ID"], broker_commit_interval=0.5)
source = app.topic(os.environ["KEEPER_TOPIC"], key_serializer="raw", value_serializer="raw")
table = app.Table("attempts", default=int, partitions=4)
attempts = TableAttempts(table)


@app.agent(source)
async def keep(stream: Any) -> None:
    async for event in stream.events():
        bind_event(event)
        record_id, count = event.key.decode(), int(event.value)
        if count:
            await attempts.record(record_id, count)
        else:
            await attempts.forget(record_id)


@app.page("/state")
async def state(web: Any, request: Any) -> Any:
    tables = cast(TableManager, app.tables)  # its type (TableManagerT) omits ``recovery``
    ready = tables.recovery.completed.is_set() and not app.rebalancing
    return web.json({"ready": ready, "state": {k: attempts.get(k) for k in list(table.keys())}})
