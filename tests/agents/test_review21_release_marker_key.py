"""Review of issue 16 (a192c3d): a record whose Kafka record key differs from its envelope's
ordering key (produced to a log directly; or with no record key) is handled under its envelope
key's lock and ordered by that key, but the release marker it writes when it hands its key on
was keyed by its record key: read back, the marker opened the turn of the record key (no head:
stale) or, keyless, was dropped, and the next parked record of the ordering key was never
delivered (its key blocked for good). The settle marker ``walstream dlq discard`` writes is keyed
by the ordering key already; the release marker is keyed the same way."""

from __future__ import annotations

import pytest

from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Outcome, Source
from walstream.errors import TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import encode_envelope
from walstream.testing import DeliveryHarness, ScriptedTarget, envelope, namespace_definition

NOW = 1_800_000_000_000
DOWN = TargetUnavailableError("down", error_class="http_503")
LOG = "wal.seq.log"


@pytest.mark.parametrize("record_key", [b"other", None], ids=["other-key-bytes", "no-key"])
async def test_a_record_with_another_record_key_hands_its_ordering_key_to_the_next_record(
    record_key: bytes | None,
) -> None:
    registry = NamespaceRegistry()
    definition = namespace_definition("seq", base_ms=1_000, ordering="key")
    registry.apply(*encode_event(parse_namespace(definition), 1))
    target, order = ScriptedTarget(), KeyOrder({})
    h = DeliveryHarness.build(registry, target, order, now_ms=NOW)
    target.fail("id-1", DOWN)
    # id-1 of ordering key k1, produced to the log directly under another record key
    value = encode_envelope(envelope(1, key="k1", ns="seq", now_ms=NOW))
    offset = h.log.append(LOG, h.partition, record_key, value)
    assert await h.deliverer.handle(value, record_key, Source(LOG, h.partition, offset)) is (
        Outcome.RETRY
    )
    # id-2 of k1, written through the API (record key k1), waits behind it
    assert await h.write(envelope(2, key="k1", ns="seq", now_ms=NOW)) is Outcome.WAITING
    await h.run_emitted()  # id-1's retry is delivered and hands k1 on to id-2
    assert [e.id for e in target.delivered] == ["id-1", "id-2"]
    assert await order.load("seq", "k1") is None  # k1 is free again
