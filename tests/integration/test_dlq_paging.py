"""DLQ listings and redrives read the DLQ in bounded pages on the real broker: 1,000 entries
(some closed by markers) listed 100 at a time, in order, resumed by cursor, while the reader
never holds more than one page of records (a reader holding the whole DLQ would hold 10 pages);
the HTTP listing pages with ``next``."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from walstream.api.app import build_api
from walstream.core.dlq import MarkerKind, Selection, entry_headers, marker_headers
from walstream.dlq import DlqReader, flatten

from .conftest import apply_namespace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ENTRIES = 1_000
PAGE = 100


async def fill_dlq(settings, topic: str) -> list[str]:
    """ENTRIES entries of 1 KiB each, every 7th closed by a marker; the open ids, oldest first."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_list, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for n in range(ENTRIES):
            record_id = f"r{n:05d}"
            headers = entry_headers(
                namespace="pg",
                reason=f"HTTP 503 for {record_id}",
                error_class="http_503" if n % 2 else "http_500",
                source="deliver",
                attempts=3,
                dead_at_ms=1_000_000 + n,
            )
            futures.append(
                await producer.send(topic, b"x" * 1024, key=record_id.encode(), headers=headers)
            )
        for future in futures:
            await future
        # markers after every entry is written: each closes the entry of its id
        markers = [
            await producer.send(
                topic,
                b"",
                key=f"r{n:05d}".encode(),
                headers=marker_headers(MarkerKind.DISCARDED, 2_000_000),
            )
            for n in range(0, ENTRIES, 7)
        ]
        for future in markers:
            await future
    finally:
        await producer.stop()
    return [f"r{n:05d}" for n in range(ENTRIES) if n % 7]


async def test_1000_entries_listed_in_pages_of_100_holding_one_page_at_most(wal_settings, unique):
    topic = f"wal.pg-{unique}.dlq"
    expected = await fill_dlq(wal_settings, topic)
    reader = DlqReader(wal_settings.bootstrap_list, batch_records=PAGE)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await reader.page(topic, Selection(), limit=PAGE, after=after)
        pages += 1
        assert len(page.entries) <= PAGE
        assert page.open == len(expected)
        assert page.matching == len(expected)
        assert all(e.value == b"x" * 1024 for e in page.entries)
        seen += [e.id for e in page.entries]
        if page.next is None:
            break
        after = page.next
    assert seen == expected  # every open entry once, oldest first, none closed
    assert pages == -(-len(expected) // PAGE)
    assert 0 < reader.largest_batch <= PAGE  # never more than a page of records at once

    # a filtered page, and a redrive-style pass over the coordinates a batch at a time
    index = await reader.index(topic)
    refs = index.select(Selection(error_class="http_503"))
    assert [r.id for r in refs] == [i for i in expected if int(i[1:]) % 2]
    batches = [len(b) async for b in reader.pages(topic, refs[:250])]
    assert batches == [100, 100, 50]
    streamed = [e.id async for e in flatten(reader.pages(topic, refs[:250]))]
    assert streamed == [r.id for r in refs[:250]]
    assert reader.largest_batch <= PAGE


async def test_http_listing_pages_with_a_cursor(api_client, wal_settings, unique):
    ns = f"pgapi-{unique}"
    await apply_namespace(wal_settings, {"name": ns, "target": {"type": "kafka", "topic": "o"}})
    expected = await fill_dlq(wal_settings, f"wal.{ns}.dlq")
    client = await api_client(build_api(wal_settings))
    url = f"/v1/namespaces/{ns}/dlq?limit=200&error_class=http_500"
    first = await (await client.get(url)).json()
    assert first["open"] == len(expected)
    wanted = [i for i in expected if int(i[1:]) % 2 == 0]
    assert first["matching"] == len(wanted)
    assert [e["id"] for e in first["entries"]] == wanted[:200]
    assert first["next"] is not None
    second = await (await client.get(f"{url}&after={first['next']}")).json()
    assert [e["id"] for e in second["entries"]] == wanted[200:400]
    bad = await client.get(f"{url}&after=nonsense")
    assert bad.status == 400
    assert (await bad.json())["field"] == "after"
