"""The deliver handler's failure path: producer errors are classified (retried or dead-lettered,
never raised), records and their history stay within the producer's limit, every way to the DLQ
settles the record's count and its key's turn, and retry limits hold at breaker deferral and
across redrives."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from faust.exceptions import ProducerSendError

from walstream.agents.attempts import MemoryAttempts, TableAttempts
from walstream.agents.deliver import Deliverer
from walstream.agents.emit import FaustEmitter
from walstream.agents.ordering import KeyOrder
from walstream.agents.outcomes import Outcome, Source
from walstream.clock import FakeClock
from walstream.core.breaker import BreakerPolicy, CircuitBreaker
from walstream.core.delay import parse_delay_headers
from walstream.core.dlq import DlqEntry, parse_dlq_record
from walstream.dlq import RedriveProgress, redrive
from walstream.errors import TargetUnavailableError
from walstream.namespaces.registry import NamespaceRegistry
from walstream.records import Envelope, Lifecycle, decode_envelope, encode_envelope
from walstream.settings import Settings
from walstream.targets.memory import MemoryTarget
from walstream.testing import (
    ChangelogProducer,
    DeliveryHarness,
    FakeFaustApp,
    FakeFaustProducer,
    FakePool,
    FakeTable,
    MemoryLog,
    RecordingEmitter,
    ScriptedTarget,
    envelope,
    fake_deliverer,
    namespace_definition,
    registry_of,
)

DOWN = TargetUnavailableError("down", error_class="http_503")
#: The worker's Faust producer refuses requests over this (Faust's default, set explicitly).
WORKER_LIMIT = 1_000_000
#: The default bound of a record's encoded history (WALSTREAM_HISTORY_MAX_BYTES).
HISTORY_BOUND = 16 * 1024
NOW = 1_800_000_000_000
LOG = Source("wal.orders.log", 2, 41)


def record(**changes):
    return envelope(1, now_ms=NOW)._replace(**changes)


def history_bytes(history) -> int:
    """What ``history`` takes in an encoded envelope."""
    return len(orjson.dumps([h._asdict() for h in history])) if history else 0


def test_the_workers_producer_limit_is_the_one_the_api_sizes_records_by():
    settings = Settings()
    assert settings.producer_max_request_bytes == WORKER_LIMIT
    assert settings.history_max_bytes == HISTORY_BOUND
    assert settings.max_record_bytes < WORKER_LIMIT - settings.history_max_bytes


def namespaces(*configs: dict) -> NamespaceRegistry:
    return registry_of(*configs)


ns = namespace_definition


deliverer_for = fake_deliverer


def pool_of(deliverer: Deliverer) -> FakePool:
    assert isinstance(deliverer.pool, FakePool)
    return deliverer.pool


def dlq_entries(emitter: RecordingEmitter, topic: str = "wal.orders.dlq") -> list[DlqEntry]:
    out = []
    for e in emitter.to(topic):
        assert e.partition is not None
        parsed = parse_dlq_record(e.key, e.value, e.headers, partition=e.partition, offset=0)
        assert isinstance(parsed, DlqEntry)
        out.append(parsed)
    return out


def send_error(cause: Exception) -> ProducerSendError:
    try:
        raise cause
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        try:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        except ProducerSendError as wrapped:
            return wrapped


# -- item 2: producer errors ---------------------------------------------------------------


async def test_a_transient_producer_send_error_is_retried_until_the_retry_is_written():
    producer = FakeFaustProducer()
    # the accumulator stayed full (a long outage), then the broker came back
    producer.failures = [send_error(KafkaTimeoutError()), send_error(KafkaConnectionError())]
    target = MemoryTarget()
    target.fail_next(DOWN)
    deliverer = deliverer_for(
        namespaces(ns()), target, FaustEmitter(FakeFaustApp(producer)), FakeClock(NOW)
    )
    outcome = await deliverer.handle(encode_envelope(record()), b"k1", LOG)
    assert outcome is Outcome.RETRY
    [(topic, _, value, _)] = producer.sent
    assert topic == "walstream.delay.timer"
    assert decode_envelope(value).attempt == 1
    assert deliverer.attempts == {"id-1": 1}


async def test_a_permanent_producer_refusal_dead_letters_and_never_raises():
    """A record written to the log by someone else than the API, over the worker's limit: its
    retry copy is refused, and so is its DLQ copy; the DLQ entry goes without the record."""
    producer = FakeFaustProducer()
    target = MemoryTarget()
    target.fail_next(DOWN)
    attempts = MemoryAttempts()
    deliverer = deliverer_for(
        namespaces(ns()), target, FaustEmitter(FakeFaustApp(producer)), FakeClock(NOW), attempts
    )
    huge = record(payload="x" * WORKER_LIMIT)
    outcome = await deliverer.handle(encode_envelope(huge), b"k1", LOG)
    assert outcome is Outcome.DEAD
    [(_, key, value, headers)] = producer.to("wal.orders.dlq")
    assert key == b"id-1"
    assert value is None  # the record stays on the log, where the entry says
    entry = parse_dlq_record(key, value, headers, partition=2, offset=0)
    assert isinstance(entry, DlqEntry)
    assert entry.source == LOG.coordinates()
    assert "wal.orders.log[2]@41" in entry.reason
    assert "MessageSizeTooLargeError" in entry.reason
    assert entry.attempts == 1
    assert attempts == {}
    assert producer.to("walstream.delay.timer") == []


async def test_an_oversize_record_of_a_delay_goes_to_the_dlq_without_its_payload():
    producer = FakeFaustProducer(max_request_size=10_000)
    deliverer = deliverer_for(
        namespaces(ns()), MemoryTarget(), FaustEmitter(FakeFaustApp(producer)), FakeClock(NOW)
    )
    early = record(payload="y" * 20_000, lifecycle=Lifecycle(NOW + 60_000, NOW, 60_000))
    assert await deliverer.handle(encode_envelope(early), b"k1", LOG) is Outcome.DEAD
    [entry] = [
        parse_dlq_record(k, v, h, partition=2, offset=0)
        for _, k, v, h in producer.to("wal.orders.dlq")
    ]
    assert isinstance(entry, DlqEntry)
    assert entry.value is None
    assert entry.error_class == "EmitRefused"


async def test_an_api_max_size_record_failing_up_to_max_attempts_is_always_reproducible():
    """Every record the API accepts can be written again by the worker with its history and
    DLQ headers: a record of the API's largest size, failing until dead with long messages."""
    settings = Settings()
    producer = FakeFaustProducer(WORKER_LIMIT)
    target = MemoryTarget()
    long_error = TargetUnavailableError("\u00e9\n" * 400, error_class="http_503")
    target.always = long_error
    clock = FakeClock(NOW)
    # ~870 bytes an entry: the history reaches its bound after ~19 failures
    registry = namespaces(ns(max_attempts=60, backoff={"base_ms": 10, "cap_ms": 10, "jitter": 0.0}))
    deliverer = deliverer_for(registry, target, FaustEmitter(FakeFaustApp(producer)), clock)
    pool_of(deliverer).threshold = 10_000  # the breaker stays closed: every failure is an attempt
    env = record()
    overhead = len(encode_envelope(env)) + len(b"k1") - len(orjson.dumps(env.payload))
    env = env._replace(payload="z" * (settings.max_record_bytes - overhead - 2))
    assert len(encode_envelope(env)) + 2 == settings.max_record_bytes  # as large as accepted
    source = LOG
    for _ in range(60):
        outcome = await deliverer.handle(encode_envelope(env), b"k1", source)
        if outcome is not Outcome.RETRY:
            break
        _, _, value, _ = producer.sent[-1]
        env = decode_envelope(value)
        assert history_bytes(env.history) <= settings.history_max_bytes
        clock.advance(10)
        source = Source("wal.orders.retry", 2, source.offset + 1)
    assert outcome is Outcome.DEAD
    [(_, _, value, _)] = producer.to("wal.orders.dlq")
    dead = decode_envelope(value)  # the whole record, not an entry without it
    assert dead.attempt == 60
    assert dead.history[0].attempt == 0  # the first failure is kept, and the latest
    assert dead.history[-1].attempt == 59
    assert history_bytes(dead.history) <= settings.history_max_bytes
    assert dead.first_attempt_ms == NOW


