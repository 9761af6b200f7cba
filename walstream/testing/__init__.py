"""In-memory fakes of walstream's parts, for tests: each is typed against the Protocol the real
part implements, so a test runs the real deliverer (or API, or tool) over them. Nothing in
walstream imports this package.

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

By module: ``records`` (envelopes, namespace definitions, registries), ``deliver`` (the
deliverer's collaborators and ``DeliveryHarness``), ``faust`` (Faust's producer and tables),
``api`` (``api_deps`` and the API tests' tokens), ``kafka`` (``FakeAdmin``, the DLQ entry the
worker writes), ``servers`` (HTTP on loopback: an aiohttp app served for a block, raw
servers, raw exchanges).
"""

from __future__ import annotations

from walstream.clock import FakeClock
from walstream.testing.api import (
    API_ROLES,
    API_TOKENS,
    UNKNOWN_TOKEN,
    api_deps,
    api_tokens_setting,
    bearer,
)
from walstream.testing.deliver import (
    DeliveryHarness,
    Emitted,
    FakePool,
    MemoryLog,
    RecordingEmitter,
    ScriptedTarget,
    fake_deliverer,
)
from walstream.testing.faust import ChangelogProducer, FakeFaustApp, FakeFaustProducer, FakeTable
from walstream.testing.kafka import (
    CommitRecorder,
    FakeAdmin,
    HeldFirstProducer,
    TierBatch,
    TierClient,
    TierCluster,
    TierRecord,
    send_dead_letter,
)
from walstream.testing.records import (
    NOW_MS,
    envelope,
    http_record,
    keyless_envelope,
    kv_envelope,
    namespace_definition,
    registry_of,
)
from walstream.testing.servers import (
    RawAnswer,
    RawServer,
    Rfc7230Upstream,
    parse_head,
    raw_exchange,
    serve_app,
)

__all__ = [
    "API_ROLES",
    "API_TOKENS",
    "NOW_MS",
    "UNKNOWN_TOKEN",
    "ChangelogProducer",
    "CommitRecorder",
    "DeliveryHarness",
    "Emitted",
    "FakeAdmin",
    "FakeClock",
    "FakeFaustApp",
    "FakeFaustProducer",
    "FakePool",
    "FakeTable",
    "HeldFirstProducer",
    "MemoryLog",
    "RawAnswer",
    "RawServer",
    "RecordingEmitter",
    "Rfc7230Upstream",
    "ScriptedTarget",
    "TierBatch",
    "TierClient",
    "TierCluster",
    "TierRecord",
    "api_deps",
    "api_tokens_setting",
    "bearer",
    "envelope",
    "fake_deliverer",
    "http_record",
    "keyless_envelope",
    "kv_envelope",
    "namespace_definition",
    "parse_head",
    "raw_exchange",
    "registry_of",
    "send_dead_letter",
    "serve_app",
]
