"""Per-key ordering in the deliver handler, over an in-memory log: a key's records reach the
target in write order whatever fails, other keys flow on, a dead-lettered head releases or holds
its key, and released records are read back from the log by reference."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Outcome, Source
from walstream.core.delay import parse_delay_headers, parse_due_header
from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.core.ordering import KeyState, RecordRef
from walstream.core.outbox.markers import (
    MarkerKind,
    decode_marker,
    marker_headers,
    marker_kind,
    marker_value,
)
from walstream.dlq import discard
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.namespaces.config import parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import Envelope, decode_envelope, encode_envelope
from walstream.testing import (
    DeliveryHarness,
    MemoryLog,
    RecordingEmitter,
    ScriptedTarget,
    envelope,
    namespace_definition,
)

NOW = 1_800_000_000_000
PART = 2
DOWN = TargetUnavailableError("down", error_class="http_503")
REJECTED = TargetRejectedError("HTTP 400", error_class="http_400")


def namespace(name: str, **extra) -> dict:
    return namespace_definition(name, base_ms=1_000, cap_ms=10_000, **extra)


@pytest.fixture
def registry():
    registry = NamespaceRegistry()
    for version, obj in enumerate(
        [
            namespace("seq", ordering="key"),
            namespace("held", ordering="key", on_dlq="hold"),
            namespace("loose"),
        ]
    ):
        registry.apply(*encode_event(parse_namespace(obj), version))
    return registry


@pytest.fixture
def target():
    return ScriptedTarget()


@pytest.fixture
def order():
    return KeyOrder({})


@pytest.fixture
def harness(registry, target, order):
    return build_harness(registry, target, order)


def rec(n: int, key: str = "k1", ns: str = "seq", delay_ms: int = 0) -> Envelope:
    return envelope(n, key=key, ns=ns, delay_ms=delay_ms, now_ms=NOW)


def delivered(target) -> list[str]:
    return [env.id for env in target.delivered]


async def test_a_key_waits_behind_its_retried_head_and_other_keys_flow(harness, target, order):
    target.fail("id-1", DOWN, DOWN)
    assert await harness.write(rec(1)) is Outcome.RETRY
    assert await harness.write(rec(2)) is Outcome.WAITING
    assert await harness.write(rec(3)) is Outcome.WAITING
    assert await harness.write(rec(4, key="other")) is Outcome.DELIVERED  # not blocked
    state = order.get("seq", "k1")
    assert (state.head, state.behind) == ("id-1", ("id-2", "id-3"))
    assert state.waiting[0] == RecordRef("id-2", "wal.seq.log", PART, 1)  # a reference
    assert delivered(target) == ["id-4"]

    await harness.run_emitted()
    assert delivered(target) == ["id-4", "id-1", "id-2", "id-3"]
    assert order.get("seq", "k1") is None  # free again: nothing left in the table
    assert order.table == {}
    markers = [e for e in harness.emitter.to("wal.seq.retry") if marker_kind(e.headers)]
    assert [decode_marker(MarkerKind.RELEASE, m.value).record_id for m in markers] == [
        "id-2",
        "id-3",
    ]
    assert {(m.key, m.partition) for m in markers} == {(b"k1", PART)}


async def test_without_key_ordering_a_retried_record_is_overtaken(harness, target):
    target.fail("id-1", DOWN)
    assert await harness.write(rec(1, ns="loose"), ns="loose") is Outcome.RETRY
    assert await harness.write(rec(2, ns="loose"), ns="loose") is Outcome.DELIVERED
    await harness.run_emitted()
    assert delivered(target) == ["id-2", "id-1"]


async def test_a_released_record_that_fails_becomes_the_head_and_order_still_holds(harness, target):
    target.fail("id-1", DOWN)
    target.fail("id-2", DOWN, DOWN)  # released after id-1, it fails twice before it passes
    await harness.write(rec(1))
    await harness.write(rec(2))
    await harness.write(rec(3))
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2", "id-3"]
    assert [env.attempt for env in target.delivered] == [1, 2, 0]


async def test_a_delayed_record_blocks_its_key_until_it_is_delivered(harness, target):
    assert await harness.write(rec(1, delay_ms=5_000)) is Outcome.DELAYED
    assert await harness.write(rec(2)) is Outcome.WAITING
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2"]
    assert target.delivered[0].lifecycle.deliver_at_ms <= harness.clock.now_ms()


async def test_dead_lettered_head_releases_the_key_and_names_who_waited(harness, target):
    target.fail("id-1", DOWN, REJECTED)  # the retry is refused for good: DLQ
    await harness.write(rec(1))
    await harness.write(rec(2))
    await harness.write(rec(3))
    await harness.run_emitted()
    assert delivered(target) == ["id-2", "id-3"]
    [dead] = harness.emitter.to("wal.seq.dlq")
    entry = parse_dlq_record(dead.key, dead.value, dead.headers, partition=PART, offset=0)
    assert isinstance(entry, DlqEntry)
    assert entry.behind == ("id-2", "id-3")
    assert decode_envelope(dead.value).key == "k1"  # the ordering key travels with the entry


async def test_held_head_keeps_its_key_until_redriven(harness, target, order):
    target.fail("id-1", DOWN, REJECTED)
    await harness.write(rec(1, ns="held"), ns="held")
    await harness.write(rec(2, ns="held"), ns="held")
    await harness.run_emitted()
    assert delivered(target) == []
    state = order.get("held", "k1")
    assert (state.head, state.held, state.behind) == ("id-1", True, ("id-2",))
    assert await harness.write(rec(3, ns="held"), ns="held") is Outcome.WAITING

    # redrive: the DLQ'd record comes back to the log with attempts reset
    [dead] = harness.emitter.to("wal.held.dlq")
    redriven = decode_envelope(dead.value)._replace(attempt=0, not_before_ms=0)
    assert await harness.write(redriven, ns="held") is Outcome.DELIVERED
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2", "id-3"]
    assert order.get("held", "k1") is None


async def test_held_head_discarded_releases_its_key_through_a_settle_marker(harness, target, order):
    target.fail("id-1", REJECTED)  # dead on its first attempt; the key is held from then on
    await harness.write(rec(1, ns="held"), ns="held")
    await harness.write(rec(2, ns="held"), ns="held")
    assert delivered(target) == []

    [dead] = harness.emitter.to("wal.held.dlq")
    entry = parse_dlq_record(dead.key, dead.value, dead.headers, partition=PART, offset=0)
    assert isinstance(entry, DlqEntry)
    producer = MarkerProducer(harness)
    ns = harness.deliverer.registry.get("held")
    assert await discard(producer, ns, [entry]) == 1
    settle = [s for s in producer.sent if s[0] == "wal.held.retry"]
    assert [(key, part, dict(hdrs)) for _, key, part, hdrs in settle] == [
        (b"k1", PART, {"wal-order": MarkerKind.SETTLE})
    ]
    await harness.run_emitted()
    assert delivered(target) == ["id-2"]
    assert order.get("held", "k1") is None


class MarkerProducer:
    """What ``discard`` writes, passed on to the harness as the broker would."""

    def __init__(self, harness: DeliveryHarness) -> None:
        self.harness = harness
        self.sent: list[tuple[str, bytes | None, int | None, list]] = []

    async def send_and_wait(self, topic, value, *, key=None, partition=None, headers=None):
        self.sent.append((topic, key, partition, list(headers or [])))
        await self.harness.deliverer.emitter.emit(
            topic, value, key=key, partition=partition, headers=headers
        )


async def test_a_marker_whose_turn_passed_changes_nothing(harness, target, order):
    order.put("seq", "k1", KeyState(head="id-9", since_ms=NOW))
    stale = marker_value("seq", "id-1", RecordRef("id-1", "wal.seq.log", PART, 0))
    source = Source("wal.seq.retry", PART, 0)
    headers = marker_headers(MarkerKind.RELEASE)
    assert await harness.deliverer.handle(stale, b"k1", source, headers) is Outcome.STALE
    settle = marker_value("seq", "id-9")
    # id-9 heads the key but is not held in the DLQ (it is in retry): a settle marker is stale
    assert (
        await harness.deliverer.handle(settle, b"k1", source, marker_headers(MarkerKind.SETTLE))
        is Outcome.STALE
    )
    assert await harness.deliverer.handle(b"{", b"k1", source, headers) is Outcome.STALE
    assert order.get("seq", "k1") == KeyState(head="id-9", since_ms=NOW)
    assert target.calls == []


async def test_a_parked_record_gone_from_the_log_is_dead_lettered_and_the_key_goes_on(
    harness, target
):
    target.fail("id-1", DOWN)
    await harness.write(rec(1))
    await harness.write(rec(2))
    await harness.write(rec(3))
    harness.log.gone.add(("wal.seq.log", PART, 1))  # id-2 fell off the log meanwhile
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-3"]
    [gone] = harness.emitter.to("wal.seq.dlq")
    entry = parse_dlq_record(gone.key, gone.value, gone.headers, partition=PART, offset=0)
    assert isinstance(entry, DlqEntry)
    assert entry.error_class == "RecordGoneError"
    assert "id-2" in entry.reason


async def test_a_record_read_again_after_a_crash_is_parked_once(harness, target, order):
    target.fail("id-1", DOWN)
    await harness.write(rec(1))
    value = encode_envelope(rec(2))
    source = Source("wal.seq.log", PART, 1)
    harness.log.append("wal.seq.log", PART, b"k1", value)
    for _ in range(2):  # the same log record, handled twice (its ack was lost in a crash)
        assert await harness.deliverer.handle(value, b"k1", source) is Outcome.WAITING
    assert order.get("seq", "k1").behind == ("id-2",)
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2"]


async def test_a_record_parked_while_the_release_marker_is_written_keeps_its_place(
    harness, target, order
):
    target.fail("id-1", DOWN)
    await harness.write(rec(1))
    await harness.write(rec(2))
    gate = asyncio.Event()
    emit = harness.emitter.emit

    async def slow_marker(topic, value, **kwargs):
        if marker_kind(kwargs.get("headers")):
            await gate.wait()
        await emit(topic, value, **kwargs)

    harness.emitter.emit = slow_marker
    feeding = asyncio.create_task(harness.run_emitted())
    for _ in range(20):  # id-1 delivered; its release marker for id-2 not acknowledged yet
        await asyncio.sleep(0)
    assert delivered(target) == ["id-1"]
    # the deliver agent meanwhile: id-3 waits for the key's turn, then parks behind id-2
    writing = asyncio.create_task(harness.write(rec(3)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not writing.done()
    gate.set()
    assert await writing is Outcome.WAITING
    await feeding
    assert delivered(target) == ["id-1", "id-2", "id-3"]


async def test_a_released_record_that_is_not_a_record_is_dead_lettered_and_the_key_goes_on(
    harness, target, order
):
    garbage = harness.log.append("wal.seq.log", PART, b"k1", b"\xff not a record")
    nxt = harness.log.append("wal.seq.log", PART, b"k1", encode_envelope(rec(3)))
    order.put(
        "seq",
        "k1",
        KeyState(
            head="id-2",
            since_ms=NOW,
            waiting=(RecordRef("id-3", "wal.seq.log", PART, nxt),),
        ),
    )
    release = marker_value("seq", "id-2", RecordRef("id-2", "wal.seq.log", PART, garbage))
    source = Source("wal.seq.retry", PART, 0)
    outcome = await harness.deliverer.handle(
        release, b"k1", source, marker_headers(MarkerKind.RELEASE)
    )
    assert outcome is Outcome.DEAD
    [poison] = harness.emitter.to("wal.seq.dlq")
    assert poison.value == b"\xff not a record"
    await harness.run_emitted()
    assert delivered(target) == ["id-3"]
    assert order.get("seq", "k1") is None


async def test_a_namespace_switched_to_none_drains_its_blocked_keys_in_order(
    harness, target, order
):
    # blocked while the namespace was key-ordered: id-1 heads k1 from the retry topic
    order.put("loose", "k1", KeyState(head="id-1", since_ms=NOW))
    assert await harness.write(rec(2, ns="loose"), ns="loose") is Outcome.WAITING
    assert await harness.write(rec(3, key="free", ns="loose"), ns="loose") is Outcome.DELIVERED
    head = encode_envelope(rec(1, ns="loose")._replace(attempt=1))
    retry = Source("wal.loose.retry", PART, 0)
    assert await harness.deliverer.handle(head, b"k1", retry) is Outcome.DELIVERED
    await harness.run_emitted()
    assert delivered(target) == ["id-3", "id-1", "id-2"]
    assert order.table == {}  # drained: the key is unordered from now on
    target.fail("id-4", DOWN)
    assert await harness.write(rec(4, ns="loose"), ns="loose") is Outcome.RETRY
    assert await harness.write(rec(5, ns="loose"), ns="loose") is Outcome.DELIVERED


# -- issue 13: O(1) parks, block before the copy, drain, overflow, unreadable parked records ---


class CountingTable(dict):
    """The ordering table as a dict that counts the bytes written into it (each write is one
    changelog record of that size)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def __setitem__(self, key, value) -> None:
        self.written += len(key) + len(value)
        super().__setitem__(key, value)