async def test_history_is_bounded_in_bytes_at_max_attempts_1000():
    clock = FakeClock(NOW)
    target = MemoryTarget()
    target.always = TargetUnavailableError("m" * 2_000, error_class="http_503")
    emitter = RecordingEmitter()
    registry = namespaces(ns(max_attempts=1000, backoff={"base_ms": 1, "cap_ms": 1, "jitter": 0.0}))
    deliverer = deliverer_for(registry, target, emitter, clock)
    pool_of(deliverer).threshold = 10_000
    env = record()
    sizes = []
    for _ in range(1000):
        outcome = await deliverer.handle(encode_envelope(env), b"k1", LOG)
        last = emitter.emitted[-1]
        env = decode_envelope(last.value)
        sizes.append(len(orjson.dumps([h._asdict() for h in env.history])))
        if outcome is not Outcome.RETRY:
            break
        clock.advance(1)
    assert outcome is Outcome.DEAD
    assert max(sizes) <= HISTORY_BOUND
    assert env.history[0].attempt == 0  # the first failure and the latest ones
    assert env.history[-1].attempt == 999
    assert len(env.history) < 100


# -- item 3: failures outside the target's classification; every DLQ path settles ----------


class UnreachableClusterPool(FakePool):
    """A kafka/wal target whose producer cannot start: the cluster is briefly unreachable."""

    def __init__(self, target, failures: int) -> None:
        super().__init__(target)
        self.failures = failures

    async def target(self, spec, *args):
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("Unable to bootstrap from [('10.0.0.9', 9092)]")
        return await super().target(spec, *args)


