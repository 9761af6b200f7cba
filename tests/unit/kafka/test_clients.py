"""walstream.kafka.clients: every client walstream makes, with the settings it had by hand."""

from __future__ import annotations

from typing import Any

import pytest

from walstream.kafka import clients
from walstream.kafka.clients import ClientIds

S = ["127.0.0.1:9092"]

#: what AIOKafkaConsumer takes when an option is not given (aiokafka 0.14)
CONSUMER_DEFAULTS = {
    "isolation_level": "read_uncommitted",
    "max_partition_fetch_bytes": 1048576,
    "fetch_max_bytes": 52428800,
    "max_poll_records": None,
}
#: likewise for AIOKafkaProducer
PRODUCER_DEFAULTS = {
    "enable_idempotence": False,
    "max_request_size": 1048576,
    "linger_ms": 0,
    "request_timeout_ms": 40000,
    "max_batch_size": 16384,
    "retry_backoff_ms": 100,
}


class Recorded:
    def __init__(self, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        self.kwargs = kwargs


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"):
        monkeypatch.setattr(clients, name, lambda name=name, **kw: Recorded(name, **kw))


def reader(client_id: str, reset: str, wait_ms: int, **more: Any) -> dict[str, Any]:
    return {
        "bootstrap_servers": S,
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": reset,
        "fetch_max_wait_ms": wait_ms,
        "client_id": client_id,
        **more,
    }


def producer(client_id: str | None, **more: Any) -> dict[str, Any]:
    return {"bootstrap_servers": S, "acks": "all", "client_id": client_id, **more}


#: each client as the code built it by hand before the factory (file of the old call)
PRODUCTS = {
    # namespaces/broadcast.py NamespaceFeed.start
    "namespace_feed": (
        lambda: clients.reader(S, clients.NAMESPACE_FEED),
        reader("walstream-namespaces", "earliest", 200),
    ),
    # agents/dlq_monitor.py DlqMonitor._fold
    "dlq_monitor": (
        lambda: clients.reader(S, clients.DLQ_MONITOR),
        reader("walstream-dlq-monitor", "earliest", 500),
    ),
    # dlq/reading.py read_dlq
    "dlq_reader": (
        lambda: clients.reader(S, clients.DLQ_READER),
        reader("walstream-dlq-reader", "earliest", 50),
    ),
    # dlq/reading.py _consumer (DlqReader)
    "dlq_reader_paged": (
        lambda: clients.reader(S, clients.DLQ_READER, max_poll_records=100),
        reader("walstream-dlq-reader", "earliest", 50, max_poll_records=100),
    ),
    # replay.py replay (auto_offset_reset was aiokafka's default, "latest")
    "replay_reader": (
        lambda: clients.reader(S, clients.REPLAY),
        reader("walstream-replay", "latest", 50),
    ),
    # kafka/log_reader.py LogReader.read
    "log_reader": (
        lambda: clients.log_reader(S, client_id="walstream-log-reader", window_bytes=65536),
        reader(
            "walstream-log-reader",
            "none",
            20,
            max_partition_fetch_bytes=65536,
            fetch_max_bytes=65536,
        ),
    ),
    # kafka/offsets.py probe_end_offsets
    "end_offsets_probe": (
        lambda: clients.reader(S, clients.END_OFFSETS),
        reader("walstream-end-offsets", "latest", 20, max_partition_fetch_bytes=65536),
    ),
    # agents/delay.py DelayStage.on_start
    "delay_consumer": (
        lambda: clients.delay_consumer(
            S,
            group_id="wal-delay",
            fetch_max_wait_ms=100,
            session_timeout_s=6.0,
            heartbeat_interval_s=1.5,
        ),
        {
            **reader("wal-delay", "earliest", 100, max_partition_fetch_bytes=262144),
            "group_id": "wal-delay",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1500,
            "rebalance_timeout_ms": 10000,
        },
    ),
    # kafka/producer.py KafkaLogProducer
    "api_producer": (
        lambda: clients.api_producer(S, timeout_s=5.0),
        producer(
            "walstream-api",
            linger_ms=0,
            max_batch_size=262144,
            request_timeout_ms=5000,
            retry_backoff_ms=100,
        ),
    ),
    # cli.py _producer (no client id: aiokafka's own)
    "cli_producer": (lambda: clients.producer(S, clients.CLI), producer(None)),
    # namespaces/broadcast.py NamespacePublisher.start
    "namespace_publisher": (
        lambda: clients.producer(S, clients.NAMESPACE_PUBLISHER),
        producer("walstream-namespace-publisher"),
    ),
    # dlq/redrives.py Redrives.producer
    "redrive_producer": (lambda: clients.producer(S, clients.REDRIVE), producer("walstream-dlq")),
    # targets/pool.py _producer
    "target_producer": (
        lambda: clients.producer(S, clients.TARGETS),
        producer("walstream-targets", linger_ms=1),
    ),
    # agents/delay.py DelayStage.on_start: hops, and records due now
    "delay_hops_producer": (
        lambda: clients.delay_producer(S, group_id="wal-delay", due=False),
        producer("wal-delay-hops", linger_ms=2),
    ),
    "delay_due_producer": (
        lambda: clients.delay_producer(S, group_id="wal-delay", due=True),
        producer("wal-delay-due", linger_ms=0),
    ),
    # kafka/admin.py ensure_topics, cluster_durability
    "admin_client": (
        lambda: clients.admin_client(S),
        {"bootstrap_servers": S, "client_id": "walstream-admin"},
    ),
}


@pytest.mark.usefixtures("made")
@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_each_client_has_exactly_the_settings_it_had(name: str) -> None:
    build, expected = PRODUCTS[name]
    assert build().kwargs == expected


@pytest.mark.usefixtures("made")
def test_readers_never_auto_commit_and_producers_wait_for_all_replicas() -> None:
    for build, _ in PRODUCTS.values():
        client = build()
        if client.kind == "AIOKafkaConsumer":
            assert client.kwargs["enable_auto_commit"] is False
        elif client.kind == "AIOKafkaProducer":
            assert client.kwargs["acks"] == "all"


def test_ids_and_groups_are_made_here() -> None:
    assert ClientIds.delay_group("wal") == "wal-delay"
    assert ClientIds.parked_reader("wal") == "wal-parked"
    # a replicated namespace's fan-out to the regions on the deployment's cluster, and one to
    # each region on a cluster of its own (issue 17: its cluster away holds back no other
    # region's copies), its writer a group per region
    assert ClientIds.fanout_group("cache") == "walstream.cache.fanout"
    assert ClientIds.fanout_group("cache", "b") == "walstream.cache.fanout.b"
    assert ClientIds.region_group("cache", "b") == "walstream.cache.region.b"


async def test_the_real_clients_take_these_settings() -> None:
    """aiokafka builds every product; what it was not given is its default (pinned here)."""
    for name, (build, expected) in PRODUCTS.items():
        client = build()
        try:
            if name == "admin_client":
                assert client._client._client_id == expected["client_id"]
                continue
            if "acks" in expected:
                want = {**PRODUCER_DEFAULTS, **expected}
                if want["client_id"] is not None:
                    assert client.client._client_id == want["client_id"], name
                else:  # aiokafka's own id
                    assert client.client._client_id.startswith("aiokafka-producer-"), name
                assert client._sender._acks == -1, name  # "all"
                # idempotence would make a transaction manager
                assert (client._txn_manager is not None) is want["enable_idempotence"], name
                assert client._max_request_size == want["max_request_size"], name
                accumulator = client._message_accumulator
                assert accumulator._linger_time == want["linger_ms"] / 1000, name
                assert accumulator._batch_size == want["max_batch_size"], name
                assert client._request_timeout_ms == want["request_timeout_ms"], name
                assert client._sender._retry_backoff == want["retry_backoff_ms"] / 1000, name
            else:
                want = {**CONSUMER_DEFAULTS, **expected}
                assert client._client._client_id == want["client_id"], name
                assert client._group_id == want["group_id"], name
                assert client._enable_auto_commit is False, name
                assert client._isolation_level == want["isolation_level"], name
                assert client._auto_offset_reset == want["auto_offset_reset"], name
                assert client._fetch_max_wait_ms == want["fetch_max_wait_ms"], name
                assert client._max_partition_fetch_bytes == want["max_partition_fetch_bytes"]
                assert client._fetch_max_bytes == want["fetch_max_bytes"], name
                assert client._max_poll_records == want["max_poll_records"], name
        finally:
            if name == "admin_client":
                await client.close()
            else:
                await client.stop()
