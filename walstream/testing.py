"""In-memory fakes of walstream's parts, for tests: each is typed against the Protocol the real
part implements, so a test runs the real deliverer (or API, or tool) over them.

* ``RecordingEmitter`` — an ``Emitter`` (``walstream.agents.emit.FaustEmitter`` in the worker):
  keeps what it was given, acknowledged at once.
* ``MemoryLog`` — a ``LogReading`` (``walstream.kafka.log_reader.LogReader``): topics as
  offset-addressed lists.
* ``FakePool`` — a ``TargetLeasing`` (``walstream.targets.pool.TargetPool``): one target for
  every spec, a breaker per endpoint.
* ``ScriptedTarget`` — a ``Target`` (``walstream.targets.memory.MemoryTarget``) failing the
  attempts scripted for a record id.
* ``FakeFaustProducer``/``FakeFaustApp`` — Faust's producer as the emitter sees it.
* ``ChangelogProducer``/``FakeTable`` — a Faust table and its changelog producer, as
  ``TableAttempts`` uses them.
* ``DeliveryHarness`` — the worker's loop over a ``Deliverer``: writes records to a namespace
  log and feeds back everything the handler emits (retry copies, delay hops, markers).
* ``FakeClock`` (``walstream.clock``): a clock that moves only when told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.exceptions import ProducerSendError

from walstream.agents.attempts import Attempts, MemoryAttempts
from walstream.agents.deliver import Deliverer, Emitter, LogReading, Outcome, Source
from walstream.agents.ordering import KeyOrder, marker_kind
from walstream.api.deps import ApiDeps
from walstream.clock import FakeClock
from walstream.core.auth import hash_token
from walstream.core.breaker import BreakerPolicy, CircuitBreaker
from walstream.core.delay import parse_delay_headers
from walstream.core.dlq import entry_headers
from walstream.core.limits import InFlightLimiter
from walstream.errors import TargetRejectedError
from walstream.kafka.log_reader import LoggedRecord, RecordGoneError
from walstream.kafka.producer import LogProducer, MemoryLogProducer
from walstream.namespaces.config import NamespaceConfig, parse_namespace
from walstream.namespaces.registry import NamespaceRegistry, encode_event
from walstream.records import Envelope, Lifecycle, decode_envelope, encode_envelope
from walstream.settings import Settings
from walstream.targets.base import Target
from walstream.targets.memory import MemoryTarget
from walstream.targets.pool import TargetLeasing

__all__ = [
    "API_ROLES",
    "API_TOKENS",
    "NOW_MS",
    "UNKNOWN_TOKEN",
    "ChangelogProducer",
    "DeliveryHarness",
    "Emitted",
    "FakeAdmin",
    "FakeClock",
    "FakeFaustApp",
    "FakeFaustProducer",
    "FakePool",
    "FakeTable",
    "MemoryLog",
    "RawServer",
    "RecordingEmitter",
    "Rfc7230Upstream",
    "ScriptedTarget",
    "api_deps",
    "api_tokens_setting",
    "bearer",
    "envelope",
    "fake_deliverer",
    "http_record",
    "kv_envelope",
    "namespace_definition",
    "registry_of",
    "send_dead_letter",
]

#: The fakes' "now": a fixed wall-clock time (2027-01-15), far from any edge.
NOW_MS = 1_800_000_000_000

Headers = list[tuple[str, bytes]]


# -- records and namespaces ------------------------------------------------------------------


def envelope(
    n: int = 1, *, key: str = "k1", ns: str = "orders", delay_ms: int = 0, now_ms: int = NOW_MS
) -> Envelope:
    """Record ``id-<n>`` of namespace ``ns`` (payload ``{"n": n}``, token ``tok-<n>``, a kafka
    target), written at ``now_ms`` and due ``delay_ms`` later."""
    return Envelope(
        f"id-{n}",
        ns,
        key,
        {"n": n},
        "json",
        {"type": "kafka", "topic": "out"},
        Lifecycle(now_ms + delay_ms, now_ms, delay_ms),
        f"tok-{n}",
        now_ms,
    )


def namespace_definition(
    name: str = "orders", *, base_ms: int = 2_000, cap_ms: int = 60_000, **extra: Any
) -> dict[str, Any]:
    """A namespace definition: 3 attempts, a backoff from ``base_ms`` doubling up to ``cap_ms``
    (no jitter), a kafka target; ``extra`` adds or replaces fields."""
    return {
        "name": name,
        "max_attempts": 3,
        "backoff": {"base_ms": base_ms, "multiplier": 2.0, "cap_ms": cap_ms, "jitter": 0.0},
        "target": {"type": "kafka", "topic": "out"},
        **extra,
    }


def kv_envelope(value: Any, owt: int, token: str, *, key: str = "k1", op: str = "put") -> Envelope:
    """A kv record (table ``items``) of namespace ``ns``: ``op`` of ``value`` at ``key``, written
    at ``owt`` with idempotency token ``token`` (id ``id-<token>``)."""
    return Envelope(
        id=f"id-{token}",
        namespace="ns",
        key=key,
        payload=value,
        payload_encoding="json",
        target={"type": "kv", "table": "items", "key": key, "op": op},
        lifecycle=Lifecycle(deliver_at_ms=owt, original_write_time_ms=owt, delay_ms=0),
        idempotency_token=token,
        created_at_ms=owt,
    )


def http_record(ns: str, url: str, created_at_ms: int) -> tuple[str, bytes]:
    """A keyless record of ``ns`` to the http target ``url``, written and due at
    ``created_at_ms``, its id (a new UUID, the idempotency token too) and its bytes."""
    record_id = str(uuid.uuid4())
    env = Envelope(
        id=record_id,
        namespace=ns,
        key=None,
        payload={"id": record_id},
        payload_encoding="json",
        target={"type": "http", "url": url},
        lifecycle=Lifecycle(created_at_ms, created_at_ms),
        idempotency_token=record_id,
        created_at_ms=created_at_ms,
    )
    return record_id, encode_envelope(env)


def registry_of(*definitions: Mapping[str, Any], first_version: int = 1) -> NamespaceRegistry:
    """A registry holding each namespace definition, applied in turn as versions
    ``first_version``, ``first_version + 1``, ..."""
    registry = NamespaceRegistry()
    for version, definition in enumerate(definitions, first_version):
        registry.apply(*encode_event(parse_namespace(dict(definition)), version))
    return registry


# -- the API ---------------------------------------------------------------------------------


def api_deps(
    settings: Settings,
    registry: NamespaceRegistry,
    producer: LogProducer | None = None,
    *,
    slots: int = 4,
    now_ms: int = NOW_MS,
    **kw: Any,
) -> ApiDeps:
    """The API's collaborators over fakes: ``producer`` (a ``MemoryLogProducer`` unless given),
    ``slots`` requests in flight, a ``FakeClock`` at ``now_ms``, no jitter (``rand`` 0.5)."""
    return ApiDeps(
        settings=settings,
        registry=registry,
        producer=producer if producer is not None else MemoryLogProducer(),
        limiter=InFlightLimiter(slots),
        clock=FakeClock(now_ms),
        rand=lambda: 0.5,
        **kw,
    )


# -- the API's tokens ------------------------------------------------------------------------

#: Bearer tokens of API tests by name, and the role each is admitted with.
API_TOKENS = {
    "admin": "wal_admin-0123456789abcdefghijklmnopqrstuvwxyz0",
    "a_writer": "wal_awriter-0123456789abcdefghijklmnopqrstuvwxyz",
    "a_admin": "wal_aadmin-0123456789abcdefghijklmnopqrstuvwxyz0",
    "b_writer": "wal_bwriter-0123456789abcdefghijklmnopqrstuvwxyz",
    "b_admin": "wal_badmin-0123456789abcdefghijklmnopqrstuvwxyz0",
}
API_ROLES = {
    "admin": "admin",
    "a_writer": "writer:a",
    "a_admin": "namespace-admin:a",
    "b_writer": "writer:b",
    "b_admin": "namespace-admin:b",
}
#: A well-formed token no setting admits.
UNKNOWN_TOKEN = "wal_unknown-0123456789abcdefghijklmnopqrstuvwxy"  # noqa: S105 - a test token


def api_tokens_setting() -> str:
    """The WALSTREAM_TOKENS setting admitting each of ``API_TOKENS`` with its role (hashes)."""
    return " ".join(
        f"{hash_token(API_TOKENS[n])}:{'admin:' if n == 'admin' else API_ROLES[n]}:{n}"
        for n in API_TOKENS
    )


def bearer(who: str | None) -> dict[str, str]:
    """The Authorization header of ``API_TOKENS[who]`` (``unknown``: ``UNKNOWN_TOKEN``; None:
    no header)."""
    if who is None:
        return {}
    token = UNKNOWN_TOKEN if who == "unknown" else API_TOKENS[who]
    return {"Authorization": f"Bearer {token}"}


# -- the emitter -----------------------------------------------------------------------------


@dataclass
class Emitted:
    """One record the emitter was given."""

    topic: str
    value: bytes | None
    key: bytes | None
    partition: int | None
    headers: Headers
    timestamp_ms: int | None


@dataclass
class RecordingEmitter:
    """An ``Emitter`` that keeps every record, acknowledged at once."""

    emitted: list[Emitted] = field(default_factory=list)

    async def emit(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self.emitted.append(
            Emitted(topic, value, key, partition, list(headers or []), timestamp_ms)
        )

    def to(self, topic: str) -> list[Emitted]:
        """What was emitted to ``topic``, in order."""
        return [e for e in self.emitted if e.topic == topic]


# -- the log ---------------------------------------------------------------------------------


@dataclass
class MemoryLog:
    """A ``LogReading``: topics as offset-addressed lists; offsets in ``gone`` were removed."""

    records: dict[tuple[str, int], list[LoggedRecord]] = field(default_factory=dict)
    gone: set[tuple[str, int, int]] = field(default_factory=set)

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> int:
        """Appends a record; returns its offset."""
        part = self.records.setdefault((topic, partition), [])
        part.append(LoggedRecord(key, value))
        return len(part) - 1

    async def read(self, topic: str, partition: int, offset: int) -> LoggedRecord:
        if (topic, partition, offset) in self.gone:
            raise RecordGoneError(f"{topic}[{partition}]@{offset}")
        return self.records[(topic, partition)][offset]


# -- targets and the pool --------------------------------------------------------------------


class ScriptedTarget(MemoryTarget):
    """Fails the attempts scripted for a record id, in turn; delivers the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.script: dict[str, list[Exception]] = {}

    def fail(self, record_id: str, *errors: Exception) -> None:
        self.script.setdefault(record_id, []).extend(errors)

    async def deliver(self, envelope: Envelope) -> None:
        planned = self.script.get(envelope.id)
        if planned:
            self.calls.append(envelope)
            raise planned.pop(0)
        await super().deliver(envelope)


