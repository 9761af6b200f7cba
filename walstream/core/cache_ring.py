"""Which memcached server of a region holds a key: rendezvous (highest random weight) hashing.

Every process, in every region, must send a key to the same server of a given list, whatever
the list's order, so the weight is blake2b over the server's ``host:port`` and the key (never
Python's ``hash()``, which is salted per process). Removing a server moves only its own keys;
adding one takes about 1/n of the keys from the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["server_for"]


def _weight(server: str, key: bytes) -> int:
    # NUL separates the two: a host:port never holds one
    digest = hashlib.blake2b(b"%s\0%s" % (server.encode(), key), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def server_for(key: bytes, servers: Sequence[str]) -> str:
    """The server (``host:port``) of ``servers`` that holds ``key``.

    Raises:
        ValueError: no servers.
    """
    if not servers:
        raise ValueError("a region needs at least one memcached server")
    return max(servers, key=lambda server: (_weight(server, key), server))
