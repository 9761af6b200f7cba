"""Cross-region replication of memcached caches (issue 17).

* ``memcached`` — ``MetaConnection``: memcached's meta protocol on one pipelined, kept-alive
  asyncio connection per server.
* ``region`` — ``RegionCache``: a region's servers as one last-write-wins cache (``get``,
  ``apply``, ``apply_many`` of versioned set/delete/touch operations), over the pure item
  format and decisions of ``walstream.core.cache_version``.
* ``client`` — ``ReplicatingCache``: what a service uses in place of a plain memcached client
  (set, delete, touch published to the namespace's log, then applied locally; get).
"""

from __future__ import annotations

from walstream.replication.client import CacheResult, ReplicatingCache
from walstream.replication.memcached import MetaConnection, MetaReply
from walstream.replication.region import ApplyOutcome, ApplyResult, RegionCache

__all__ = [
    "ApplyOutcome",
    "ApplyResult",
    "CacheResult",
    "MetaConnection",
    "MetaReply",
    "RegionCache",
    "ReplicatingCache",
]
