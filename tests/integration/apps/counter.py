"""A worker that counts events into a Faust table: the table-recovery test's subject.

Configured by environment: WALSTREAM_* (broker, store, data dir, web port) plus COUNTER_APP_ID and
COUNTER_TOPIC.
"""

from __future__ import annotations

import os
from typing import Any, cast

from faust.tables.manager import TableManager

from walstream.app import create_app
from walstream.settings import Settings

settings = Settings.from_env()
app = create_app(
    settings,
    app_id=os.environ["COUNTER_APP_ID"],
    # The test waits for each commit before a kill: every 0.5 s, not Faust's 2.8 s.
    broker_commit_interval=0.5,
    # Changelog records go out in batches of several (the broker then under-reports the
    # changelog's end, the case the test is about), not one by one as a slow moment may send them.
    producer_linger=0.05,
)
source = app.topic(os.environ["COUNTER_TOPIC"], key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, partitions=4)


@app.agent(source)
async def count_events(stream: Any) -> None:
    async for event in stream.events():
        counts[event.key.decode()] += 1


@app.page("/total")
async def total(web: Any, request: Any) -> Any:
    tables = cast(TableManager, app.tables)  # its type (TableManagerT) omits ``recovery``
    ready = tables.recovery.completed.is_set() and not app.rebalancing
    return web.json({"total": sum(counts.values()), "ready": ready})
