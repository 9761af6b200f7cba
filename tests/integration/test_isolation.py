"""Isolation on the real broker (issue 14 items 1 and 2, acceptance), as a hostile client of one
namespace would try it: a kafka target naming the control topic (with a namespace event that
rewrites another namespace's target as payload), another namespace's log, a table changelog or a
delay tier; a record claiming another namespace; a kv table that is SQL. The API refuses each
(403 naming the field and the policy); produced straight into the attacker's own log, each is
dead-lettered in the attacker's DLQ with a reason naming the policy and nothing is run: the
victim's config and topics are untouched, and its next write goes to its own target."""

from __future__ import annotations

import sqlite3
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from walstream.dlq import read_dlq
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import encode_event
from walstream.records import Envelope, Lifecycle, encode_envelope
from walstream.topology import default_topics, delay_topic

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import topic_end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def rewrite_event(victim: str, sink: str) -> dict:
    """A valid control-topic event giving ``victim`` the attacker's sink as its target."""
    evil = parse_namespace({"name": victim, "target": {"type": "kafka", "topic": sink}})
    event = orjson.loads(encode_event(evil, int(time.time() * 1000))[1])
    if "version" in event:
        event["version"] = 1_000_000  # newer than anything applied
    return event


async def test_a_hostile_namespace_reaches_neither_the_control_plane_nor_other_namespaces(
    wal_settings, wal_env, workers, recorder, wal_client, unique
):
    app_id, control = wal_settings.app_id, wal_settings.control_topic
    attacker, victim = f"attacker-{unique}", f"victim-{unique}"
    sink = f"attacker-sink-{unique}"
    fast = {"max_attempts": 3, "backoff": {"base_ms": 200, "cap_ms": 200, "jitter": 0.0}}
    await apply_namespace(
        wal_settings, {"name": victim, "target": {"type": "http", "url": recorder.url}, **fast}
    )
    await apply_namespace(
        wal_settings, {"name": attacker, "target": {"type": "kafka", "topic": sink}, **fast}
    )
    worker = workers()
    await wait_serving(worker, default_topics(attacker).log)
    await wait_serving(worker, default_topics(victim).log)
    watched = [control, *default_topics(victim).all()]
    before = {t: await topic_end_offsets(wal_settings.bootstrap_servers, t) for t in watched}

    forbidden = {
        "control": {"type": "kafka", "topic": control, "key": victim},
        "victim-log": {"type": "kafka", "topic": default_topics(victim).log},
        "changelog": {"type": "kafka", "topic": f"{app_id}-attempts-changelog"},
        "delay-tier": {"type": "kafka", "topic": delay_topic(app_id, 5_000)},
        "kv-sql": {
            "type": "kv",
            "table": 'x" (a INTEGER); CREATE TABLE pwned AS SELECT 1; CREATE TABLE "y',
            "key": "k",
        },
    }
    now = int(time.time() * 1000)
    payload = rewrite_event(victim, sink)
    crafted = {
        name: Envelope(
            name, attacker, "k", payload, "json", target, Lifecycle(now, now, 0), name, now
        )
        for name, target in forbidden.items()
    }
    # a record in the attacker's log claiming to be the victim's, with the victim's own target
    crafted["claims-victim"] = Envelope(
        "claims-victim",
        victim,
        "k",
        {"from": "attacker"},
        "json",
        {"type": "http", "url": recorder.url},
        Lifecycle(now, now, 0),
        "claims-victim",
        now,
    )
    producer = AIOKafkaProducer(bootstrap_servers=wal_settings.bootstrap_list)
    await producer.start()
    try:
        for env in crafted.values():
            await producer.send_and_wait(
                default_topics(attacker).log, encode_envelope(env), key=b"k"
            )
    finally:
        await producer.stop()

    async def dead():
        view = await read_dlq(wal_settings.bootstrap_list, default_topics(attacker).dlq)
        return view.open if set(crafted) <= set(view.open) else None

    entries = await eventually(dead, 90, "every crafted record in the attacker's DLQ")
    for name in crafted:
        assert entries[name].error_class == "target_not_allowed", entries[name]
        assert "allowed_targets" in entries[name].reason
        assert entries[name].attempts == 1  # refused once, never retried
    for name in ("control", "victim-log", "changelog", "delay-tier"):
        assert "walstream's own topics" in entries[name].reason

    # the API refuses the same targets outright, naming the field
    for name, target in forbidden.items():
        refused = await wal_client.write(attacker, payload, target=target)
        assert refused.durable == "FALSE", name
        if name == "kv-sql":  # not a table name at all: refused by the target's schema
            assert (refused.status, refused.field) == (400, "target.table"), refused
            continue
        assert (refused.status, refused.field) == (403, "target.topic"), (name, refused)
        assert "allowed_targets" in refused.message, name
    # a plain table name it was not given is refused by the policy
    refused = await wal_client.write(
        attacker, {"n": 1}, target={"type": "kv", "table": "app_users", "key": "k"}
    )
    assert (refused.status, refused.field) == (403, "target.table"), refused
    assert "allowed_targets" in refused.message

    # the victim is untouched: its topics and the control topic got nothing, its next write
    # goes to its own target (and the record claiming to be the victim's never reached it)
    after = {t: await topic_end_offsets(wal_settings.bootstrap_servers, t) for t in watched}
    assert after == before
    good = await wal_client.write(victim, {"n": 1})
    assert good.ok
    await eventually(recorder.successes, 60, "the victim's write at the victim's target")
    assert {r.headers["X-Wal-Id"] for r in recorder.successes()} == {good.id}
    # no SQL ran: the kv database was never even opened
    kv_file = wal_settings.data_dir + "/kv.sqlite"
    try:
        conn = sqlite3.connect(f"file:{kv_file}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return
    try:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    finally:
        conn.close()