class FakePool:
    """A ``TargetLeasing``: ``target`` for every spec (endpoint ``ep``) but type ``nope`` (no
    deliverer for it), a breaker per endpoint opening after ``threshold`` failures."""

    def __init__(self, target: Target, threshold: int = 100) -> None:
        self.settings = Settings(breaker_base_open_ms=1_000)
        self.target_obj = target
        self.breakers: dict[str, CircuitBreaker] = {}
        self.threshold = threshold

    async def target(
        self, spec: Mapping[str, Any], ns: NamespaceConfig | None = None
    ) -> tuple[Target, str]:
        if spec.get("type") == "nope":
            raise TargetRejectedError("no deliverer", error_class="unknown_target")
        return self.target_obj, "ep"

    @contextlib.asynccontextmanager
    async def lease(
        self, spec: Mapping[str, Any], ns: NamespaceConfig | None = None
    ) -> AsyncIterator[tuple[Target, str]]:
        yield await self.target(spec, ns)

    def breaker(self, endpoint: str) -> CircuitBreaker:
        policy = BreakerPolicy(threshold=self.threshold)
        return self.breakers.setdefault(endpoint, CircuitBreaker(policy))


def fake_deliverer(
    registry: NamespaceRegistry,
    target: Target | None,
    emitter: Emitter,
    clock: FakeClock,
    attempts: Attempts | MemoryAttempts | None = None,
    pool: TargetLeasing | None = None,
    **kw: Any,
) -> Deliverer:
    """A ``Deliverer`` over fakes: ``FakePool(target)`` unless ``pool``, ``MemoryAttempts``
    unless ``attempts``, no jitter (``rand`` 0.5), 4 delay partitions."""
    if pool is None:
        pool = FakePool(target if target is not None else MemoryTarget())
    return Deliverer(
        registry=registry,
        pool=pool,  # type: ignore[arg-type]  # Deliverer names TargetPool, not TargetLeasing
        # MemoryAttempts is a dict: its get() is typed Optional (walstream.agents.attempts)
        attempts=attempts if attempts is not None else MemoryAttempts(),  # type: ignore[arg-type]
        emitter=emitter,
        clock=clock,
        rand=lambda: 0.5,
        delay_partitions=4,
        **kw,
    )