async def _bytes_of_one_park(harness, order, parked: int) -> int:
    refs = tuple(RecordRef(f"w-{i}", "wal.seq.log", PART, 1_000 + i) for i in range(parked))
    order.put("seq", "k1", KeyState(head="id-0", since_ms=NOW, waiting=refs))
    for _ in range(2_000):  # offsets of the harness log: after the parked ones
        harness.log.append("wal.seq.log", PART, b"k1", b"")
    before = order.table.written
    assert await harness.write(rec(1)) is Outcome.WAITING
    return order.table.written - before


async def test_one_park_writes_the_same_bytes_at_10_and_at_10000_parked(registry, target):
    sizes = {}
    for count in (10, 10_000):
        order = KeyOrder(CountingTable())
        harness = build_harness(registry, target, order)
        sizes[count] = await _bytes_of_one_park(harness, order, count)
        state = order.get("seq", "k1")
        assert state is not None
        assert state.behind[-1] == "id-1"  # parked, last
    # the same, but for the digits of the counters (10 -> 10000: a few bytes)
    assert sizes[10_000] - sizes[10] <= 8, sizes
    assert sizes[10_000] < 400, sizes


def build_harness(registry, target, order, *, emitter=None, reader=None, drain_max=0):
    return DeliveryHarness.build(
        registry, target, order, emitter=emitter, reader=reader, drain_max=drain_max, now_ms=NOW
    )