async def test_a_target_that_cannot_be_made_now_is_retried_not_dead_lettered():
    emitter, clock, target = RecordingEmitter(), FakeClock(NOW), MemoryTarget()
    deliverer = deliverer_for(
        namespaces(ns()),
        target,
        emitter,
        clock,
        pool=UnreachableClusterPool(target, failures=1),
    )
    assert await deliverer.handle(encode_envelope(record()), b"k1", LOG) is Outcome.RETRY
    assert emitter.to("wal.orders.dlq") == []
    [hop] = emitter.emitted
    again = decode_envelope(hop.value)
    assert (again.attempt, again.history[0].error_class) == (1, "connection")
    clock.advance(again.not_before_ms - NOW)
    retry_source = Source("wal.orders.retry", 2, 0)
    assert await deliverer.handle(hop.value, b"k1", retry_source) is Outcome.DELIVERED
    assert [e.id for e in target.delivered] == ["id-1"]
    assert deliverer.attempts == {}


class BuggyEmitter(RecordingEmitter):
    """Raises an unexpected error (a bug) on its ``fail_at``-th emit to a delay tier."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.tier_emits = 0

    async def emit(self, topic, value, **kwargs):
        if topic.startswith("walstream.delay"):
            self.tier_emits += 1
            if self.tier_emits == self.fail_at:
                raise RuntimeError("a bug")
        await super().emit(topic, value, **kwargs)


async def test_a_catch_all_dead_letter_forgets_the_count_and_passes_the_keys_turn():
    registry = namespaces(
        {
            "name": "seq",
            "ordering": "key",
            "max_attempts": 5,
            "backoff": {"base_ms": 1_000, "multiplier": 2.0, "cap_ms": 10_000, "jitter": 0.0},
            "target": {"type": "kafka", "topic": "out"},
        }
    )
    target, emitter, log, clock = (
        ScriptedTarget(),
        BuggyEmitter(fail_at=2),
        MemoryLog(),
        FakeClock(NOW),
    )
    attempts = MemoryAttempts()
    deliverer = deliverer_for(
        registry, target, emitter, clock, attempts, order=KeyOrder({}), reader=log
    )
    harness = DeliveryHarness(deliverer, emitter, log, clock)
    first = record(id="id-1", namespace="seq", key="k")
    second = record(id="id-2", namespace="seq", key="k", idempotency_token="tok-2")
    target.fail("id-1", DOWN, DOWN)
    assert await harness.write(first, ns="seq") is Outcome.RETRY
    assert attempts == {"id-1": 1}
    assert await harness.write(second, ns="seq") is Outcome.WAITING  # behind id-1
    await harness.run_emitted()  # id-1's retry fails again, and its retry hits the bug
    [entry] = dlq_entries(emitter, "wal.seq.dlq")
    assert (entry.id, entry.error_class) == ("id-1", "InternalError")
    assert attempts == {}  # forgotten: a redrive is not a stale duplicate
    assert [e.id for e in target.delivered] == ["id-2"]  # the key went on


async def test_a_redrive_of_a_record_whose_count_stayed_is_delivered():
    """An entry dead-lettered while its count stayed in the table (by a version that did not
    forget it, or a lost tombstone): its redrive is delivered, not dropped as a duplicate."""
    registry = namespaces(ns())
    target, emitter, clock = MemoryTarget(), RecordingEmitter(), FakeClock(NOW)
    attempts = MemoryAttempts({"id-1": 3})
    deliverer = deliverer_for(registry, target, emitter, clock, attempts)
    dead = record(attempt=3)
    entry = DlqEntry(
        id="id-1",
        namespace="orders",
        reason="internal error",
        error_class="InternalError",
        source=LOG.coordinates(),
        attempts=3,
        dead_at_ms=NOW,
        value=encode_envelope(dead),
        partition=2,
        offset=7,
    )
    producer = RedriveProducer()
    await redrive(producer, registry.get("orders"), [entry], RedriveProgress("orders", 1))
    [(topic, value, key)] = producer.to("wal.orders.log")
    outcome = await deliverer.handle(value, key, Source(topic, 2, 100))
    assert outcome is Outcome.DELIVERED
    assert [e.id for e in target.delivered] == ["id-1"]


class RedriveProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send_and_wait(self, topic, value, key=None, partition=None, headers=None):
        self.sent.append((topic, value, key))

    def to(self, topic):
        return [s for s in self.sent if s[0] == topic]


async def test_a_stale_copy_of_a_redriven_record_is_still_skipped():
    """The count kept per redrive still tells a replayed copy of a redriven record from it."""
    registry = namespaces(ns())
    target, emitter, clock = MemoryTarget(), RecordingEmitter(), FakeClock(NOW)
    deliverer = deliverer_for(registry, target, emitter, clock)
    redriven = record(redrive=1)
    target.fail_next(DOWN)
    assert await deliverer.handle(encode_envelope(redriven), b"k1", LOG) is Outcome.RETRY
    assert await deliverer.handle(encode_envelope(redriven), b"k1", LOG) is Outcome.DUPLICATE


# -- item 7: retry limits at deferral, the budget from the first attempt, redrive -----------


def open_breaker(deliverer: Deliverer, target: MemoryTarget) -> None:
    breaker = deliverer.pool.breaker("ep")
    for _ in range(pool_of(deliverer).threshold):
        breaker.record_failure(NOW)
    assert not breaker.allow(NOW)


async def test_deferral_dead_letters_a_record_whose_attempts_are_used_up():
    registry = namespaces(ns(max_attempts=3))
    target, emitter = MemoryTarget(), RecordingEmitter()
    deliverer = deliverer_for(registry, target, emitter, FakeClock(NOW))
    pool_of(deliverer).threshold = 2
    open_breaker(deliverer, target)
    outcome = await deliverer.handle(encode_envelope(record(attempt=3)), b"k1", LOG)
    assert outcome is Outcome.DEAD
    [entry] = dlq_entries(emitter)
    assert "gave up after 3 attempts" in entry.reason
    assert target.calls == []


async def test_deferral_dead_letters_a_record_whose_budget_the_wait_would_overrun():
    registry = namespaces(ns(retry_budget_ms=5_000))
    target, emitter, clock = MemoryTarget(), RecordingEmitter(), FakeClock(NOW)
    deliverer = deliverer_for(registry, target, emitter, clock)
    pool_of(deliverer).threshold = 2
    long_open = BreakerPolicy(threshold=2, base_open_ms=60_000, max_open_ms=60_000)
    pool_of(deliverer).breakers["ep"] = CircuitBreaker(long_open)
    open_breaker(deliverer, target)
    outcome = await deliverer.handle(encode_envelope(record()), b"k1", LOG)
    assert outcome is Outcome.DEAD
    [entry] = dlq_entries(emitter)
    assert "retry budget of 5000 ms" in entry.reason


async def test_deferrals_stop_once_the_budget_is_spent():
    """Deferred over and over (the breaker opened by other records), a record is dead-lettered
    when its budget is spent rather than cycling on."""
    registry = namespaces(ns(retry_budget_ms=30_000))
    target, emitter, clock = MemoryTarget(), RecordingEmitter(), FakeClock(NOW)
    deliverer = deliverer_for(registry, target, emitter, clock)
    pool_of(deliverer).threshold = 1
    breaker = deliverer.pool.breaker("ep")
    raw: bytes | None = encode_envelope(record())
    outcomes: list[Outcome] = []
    for _ in range(100):
        if breaker.allow(clock.now_ms()):  # another record's probe fails: open again
            breaker.record_failure(clock.now_ms())
        outcome = await deliverer.handle(raw, b"k1", Source("wal.orders.retry", 2, 0))
        outcomes.append(outcome)
        if outcome is not Outcome.DEFERRED:
            break
        raw = emitter.emitted[-1].value
        clock.advance(decode_envelope(raw).not_before_ms - clock.now_ms())
    assert outcomes[-1] is Outcome.DEAD
    assert clock.now_ms() - NOW <= 30_000
    assert target.calls == []


async def test_the_budget_runs_from_the_first_attempt_after_300_failures():
    registry = namespaces(
        ns(
            max_attempts=1000,
            retry_budget_ms=250_000,
            backoff={"base_ms": 1_000, "cap_ms": 1_000, "jitter": 0.0},
        )
    )
    target, emitter, clock = MemoryTarget(), RecordingEmitter(), FakeClock(NOW)
    target.always = DOWN
    deliverer = deliverer_for(registry, target, emitter, clock)
    pool_of(deliverer).threshold = 10_000
    raw: bytes | None = encode_envelope(record())
    for _ in range(300):
        outcome = await deliverer.handle(raw, b"k1", LOG)
        if outcome is not Outcome.RETRY:
            break
        raw = emitter.emitted[-1].value
        clock.advance(decode_envelope(raw).not_before_ms - clock.now_ms())
    assert outcome is Outcome.DEAD
    [entry] = dlq_entries(emitter)
    assert "retry budget of 250000 ms" in entry.reason
    assert 240 <= entry.attempts <= 251
    assert clock.now_ms() - NOW <= 250_000


async def test_a_redriven_record_gets_a_fresh_budget():
    registry = namespaces(ns(max_attempts=10, retry_budget_ms=60_000))
    target, emitter, clock = MemoryTarget(), RecordingEmitter(), FakeClock(NOW)
    deliverer = deliverer_for(registry, target, emitter, clock)
    target.always = DOWN
    raw: bytes | None = encode_envelope(record())
    while await deliverer.handle(raw, b"k1", LOG) is Outcome.RETRY:
        raw = emitter.emitted[-1].value
        clock.advance(decode_envelope(raw).not_before_ms - clock.now_ms())
    [entry] = [e for e in dlq_entries(emitter)]
    assert "retry budget" in entry.reason
    clock.advance(86_400_000)  # an operator redrives it the next day
    producer = RedriveProducer()
    await redrive(producer, registry.get("orders"), [entry], RedriveProgress("orders", 1))
    [(topic, value, key)] = producer.to("wal.orders.log")
    emitter.emitted.clear()
    assert await deliverer.handle(value, key, Source(topic, 2, 500)) is Outcome.RETRY
    target.always = None
    again = emitter.emitted[-1].value
    clock.advance(decode_envelope(again).not_before_ms - clock.now_ms())
    retry_source = Source("wal.orders.retry", 2, 9)
    assert await deliverer.handle(again, key, retry_source) is Outcome.DELIVERED


# -- item 12: an unknown namespace's poison is kept; a failed changelog write is seen --------


async def test_poison_of_an_unknown_namespace_is_parked_not_dropped():
    emitter, clock = RecordingEmitter(), FakeClock(NOW)
    deliverer = deliverer_for(namespaces(ns()), MemoryTarget(), emitter, clock)
    source = Source("wal.gone.log", 1, 5)
    assert await deliverer.handle(b"\xff not json", b"k", source) is Outcome.PARKED
    [hop] = emitter.emitted
    assert hop.value == b"\xff not json"  # kept as it was
    headers = parse_delay_headers(hop.headers)
    assert headers is not None
    assert (headers.dest_topic, headers.dest_partition) == ("wal.gone.log", 1)
    assert headers.due_ms > NOW


async def test_a_failed_attempts_changelog_write_is_written_again_before_the_handler_goes_on():
    producer = ChangelogProducer(failures=1)
    table = FakeTable(producer)
    attempts = TableAttempts(table)
    await attempts.record("id-1", 2)
    assert producer.acked == [("walstream-attempts-changelog", b"id-1", b"2", 3)]
    assert table.data.persisted == {("walstream-attempts-changelog", 3): 1}
    await attempts.forget("id-1")
    assert producer.acked[-1] == ("walstream-attempts-changelog", b"id-1", None, 3)
    assert attempts.get("id-1") == 0


@pytest.mark.parametrize("redrives", [0, 2])
async def test_redrive_counts_fields_stay_off_the_wire_unless_set(redrives):
    env = record(redrive=redrives) if redrives else record()
    wire = orjson.loads(encode_envelope(env))
    assert ("redrive" in wire) is bool(redrives)
    assert "first_attempt_ms" not in wire
    assert decode_envelope(encode_envelope(env)) == env


def test_envelope_type_is_unchanged_for_callers():
    assert Envelope._fields[-2:] == ("first_attempt_ms", "redrive")