# -- the worker's loop -----------------------------------------------------------------------


class DeliveryHarness:
    """Writes records to a namespace log and runs everything the handler emits back through it
    (retry copies after their backoff, delay hops at their due time, markers) like the worker."""

    def __init__(
        self,
        deliverer: Deliverer,
        emitter: RecordingEmitter,
        log: MemoryLog,
        clock: FakeClock,
        partition: int = 2,
    ) -> None:
        self.deliverer = deliverer
        self.emitter = emitter
        self.log = log
        self.clock = clock
        self.partition = partition
        self.seen = 0
        self.outcomes: list[Outcome] = []

    @classmethod
    def build(
        cls,
        registry: NamespaceRegistry,
        target: Target,
        order: KeyOrder,
        *,
        emitter: RecordingEmitter | None = None,
        reader: LogReading | None = None,
        drain_max: int = 0,
        now_ms: int = NOW_MS,
    ) -> DeliveryHarness:
        """A harness over ``fake_deliverer`` with ``order``, reading parked records from its log
        (or ``reader``)."""
        emitter, log, clock = emitter or RecordingEmitter(), MemoryLog(), FakeClock(now_ms)
        extra: dict[str, Any] = {"drain_max": drain_max} if drain_max else {}
        deliverer = fake_deliverer(
            registry, target, emitter, clock, order=order, reader=reader or log, **extra
        )
        return cls(deliverer, emitter, log, clock)

    async def write(self, env: Envelope, ns: str = "seq") -> Outcome:
        topic = f"wal.{ns}.log"
        key = env.key.encode() if env.key else None
        value = encode_envelope(env)
        offset = self.log.append(topic, self.partition, key, value)
        outcome = await self.deliverer.handle(value, key, Source(topic, self.partition, offset))
        self.outcomes.append(outcome)
        return outcome

    async def run_emitted(self, *, limit: int = 200) -> None:
        """Feed back what was emitted (retry topic, delay tiers) until nothing new is."""
        for _ in range(limit):
            if self.seen == len(self.emitter.emitted):
                return
            sent = self.emitter.emitted[self.seen]
            self.seen += 1
            topic, headers = sent.topic, list(sent.headers)
            delay = parse_delay_headers(headers) if topic.startswith("walstream.delay") else None
            if delay is not None:  # the delay stage: to its destination once due
                self.clock.advance(max(0, delay.due_ms - self.clock.now_ms()))
                topic, headers = delay.dest_topic, []
            if not topic.endswith(".retry"):
                continue  # DLQ entries and deliveries elsewhere stay where they are
            if marker_kind(headers) is None:
                due = decode_envelope(sent.value).due_ms
                self.clock.advance(max(0, due - self.clock.now_ms()))
            if sent.partition is None:
                raise AssertionError(f"a copy to {topic} names no partition")
            offset = self.log.append(topic, sent.partition, sent.key, sent.value)
            outcome = await self.deliverer.handle(
                sent.value, sent.key, Source(topic, sent.partition, offset), headers
            )
            self.outcomes.append(outcome)
        raise AssertionError("emitted records did not settle")