class CrashAfterRetryCopy(RecordingEmitter):
    """Acknowledges the first retry copy, then the worker dies (the handler goes no further)."""

    def __init__(self) -> None:
        super().__init__()
        self.crashed = False

    async def emit(self, topic, value, **kwargs):
        await super().emit(topic, value, **kwargs)
        if not self.crashed and topic == "wal.seq.retry" and not marker_kind(kwargs.get("headers")):
            self.crashed = True
            raise asyncio.CancelledError  # the process is gone: nothing after the ack runs


async def test_a_crash_after_the_retry_copy_is_out_neither_reorders_nor_blocks_the_key(
    registry, order
):
    target = ScriptedTarget()
    target.fail("id-1", DOWN)  # a quick retry (1 s backoff: straight to the retry topic)
    emitter = CrashAfterRetryCopy()
    harness = build_harness(registry, target, order, emitter=emitter)
    harness.deliverer.handoff_lead_ms = 5_000
    with pytest.raises(asyncio.CancelledError):
        await harness.write(rec(1))
    assert emitter.crashed
    # restarted: the log record of id-1 is behind the commit (its retry copy was acknowledged);
    # the key's next record arrives while the retry copy waits
    assert await harness.write(rec(2)) is Outcome.WAITING
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2"]
    assert order.get("seq", "k1") is None  # not blocked forever


