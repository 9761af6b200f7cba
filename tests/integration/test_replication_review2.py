"""Issue 17 review (round 2, R4), real brokers and memcached: strict xfails proving defects in
what changed (each fails with an AssertionError on the code it names)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest

from walstream.testing.replication import cache_envelope

from .conftest import eventually
from .replication_rig import Rig

pytestmark = pytest.mark.integration

#: what a prompt stop takes at most (its loop cancelled, a commit on the log's cluster)
STOP_BOUND_S = 5.0


async def test_a_fanout_stops_promptly_while_its_regions_cluster_is_frozen(
    broker, own_broker, memcached_servers, unique
) -> None:
    servers = {r: s.address for r, s in zip("abc", memcached_servers, strict=True)}
    rig = Rig(broker, f"r4{unique}", servers, clusters={"c": own_broker.bootstrap_servers})
    frozen = False
    stopping: asyncio.Future[None] | None = None
    try:
        await rig.start(regions=())
        to_c = rig.fanouts["c"]
        first = cache_envelope("set", f"{unique}:1", b"1", ns=rig.ns, ttl=0, token="t1")
        await rig.write([first], local=False)
        await eventually(lambda: to_c.copies >= 1, 60, "c's fan-out to copy the first operation")
        assert own_broker.pid is not None
        os.kill(own_broker.pid, signal.SIGSTOP)  # c's cluster: away, its connections hang
        frozen = True
        second = cache_envelope("set", f"{unique}:2", b"2", ns=rig.ns, ttl=0, token="t2")
        await rig.write([second], local=False)

        def in_flight() -> bool:  # handed to c's fan-out, its copy not acked
            return any(to_c.ledger.outstanding(tp) for tp in to_c.ledger.partitions())

        await eventually(in_flight, 60, "c's fan-out to send the second operation's copy")
        began = time.monotonic()
        stopping = asyncio.ensure_future(to_c.stop())
        await asyncio.wait({stopping}, timeout=STOP_BOUND_S + 5)  # returns once it stops
        took_s = time.monotonic() - began
        assert took_s <= STOP_BOUND_S, f"c's fan-out took {took_s:.1f} s to stop, not done"
    finally:
        if frozen and own_broker.pid is not None:
            os.kill(own_broker.pid, signal.SIGCONT)
        if stopping is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stopping, 60)
        await rig.stop()
