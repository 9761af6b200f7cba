"""Where a keyed record lives, and which worker answers for it (pure).

A producer with Kafka's default partitioner puts a keyed record on partition
``(murmur2(key) & 0x7fffffff) % partitions`` (the Java client's rule, and aiokafka's
``DefaultPartitioner``): the API writes a transaction's records keyed by its txn id's UTF-8
bytes, so ``key_partition`` says which partition of its namespace's mutation topics holds them.
The worker handling that partition writes the transaction's table rows to the same partition of
the table's changelog (Faust writes a row to the partition of the record being handled), so the
worker that owns that changelog partition answers for the transaction (``route``); the others
forward to it. Faust's own router (``app.router.key_store``) hashes the table's key (not the txn
id) and asks the producer's metadata for the topic, which a worker that never wrote the
changelog lacks: it is not used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Answer", "Forward", "Unavailable", "key_partition", "murmur2", "owner_of", "route"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (seed 0x9747b28c), as an unsigned 32-bit integer."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    if tail >= 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def key_partition(key: bytes, partitions: int) -> int:
    """The partition the default partitioner gives ``key`` among ``partitions``.

    Raises:
        ValueError: ``partitions`` is not positive.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be positive, not {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def owner_of(
    distribution: Mapping[str, Mapping[str, Sequence[int]]], topic: str, partition: int
) -> str | None:
    """The URL of the worker whose active partitions (``distribution``: URL -> topic ->
    partitions, Faust's assignor's table metadata) hold ``partition`` of ``topic``; None: no
    worker holds it (a rebalance is going on, or the topic is unknown)."""
    for url, topics in distribution.items():
        if partition in topics.get(topic, ()):
            return url
    return None


def _ident(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "//" in url else f"http://{url}")
    default = 443 if parts.scheme == "https" else 80
    return (parts.hostname or "", parts.port or default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """This worker holds the partition: answer from its table."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Ask the worker at ``url``, which holds the partition."""

    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unavailable:
    """Nobody can answer now (a rebalance or a recovery is going on): try again."""

    reason: str


def route(
    *,
    partition: int,
    held_here: bool,
    ready: bool,
    owner: str | None,
    own_url: str,
    forwarded: bool,
) -> Answer | Forward | Unavailable:
    """Who answers a question about ``partition``.

    Args:
        partition: the partition the question is about.
        held_here: this worker's assignment holds the partition (active).
        ready: this worker's tables are recovered and no rebalance is going on.
        owner: the URL of the worker holding it as the assignment says (``owner_of``).
        own_url: this worker's own URL (Faust's canonical URL).
        forwarded: another worker forwarded the question here (it is forwarded once at most:
            two workers reading different assignments never send it back and forth).
    """
    if held_here:
        if ready:
            return Answer()
        return Unavailable(reason=f"partition {partition} is being recovered here")
    if forwarded:
        return Unavailable(reason=f"partition {partition} was forwarded here but is not held here")
    if owner is None:
        return Unavailable(reason=f"no worker holds partition {partition} now")
    if _ident(owner) == _ident(own_url):
        return Unavailable(reason=f"partition {partition} is assigned here but not held yet")
    return Forward(url=owner)