class RetryAgentFirst(RecordingEmitter):
    """The retry agent reads a quick retry copy at once and hands it to the deliverer while the
    handler that sent it is still at work (a backoff of a few ms, the retry topic read at
    once): it waits for the key's turn, then is delivered."""

    harness: DeliveryHarness
    retried: asyncio.Task | None = None

    async def emit(self, topic, value, **kwargs):
        await super().emit(topic, value, **kwargs)
        if topic == "wal.seq.retry" and not marker_kind(kwargs.get("headers")):
            self.harness.seen = len(self.emitted)  # handled here, not again by run_emitted
            clock = self.harness.clock
            clock.advance(max(0, decode_envelope(value).due_ms - clock.now_ms()))
            offset = self.harness.log.append(topic, kwargs["partition"], kwargs["key"], value)
            self.retried = asyncio.create_task(
                self.harness.deliverer.handle(
                    value, kwargs["key"], Source(topic, kwargs["partition"], offset), []
                )
            )
            for _ in range(20):  # it runs as far as it can while its sender is here
                await asyncio.sleep(0)


async def test_a_quick_retry_delivered_before_its_sender_goes_on_leaves_the_key_free(
    registry, order
):
    target = ScriptedTarget()
    target.fail("id-1", DOWN)
    emitter = RetryAgentFirst()
    harness = build_harness(registry, target, order, emitter=emitter)
    emitter.harness = harness
    harness.deliverer.handoff_lead_ms = 5_000
    assert await harness.write(rec(1)) is Outcome.RETRY
    assert emitter.retried is not None
    assert await emitter.retried is Outcome.DELIVERED
    assert delivered(target) == ["id-1"]
    assert order.get("seq", "k1") is None  # not blocked behind a record already delivered
    assert await harness.write(rec(2)) is Outcome.DELIVERED
    assert delivered(target) == ["id-1", "id-2"]


