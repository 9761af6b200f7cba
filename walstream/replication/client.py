"""The replicating cache client (issue 17 item 2): what a service uses in place of a plain
memcached client, in its own region.

Each ``set``, ``delete`` and ``touch`` is published to the namespace's log straight from the
client (an acks=all producer, no HTTP hop) as the record WriteToLog would write for it, and
applied to the local region's memcached with the same item format and version as every
region's writer applies it (walstream.core.cache_ops.cache_op), so all regions hold
byte-identical items. ``get`` reads the local region: the exact bytes set, a tombstone a miss.

Versions: a call given no ``original_write_time_ms`` and no ``idempotency_token`` is versioned
after every such call the client made before (the clock's millisecond, or the last version's
when the clock has not moved on or stepped back; a token above the last in one millisecond), so
one client's calls on a key win in the order they were made, in every region.

Order: the log first. The log is the source of truth and the fan-out sends an operation to
every region but its origin, so an operation is applied locally only once the log holds it
(its publish answered TRUE): the local cache never runs ahead of the log, and a FALSE or
UNKNOWN publish changes nothing here. A caller that gets UNKNOWN retries the call with the
result's version (``original_write_time_ms`` and ``idempotency_token``): a copy already on the
log is then a duplicate everywhere (LWW skips an equal version). When the local apply fails
after a TRUE publish (the local memcached down, a lost CAS race every round), the operation
still reaches the other regions, and the client publishes it again as an origin repair (the
same record with ``wal-origin-repair: 1``, core.outbox.origin_repair), which the fan-out copies
to this region only: its writer applies it with LWW like any copy, retrying behind its breaker
while the memcached is away. The call answers TRUE with the local failure in ``local``
(TRANSIENT and its reason) and the repair's publish in ``repair`` (TRUE, or FALSE/UNKNOWN with
``repair_error``: then the local item stays as it was until the next operation on the key); it
never raises after a TRUE publish. What remains: a client that dies between its publish and its
local apply logs no repair (its region keeps the older item until the key's next write), and
the repair is this client's only: a WriteToLog user writes its own region itself and retries
that write itself when it fails (WriteToLog takes no headers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from walstream.core.cache_ops import cache_op
from walstream.core.cache_request import write_request
from walstream.core.cache_version import CacheOp, OpKind, PoisonReason
from walstream.core.ids import new_id
from walstream.core.limits import check_record_size
from walstream.core.lww import Version
from walstream.core.outbox import origin_repair, route_write
from walstream.core.target_policy import ReservedTopics
from walstream.core.validate import parse_write_request
from walstream.errors import (
    BadRequestError,
    Durable,
    WalError,
    WriteUnknownError,
)
from walstream.kafka.producer import KafkaLogProducer, LogProducer
from walstream.namespaces.config import NamespaceConfig
from walstream.replication.region import ApplyOutcome, ApplyResult, RegionCache
from walstream.settings import Settings

__all__ = ["CLIENT_ID", "CacheResult", "ReplicatingCache"]

#: The client id of the client's producer (the broker's logs, quotas and ACLs know it by it).
CLIENT_ID = "walstream-cache-client"

#: Local apply outcomes that settle an operation in the local region (as they settle it in a
#: region writer): anything else is repaired through the log.
_SETTLED = frozenset(
    {ApplyOutcome.APPLIED, ApplyOutcome.STALE, ApplyOutcome.DUPLICATE, ApplyOutcome.ABSENT}
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _too_large(size: int, limit: int) -> str:
    return (
        f"the operation's record is {size} bytes encoded (the value in base64), over "
        f"the log's limit of {limit} (WALSTREAM_PRODUCER_MAX_REQUEST_BYTES "
        "less WALSTREAM_HISTORY_MAX_BYTES and the worker's allowance)"
    )


@dataclass(frozen=True, slots=True)
class CacheResult:
    """What a ``set``, ``delete`` or ``touch`` came to.

    ``durable`` is the publish's answer, as WriteToLog's: TRUE the log holds the operation (it
    reaches every region), FALSE it certainly does not, UNKNOWN it may (retry with
    ``version``). ``error`` says why for FALSE and UNKNOWN. ``local`` is the local apply's
    result (None when the publish was not TRUE: nothing was applied). ``repair`` is the origin
    repair's publish when the local apply failed (see the module's docstring).
    """

    durable: Durable
    version: Version
    record_id: str = ""
    error: WalError | None = None
    local: ApplyResult | None = None
    #: the origin repair's publish, when the local apply failed after a TRUE publish: TRUE the
    #: log holds the repair (the local region gets the operation from its writer), FALSE or
    #: UNKNOWN as ``durable`` (``repair_error`` says why); None: no repair was needed
    repair: Durable | None = None
    repair_error: WalError | None = None


class ReplicatingCache:
    """A replicated namespace's cache, in ``region``.

    Args:
        ns: the namespace (with ``replication``; ``region`` one of its regions).
        region: the region this client runs in (its memcached servers are the local cache).
        bootstrap_servers: the Kafka cluster of the namespace's log.
        publish_timeout_s: a publish's deadline (then UNKNOWN, as WriteToLog's).
        memcached_timeout_s: deadline of one exchange with a local memcached server.
        producer: the log producer (default: a KafkaLogProducer of ours, acks=all).
        region_cache: the local cache (default: a RegionCache of the region's servers).
        clock: now, in ms since the epoch (an operation's version when none is given; a
            value whose expiry has passed is a miss).
        max_record_bytes: the largest record it publishes (default: WriteToLog's, from the
            default settings); a larger one is refused (PayloadTooLargeError, nothing written).

    Raises:
        ValueError: the namespace does not replicate, or has no such region.
    """

    def __init__(
        self,
        ns: NamespaceConfig,
        region: str,
        *,
        bootstrap_servers: str | list[str] = "",
        publish_timeout_s: float = 5.0,
        memcached_timeout_s: float = 2.0,
        producer: LogProducer | None = None,
        region_cache: RegionCache | None = None,
        clock: Callable[[], int] = _now_ms,
        max_record_bytes: int | None = None,
    ) -> None:
        replication = ns.replication
        if replication is None:
            raise ValueError(f"namespace {ns.name} has no replication regions")
        local = replication.region(region)
        if local is None:
            names = ", ".join(replication.region_names)
            raise ValueError(f"{region!r} is not a region of {ns.name} ({names})")
        if producer is None and not bootstrap_servers:
            raise ValueError("bootstrap_servers (the log's cluster) or a producer is required")
        self.ns = ns
        self.region = region
        #: the largest record it publishes: WriteToLog's (walstream.core.limits)
        self.max_record_bytes = (
            max_record_bytes if max_record_bytes is not None else Settings().max_record_bytes
        )
        self._clock = clock
        self._kafka: KafkaLogProducer | None = None
        if producer is None:
            producer = self._kafka = KafkaLogProducer(
                bootstrap_servers, timeout_s=publish_timeout_s, client_id=CLIENT_ID
            )
        self._producer: LogProducer = producer
        self._cache = region_cache or RegionCache(
            [str(server) for server in local.memcached],
            tombstone_ttl_s=replication.tombstone_ttl_s,
            timeout_s=memcached_timeout_s,
            clock=clock,
        )
        # walstream's own topics are no memcached target's destination: the policy never
        # looks them up (walstream.core.target_policy.destination)
        self._reserved = ReservedTopics()
        #: the last version this client made (its calls' versions only grow)
        self._last = Version(0, "")

    async def start(self) -> None:
        """Start the producer (when it is ours)."""
        if self._kafka is not None:
            await self._kafka.start()

    async def close(self) -> None:
        """Stop the producer (when it is ours) and close the memcached connections."""
        try:
            if self._kafka is not None:
                await self._kafka.stop()
        finally:
            await self._cache.close()

    async def __aenter__(self) -> ReplicatingCache:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get(self, key: str) -> bytes | None:
        """The exact bytes last set on ``key`` in the local region; None for a miss, a delete or
        a value past its expiry (its original write time plus its TTL, or its newest touch's).

        Raises:
            ValueError: a key memcached would refuse.
            TargetUnavailableError: the key's server did not answer.
        """
        return await self._cache.get(key.encode())

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: int = 0,
        *,
        original_write_time_ms: int | None = None,
        idempotency_token: str | None = None,
    ) -> CacheResult:
        """Set ``key`` to ``value`` for ``ttl`` seconds (0: no expiry) in every region.

        Raises:
            BadRequestError: what WriteToLog refuses (a bad key or ttl, a value over the
                namespace's max_payload_bytes ...), or a value over the local memcached's
                item size (no region of that size could hold it): nothing was written.
        """
        return await self._run(
            OpKind.SET, key, value, ttl, original_write_time_ms, idempotency_token
        )

    async def delete(
        self,
        key: str,
        *,
        original_write_time_ms: int | None = None,
        idempotency_token: str | None = None,
    ) -> CacheResult:
        """Delete ``key`` in every region (a versioned tombstone: an older set cannot bring it
        back). Raises as :meth:`set`."""
        return await self._run(
            OpKind.DELETE, key, b"", 0, original_write_time_ms, idempotency_token
        )

    async def touch(
        self,
        key: str,
        ttl: int,
        *,
        original_write_time_ms: int | None = None,
        idempotency_token: str | None = None,
    ) -> CacheResult:
        """Give ``key`` a new ``ttl`` (seconds, 0: none) in every region. Raises as :meth:`set`."""
        return await self._run(
            OpKind.TOUCH, key, b"", ttl, original_write_time_ms, idempotency_token
        )

    async def _run(
        self,
        kind: OpKind,
        key: str,
        value: bytes,
        ttl: int,
        original_write_time_ms: int | None,
        idempotency_token: str | None,
    ) -> CacheResult:
        # this client's calls are versioned in the order they are made, whatever the clock does
        # (one millisecond, or a step back): a delete right after a set must win in every region
        now_ms = max(self._clock(), self._last.original_write_time_ms)
        # no token given: the record's fresh id is its token, as WriteToLog makes it
        record_id = new_id(now_ms)
        if original_write_time_ms is None and not idempotency_token:
            if Version(now_ms, record_id) <= self._last:  # ids of one millisecond: random order
                record_id = f"{int(self._last.idempotency_token, 16) + 1:032x}"
            self._last = Version(now_ms, record_id)
        version = Version(
            now_ms if original_write_time_ms is None else original_write_time_ms,
            idempotency_token or record_id,
        )
        op = CacheOp(kind=kind, key=key.encode(), version=version, value=value, ttl_s=ttl)
        # the record WriteToLog writes for the same request: the API's validation and routing
        body = write_request(op, origin_region=self.region)
        env = parse_write_request(
            body,
            self.ns,
            now_ms=now_ms,
            rand=0.0,
            reserved=self._reserved,
            make_id=lambda _: record_id,
        )
        logged = cache_op(env)
        # what the local memcached can never hold, no region of its item size can: refused, as
        # WriteToLog refuses a bad key (published, it would be TRUE and applied nowhere)
        problem = await self._cache.check(logged)
        if problem is not None:
            raise BadRequestError(
                "value" if problem is PoisonReason.VALUE_TOO_LARGE else "key",
                f"memcached of region {self.region} can never store it ({problem.value}: over "
                "its item size, with the key and walstream's version header)"
                if problem is PoisonReason.VALUE_TOO_LARGE
                else f"memcached can never store it ({problem.value})",
            )
        record = route_write(env, self.ns.topics.log, now_ms, "")  # never delayed: the log
        # WriteToLog's limit (a set's value travels in base64)
        check_record_size(
            record.key, record.value, self.max_record_bytes, field="value", message=_too_large
        )
        try:
            await self._producer.send(record)
        except WalError as exc:
            return CacheResult(exc.durable, version, env.id, error=exc)
        try:
            local = await self._cache.apply(logged)
        except (WalError, OSError, ValueError) as exc:  # reported, not raised: the log holds it
            local = ApplyResult(ApplyOutcome.TRANSIENT, f"{type(exc).__name__}: {exc}")
        if local.outcome in _SETTLED:
            return CacheResult("TRUE", version, env.id, local=local)
        # not applied here: the same operation again, for the fan-out to copy to this region
        # only, where the region's writer applies it (retrying while the memcached is away)
        repair: Durable = "TRUE"
        repair_error: WalError | None = None
        try:
            await self._producer.send(origin_repair(record))
        except WalError as exc:
            repair, repair_error = exc.durable, exc
        except Exception as exc:  # noqa: BLE001 - never raised after a TRUE publish
            repair, repair_error = "UNKNOWN", WriteUnknownError(f"{type(exc).__name__}: {exc}")
        return CacheResult(
            "TRUE", version, env.id, local=local, repair=repair, repair_error=repair_error
        )
