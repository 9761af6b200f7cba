"""The failure path on the real broker: a record as large as the API accepts is retried and
dead-lettered with its history; a record over the worker's producer limit (written to the log by
someone else than the API) is dead-lettered without its payload; nothing raises in the worker."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from walstream.api.app import build_api
from walstream.dlq import read_dlq
from walstream.records import Envelope, Lifecycle, decode_envelope, encode_envelope
from walstream.testing import namespace_definition

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_large_records_fail_retry_and_dead_letter_without_raising(
    api_client, wal_settings, workers, recorder, unique
):
    ns = f"big-{unique}"
    target = {"type": "http", "url": recorder.url}
    definition = namespace_definition(ns, base_ms=100, cap_ms=400, max_attempts=4, target=target)
    await apply_namespace(wal_settings, definition)
    worker = workers()
    await wait_serving(worker, f"wal.{ns}.log")
    client = await api_client(build_api(wal_settings))
    recorder.fail_always(503)

    # The largest record the API accepts, and one byte more (413: not written).
    limit = wal_settings.max_record_bytes
    probe = await client.post(f"/v1/namespaces/{ns}/log", json={"payload": "p", "key": "big"})
    assert probe.status == 200
    probe_id = (await probe.json())["id"]
    [logged] = await read_topic(wal_settings.bootstrap_list, f"wal.{ns}.log", expect=1)
    overhead = len(logged.value) + len(logged.key) - len(b'"p"')  # all but the payload
    payload = "x" * (limit - overhead - 2)  # and its two quotes
    largest = await client.post(
        f"/v1/namespaces/{ns}/log", data=orjson.dumps({"payload": payload, "key": "big"})
    )
    assert largest.status == 200, await largest.text()
    largest_id = (await largest.json())["id"]
    over = await client.post(
        f"/v1/namespaces/{ns}/log", data=orjson.dumps({"payload": payload + "x", "key": "big"})
    )
    assert over.status == 413

    # Someone with produce rights writes a record the worker's producer can never write again.
    huge = _probe("huge-1", ns, recorder.url)._replace(payload="h" * 1_010_000)
    producer = AIOKafkaProducer(
        bootstrap_servers=wal_settings.bootstrap_list, acks="all", max_request_size=2_000_000
    )
    await producer.start()
    try:
        await producer.send_and_wait(f"wal.{ns}.log", encode_envelope(huge), key=b"huge")
    finally:
        await producer.stop()

    async def entries():
        view = await read_dlq(wal_settings.bootstrap_list, f"wal.{ns}.dlq")
        return view.open if {probe_id, largest_id, "huge-1"} <= set(view.open) else None

    found = await eventually(entries, 200, "three DLQ entries", every=1.0)  # 14 s idle
    big = found[largest_id]
    dead = decode_envelope(big.value)
    assert dead.payload == payload  # the whole record, with its history
    assert [h.attempt for h in dead.history] == [0, 1, 2, 3]
    assert big.attempts == 4
    assert "gave up after 4 attempts" in big.reason
    assert len(recorder.all()) >= 8  # both API records were attempted 4 times each
    gone = found["huge-1"]
    assert gone.value is None  # not copied: it stays on the log, where the entry says
    assert gone.source.startswith(f"wal.{ns}.")
    assert "MessageSizeTooLargeError" in gone.reason
    assert worker.alive()
    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log, worker.log_tail(80)


def _probe(record_id: str, ns: str, url: str) -> Envelope:
    """An envelope shaped like the API's (for sizes, and for a record written directly)."""
    return Envelope(
        record_id,
        ns,
        "big",
        "p",
        "json",
        {"type": "http", "url": url},
        Lifecycle(1_800_000_000_000, 1_800_000_000_000, 0),
        record_id,
        1_800_000_000_000,
    )