async def test_the_block_is_written_before_the_copy_is_sent(registry, order):
    target = ScriptedTarget()
    target.fail("id-1", DOWN)
    seen = []

    class Watching(RecordingEmitter):
        async def emit(self, topic, value, **kwargs):
            state = order.get("seq", "k1")
            seen.append((topic, state.head if state else None))
            await super().emit(topic, value, **kwargs)

    harness = build_harness(registry, target, order, emitter=Watching())
    await harness.write(rec(1))
    await harness.write(rec(5, delay_ms=60_000, key="k2"))  # a delayed record blocks its key too
    assert seen[0][1] == "id-1"
    assert order.get("seq", "k2").head == "id-5"


async def test_a_stale_replay_of_the_head_reasserts_its_block(harness, target, order):
    target.fail("id-1", DOWN)
    await harness.write(rec(1))
    order.put("seq", "k1", None)  # the block lost (written after the copy by an older worker)
    # the log record read again after a restart: stale (its retry chain moved on)
    value = encode_envelope(rec(1))
    source = Source("wal.seq.log", PART, 0)
    assert await harness.deliverer.handle(value, b"k1", source) is Outcome.DUPLICATE
    assert order.get("seq", "k1").head == "id-1"
    assert await harness.write(rec(2)) is Outcome.WAITING
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2"]


class FlakyLog(MemoryLog):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def read(self, topic, partition, offset):
        if self.failures:
            self.failures -= 1
            raise TimeoutError("log not readable")
        return await super().read(topic, partition, offset)


