"""Cross-region replication of memcached caches (issue 17).

* ``memcached`` — ``MetaConnection``: memcached's meta protocol on one pipelined, kept-alive
  asyncio connection per server.
* ``region`` — ``RegionCache``: a region's servers as one last-write-wins cache (``get``,
  ``apply``, ``apply_many`` of versioned set/delete/touch operations), over the pure item
  format and decisions of ``walstream.core.cache_version``.
"""

from __future__ import annotations

from walstream.replication.memcached import MetaConnection, MetaReply
from walstream.replication.region import ApplyOutcome, ApplyResult, RegionCache

__all__ = ["ApplyOutcome", "ApplyResult", "MetaConnection", "MetaReply", "RegionCache"]