# -- Kafka's admin client ----------------------------------------------------------------------


class FakeAdmin:
    """aiokafka's admin client as ``walstream.kafka.admin`` uses it, over class attributes a
    test sets (subclass it per test): a cluster of ``brokers`` brokers holding the topics
    ``existing``, describing each one's configs as ``described`` (or raising it, an exception);
    ``created`` holds the last topics asked for."""

    brokers = 1
    existing: tuple[str, ...] = ()
    described: Any = ()
    created: list[Any] = []  # noqa: RUF012 - replaced, never mutated

    def __init__(self, **kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return list(self.existing)

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(self.brokers)]}

    async def create_topics(self, new_topics: list[Any]) -> Any:
        type(self).created = list(new_topics)
        return SimpleNamespace(topic_errors=[(t.name, 0, None) for t in new_topics])

    async def describe_configs(self, resources: Any) -> Any:
        if isinstance(self.described, Exception):
            raise self.described
        return [SimpleNamespace(resources=self.described)]


# -- the DLQ on a broker ---------------------------------------------------------------------


async def send_dead_letter(
    producer: Any, ns: str, record_id: str, partition: int, dead_at_ms: int
) -> None:
    """Writes with ``producer`` (an aiokafka producer) the DLQ entry the worker writes when
    keyless record ``record_id`` of ``ns`` dies on ``partition`` (after 3 attempts, HTTP 503)."""
    now = int(time.time() * 1000)
    value = encode_envelope(
        Envelope(
            id=record_id,
            namespace=ns,
            key=None,
            payload={"id": record_id},
            payload_encoding="json",
            target={"type": "kafka", "topic": "o"},
            lifecycle=Lifecycle(deliver_at_ms=now, original_write_time_ms=now),
            idempotency_token=f"tok-{record_id}",
            created_at_ms=now,
        )
    )
    await producer.send_and_wait(
        f"wal.{ns}.dlq",
        value,
        key=record_id.encode(),
        partition=partition,
        headers=entry_headers(
            namespace=ns,
            reason="HTTP 503",
            error_class="http_503",
            source=f"wal.{ns}.log[{partition}]@0",
            attempts=3,
            dead_at_ms=dead_at_ms,
        ),
    )