async def test_an_unreadable_parked_record_is_released_again_with_a_growing_backoff(
    registry, target, order
):
    log = FlakyLog(failures=0)
    harness = build_harness(registry, target, order, reader=log)
    harness.log = log
    target.fail("id-1", DOWN)
    await harness.write(rec(1))
    await harness.write(rec(2))
    log.failures = 7
    markers = []
    for _ in range(50):
        if harness.seen == len(harness.emitter.emitted):
            break
        sent = harness.emitter.emitted[harness.seen]
        if sent.topic == "wal.seq.retry" and marker_kind(sent.headers):
            markers.append((harness.clock.now_ms(), parse_due_header(sent.headers)))
            due = parse_due_header(sent.headers)  # the retry agent holds it until then
            harness.clock.advance(max(0, (due or 0) - harness.clock.now_ms()))
        await _feed_one(harness)
    assert delivered(target) == ["id-1", "id-2"]
    # the first release, then one marker per failed read, each due later than the one before
    waits = [due - at for at, due in markers[1:]]
    assert len(waits) == 7
    assert waits == sorted(waits)
    assert waits[0] >= 50
    assert waits[-1] == 1_000  # doubling, capped
    assert [
        decode_marker(MarkerKind.RELEASE, m.value).tries
        for m in harness.emitter.emitted
        if marker_kind(m.headers)
    ][1:] == list(range(1, 8))


async def _feed_one(harness: DeliveryHarness) -> None:
    """Run the next emitted record through the handler (as ``run_emitted``, one step)."""
    sent = harness.emitter.emitted[harness.seen]
    harness.seen += 1
    topic, headers = sent.topic, list(sent.headers)
    delay = parse_delay_headers(headers) if topic.startswith("walstream.delay") else None
    if delay is not None:
        harness.clock.advance(max(0, delay.due_ms - harness.clock.now_ms()))
        topic, headers = delay.dest_topic, []
    if not topic.endswith(".retry"):
        return
    if marker_kind(headers) is None:
        due = decode_envelope(sent.value).due_ms
        harness.clock.advance(max(0, due - harness.clock.now_ms()))
    assert sent.partition is not None
    offset = harness.log.append(topic, sent.partition, sent.key, sent.value)
    outcome = await harness.deliverer.handle(
        sent.value, sent.key, Source(topic, sent.partition, offset), headers
    )
    harness.outcomes.append(outcome)


async def test_a_release_marker_drains_the_parked_records_inline(registry, target, order):
    harness = build_harness(registry, target, order, drain_max=3)
    target.fail("id-1", DOWN)
    target.fail("id-6", DOWN)  # fails inline: its retry copy goes on from there
    await harness.write(rec(1))
    for n in range(2, 10):
        assert await harness.write(rec(n)) is Outcome.WAITING
    await harness.run_emitted()
    assert delivered(target) == [f"id-{n}" for n in range(1, 10)]
    assert order.table == {}
    markers = [e for e in harness.emitter.emitted if marker_kind(e.headers)]
    # id-1's retry releases id-2 (a marker), whose handler delivers 3, 4, 5 inline (3 at most)
    # and leaves 6 to a marker; 6 fails there, and its retry releases 7, whose handler goes on
    # with 8 and 9
    assert [decode_marker(MarkerKind.RELEASE, m.value).record_id for m in markers] == [
        "id-2",
        "id-6",
        "id-7",
    ]


async def test_a_release_marker_read_again_after_a_crash_resumes_its_drain(registry, order):
    target = ScriptedTarget()
    target.fail("id-1", DOWN)
    harness = build_harness(registry, target, order, drain_max=10)
    await harness.write(rec(1))
    for n in range(2, 6):
        await harness.write(rec(n))

    delivered_then_crash = {"id-3"}
    deliver = target.deliver

    async def crashing(env):
        await deliver(env)
        if env.id in delivered_then_crash:
            delivered_then_crash.clear()
            raise asyncio.CancelledError  # delivered, then the worker died

    target.deliver = crashing  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2", "id-3"]
    # restarted: the marker (for id-2) was never acked, so it is read again
    marker = next(e for e in harness.emitter.emitted if marker_kind(e.headers))
    source = Source("wal.seq.retry", PART, 99)
    await harness.deliverer.handle(marker.value, marker.key, source, list(marker.headers))
    await harness.run_emitted()
    firsts = list(dict.fromkeys(delivered(target)))
    assert firsts == ["id-1", "id-2", "id-3", "id-4", "id-5"]
    assert order.table == {}


async def test_past_max_parked_a_record_is_dead_lettered_naming_the_head(registry, target):
    order = KeyOrder({}, max_parked=2)
    harness = build_harness(registry, target, order)
    target.fail("id-1", DOWN)
    await harness.write(rec(1))
    assert await harness.write(rec(2)) is Outcome.WAITING
    assert await harness.write(rec(3)) is Outcome.WAITING
    assert await harness.write(rec(4)) is Outcome.DEAD
    [dead] = harness.emitter.to("wal.seq.dlq")
    entry = parse_dlq_record(dead.key, dead.value, dead.headers, partition=PART, offset=0)
    assert isinstance(entry, DlqEntry)
    assert entry.error_class == "OrderingOverflow"
    assert "id-1" in entry.reason
    assert "2 records" in entry.reason
    assert decode_envelope(dead.value).id == "id-4"  # the record itself, redrivable
    # read again after a restart: not dead-lettered twice
    again = Source("wal.seq.log", PART, 3)
    value = encode_envelope(rec(4))
    assert await harness.deliverer.handle(value, b"k1", again) is Outcome.WAITING
    assert len(harness.emitter.to("wal.seq.dlq")) == 1
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2", "id-3"]
    assert order.get("seq", "k1") is None
    # redriven once the key moved on: delivered
    assert await harness.write(decode_envelope(dead.value), ns="seq") is Outcome.DELIVERED


async def test_a_key_state_in_the_old_one_value_form_is_read_and_rewritten(harness, target, order):
    first = harness.log.append("wal.seq.log", PART, b"k1", encode_envelope(rec(2)))
    second = harness.log.append("wal.seq.log", PART, b"k1", encode_envelope(rec(3)))
    old = {
        "head": "id-1",
        "since_ms": NOW,
        "held": False,
        "waiting": [["id-2", "wal.seq.log", PART, first], ["id-3", "wal.seq.log", PART, second]],
    }
    order.table[KeyOrder.table_key("seq", "k1")] = orjson.dumps(old)  # as 9e4a94b wrote it
    order.reindex()
    assert order.stats()["seq"].waiting == 2
    # read again after the upgrade: parked already, not twice
    assert (
        await harness.deliverer.handle(
            encode_envelope(rec(3)), b"k1", Source("wal.seq.log", PART, second)
        )
        is Outcome.WAITING
    )
    head = encode_envelope(rec(1)._replace(attempt=1))
    assert (
        await harness.deliverer.handle(head, b"k1", Source("wal.seq.retry", PART, 0))
        is Outcome.DELIVERED
    )
    await harness.run_emitted()
    assert delivered(target) == ["id-1", "id-2", "id-3"]
    assert order.table == {}


async def test_the_blocked_gauges_follow_every_write_and_match_a_rebuild(harness, target, order):
    target.fail("id-1", DOWN)
    target.fail("id-7", DOWN)
    await harness.write(rec(1))
    harness.clock.advance(5)
    await harness.write(rec(7, key="k2"))
    for n in (2, 3, 4):
        await harness.write(rec(n))
    await harness.write(rec(8, key="k2"))
    stats = order.stats()["seq"]
    assert (stats.keys, stats.waiting, stats.oldest_since_ms) == (2, 4, NOW)
    order.reindex()
    assert order.stats()["seq"] == stats
    await harness.run_emitted()
    assert order.stats() == {}