# -- HTTP servers ----------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio server whose connections all end with it (3.11's ``Server`` leaves them)."""

    def __init__(self, handler: Handler, **kwargs: Any) -> None:
        self.handler = handler
        self.kwargs = kwargs
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("served outside a task")
        self.tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, **self.kwargs)
        return str(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        if self.server is None:
            return
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


class Rfc7230Upstream:
    """A raw HTTP/1.1 server that frames requests as RFC 7230 3.3.3 says (chunked wins over
    Content-Length) and answers each one 200 on the same keep-alive connection."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes]] = []  # (request line, body)
        self.connections = 0

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            line, *fields = head[:-4].split(b"\r\n")
            headers: dict[bytes, bytes] = {}
            for line_field in fields:
                name, _, value = line_field.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                    body += (await reader.readexactly(size + 2))[:-2]
                    if size == 0:
                        break
            else:
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            self.requests.append((line, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()


# -- Faust's producer and tables -------------------------------------------------------------


class FakeFaustProducer:
    """Faust's producer as the emitter sees it: refuses what aiokafka would refuse (a record over
    ``max_request_size``, wrapped in ProducerSendError as Faust does) and fails on demand."""

    def __init__(self, max_request_size: int = 1_000_000) -> None:
        self.max_request_size = max_request_size
        self.failures: list[BaseException] = []
        self.sent: list[tuple[str, bytes | None, bytes | None, Headers]] = []

    async def send_and_wait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Headers | None,
    ) -> None:
        if self.failures:
            raise self.failures.pop(0)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
        if size > self.max_request_size:  # as aiokafka's AIOKafkaProducer.send, under Faust's
            try:
                raise MessageSizeTooLargeError(f"The message is {size} bytes")
            except MessageSizeTooLargeError as exc:
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        self.sent.append((topic, key, value, headers or []))
        return None

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes | None, Headers]]:
        return [s for s in self.sent if s[0] == topic]


class FakeFaustApp:
    """A Faust app as ``FaustEmitter`` uses it: its producer."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer


class _RecordMetadata:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic_partition = (topic, partition)
        self.offset = offset


class ChangelogProducer:
    """Faust's producer for ``TableAttempts``: the first ``failures`` sends' acks fail, then
    they work; ``acked`` holds (topic, key, value, partition) of each acknowledged send."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.acked: list[tuple[str, bytes, bytes | None, int]] = []

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            fut.set_exception(KafkaTimeoutError())
        else:
            self.acked.append((topic, key, value, partition))
            fut.set_result(_RecordMetadata(topic, partition, len(self.acked)))
        return fut

    async def send_and_wait(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
        timestamp: float | None,
        headers: Any,
    ) -> Any:
        return await (await self.send(topic, key, value, partition, timestamp, headers))


class FakeTableData(dict[Any, Any]):
    """A table's data: a dict that notes the changelog offsets persisted."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


class _FakeSerializers:
    def dumps_key(self, typ: Any, key: str, serializer: Any = None) -> bytes:
        return key.encode()

    def dumps_value(self, typ: Any, value: Any, serializer: Any = None) -> bytes:
        return str(value).encode()


class FakeTable:
    """A Faust table as ``TableAttempts`` uses it: its changelog written through ``producer``
    (every key on partition 3), its data a ``FakeTableData``."""

    key_type = value_type = key_serializer = value_serializer = None
    changelog_topic_name = "walstream-attempts-changelog"

    def __init__(self, producer: Any) -> None:
        self.app = type("App", (), {"producer": producer, "serializers": _FakeSerializers()})()
        self.data = FakeTableData()

    def partition_for_key(self, key: Any) -> int:
        return 3


def _checks() -> None:  # pragma: no cover - never run: mypy checks the fakes fit the Protocols
    _emitter: Emitter = RecordingEmitter()
    _reader: LogReading = MemoryLog()
    _pool: TargetLeasing = FakePool(MemoryTarget())
    _target: Target = ScriptedTarget()