class YieldingChangelog:
    """A changelog whose every write lets other handlers run (as a producer send may)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None, bool]] = []

    async def send(self, key, value, *, durable):
        self.sent.append((key, value, durable))
        await asyncio.sleep(0)


@pytest.mark.parametrize("drain_max", [0, 5])
async def test_parks_racing_releases_keep_the_order_and_leave_nothing(registry, target, drain_max):
    changelog = YieldingChangelog()
    order = KeyOrder({}, changelog)
    harness = build_harness(registry, target, order, drain_max=drain_max)
    target.fail("id-1", DOWN)
    await harness.write(rec(1))
    assert changelog.sent[-1][2] is True  # the block: acknowledged before the retry copy

    async def writes():
        for n in range(2, 60):
            await harness.write(rec(n))
            await asyncio.sleep(0)

    writing = asyncio.create_task(writes())
    for _ in range(200):  # the retry agent meanwhile: id-1's retry, markers
        await asyncio.sleep(0)
        if harness.seen < len(harness.emitter.emitted):
            await _feed_one(harness)
    await writing
    await harness.run_emitted(limit=500)
    assert delivered(target) == [f"id-{n}" for n in range(1, 60)]
    assert order.table == {}
    assert order.stats() == {}


class GatedTarget(ScriptedTarget):
    """As ScriptedTarget, but an attempt of ``gated`` waits until ``gate`` is set."""

    def __init__(self, gated: str) -> None:
        super().__init__()
        self.gated = gated
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def deliver(self, envelope: Envelope) -> None:
        if envelope.id == self.gated:
            self.entered.set()
            await self.gate.wait()
        await super().deliver(envelope)


@pytest.mark.parametrize("stale_fails_with", ["retry", "breaker"])
async def test_a_stale_copy_failing_while_a_later_record_is_in_flight_keeps_write_order(
    registry, order, stale_fails_with
):
    """The chaos test's disorder (seed 13013, k119: record 12 first delivered after 13..18).

    A crash replays a retry copy of id-1, already delivered (its count forgotten, so it is not
    skipped as stale). The retry agent handles it while the deliver agent has id-2, admitted
    with its key free, in flight at the target: the two agents run side by side. The stale copy
    fails first and makes id-1 the key's head; then id-2 fails, and its key had another head, so
    it was not blocked on id-2: id-3 parked behind id-1, ahead of id-2's retry copy, and was
    delivered first. A key's records are handled one at a time across both agents now: the
    stale copy waits until id-2 is done with, then waits behind it."""
    target = GatedTarget("id-2")
    harness = build_harness(registry, target, order)
    assert await harness.write(rec(1)) is Outcome.DELIVERED
    stale = rec(1)._replace(attempt=1)  # a retry copy of id-1 the crash sends again
    if stale_fails_with == "breaker":
        breaker = harness.deliverer.pool.breaker("ep")
    target.fail("id-1", DOWN)
    target.fail("id-2", DOWN)

    in_flight = asyncio.create_task(harness.write(rec(2)))  # the deliver agent
    await target.entered.wait()
    if stale_fails_with == "breaker":  # the stale copy finds the breaker open: deferred
        for _ in range(harness.deliverer.pool.threshold):
            breaker.record_failure(NOW)
    value = encode_envelope(stale)
    offset = harness.log.append("wal.seq.retry", PART, b"k1", value)
    replayed = asyncio.create_task(  # the retry agent, meanwhile
        harness.deliverer.handle(value, b"k1", Source("wal.seq.retry", PART, offset))
    )
    for _ in range(50):  # everything it can do without waiting for the target
        await asyncio.sleep(0)
    if stale_fails_with == "breaker":
        breaker.record_success()
    target.gate.set()
    assert await in_flight is Outcome.RETRY
    await replayed
    assert await harness.write(rec(3)) is Outcome.WAITING
    await harness.run_emitted()

    firsts = list(dict.fromkeys(delivered(target)))
    assert firsts == ["id-1", "id-2", "id-3"]
    assert order.table == {}
    assert len(harness.deliverer.turns) == 0  # no lock kept once nobody holds or waits
