"""A namespace's cross-region replication of a memcached cache (issue 17 item 1): its
``replication`` table, validated (pure; no I/O). walstream.namespaces.config holds it."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from walstream.core.target_policy import cluster_id
from walstream.core.targets import (
    MEMCACHED_MAX_TTL_S,
    REGION_NAME,
    parse_bootstrap_servers,
)
from walstream.errors import BadRequestError, ConfigError

__all__ = [
    "DEFAULT_MAX_LAG_S",
    "MemcachedServer",
    "Region",
    "Replicate",
    "Replication",
    "parse_replication",
]


class Replicate(Enum):
    """What a replicated set does in the other regions: ``value`` sets the same value there;
    ``invalidate`` (cache-aside users) deletes the key there instead."""

    VALUE = "value"
    INVALIDATE = "invalidate"


@dataclass(frozen=True, slots=True)
class MemcachedServer:
    """One memcached server of a region: a host name (lower case), an IPv4 address or an IPv6
    address (kept without its brackets), and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Region:
    """A region a namespace's cache lives in: its memcached servers (keys are spread over them by
    a stable hash) and the Kafka cluster of its topic (None: the deployment's own)."""

    name: str
    memcached: tuple[MemcachedServer, ...]
    bootstrap_servers: str | None = None

    def to_json(self) -> dict[str, Any]:
        servers: dict[str, Any] = {"memcached": [str(s) for s in self.memcached]}
        if self.bootstrap_servers is not None:
            servers["bootstrap_servers"] = self.bootstrap_servers
        return servers


#: The longest replication lag a namespace allows by default (``replication.max_lag_s``).
DEFAULT_MAX_LAG_S = 86_400


@dataclass(frozen=True, slots=True, kw_only=True)
class Replication:
    """A namespace's cross-region replication of a memcached cache (issue 17): its regions (two
    or more, by name), what a set does elsewhere, and how long a delete's tombstone lives.

    A delete leaves a versioned tombstone so that an older set arriving late cannot bring the
    value back; it must outlive the longest lag allowed, so ``tombstone_ttl_s > max_lag_s``.
    """

    regions: tuple[Region, ...]
    replicate: Replicate = Replicate.VALUE
    max_lag_s: int = DEFAULT_MAX_LAG_S
    tombstone_ttl_s: int = 2 * DEFAULT_MAX_LAG_S

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(region.name for region in self.regions)

    def region(self, name: str) -> Region | None:
        """The region called ``name``, or None."""
        return next((region for region in self.regions if region.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "replicate": self.replicate.value,
            "regions": {region.name: region.to_json() for region in self.regions},
            "max_lag_s": self.max_lag_s,
            "tombstone_ttl_s": self.tombstone_ttl_s,
        }


_REPLICATION = "replication"
_HOST_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_REPLICATE = tuple(member.value for member in Replicate)


def parse_replication(obj: Any) -> Replication | None:
    """A namespace's ``replication`` table, or None when it has none.

    Raises:
        ConfigError: naming the field (``replication.regions.<r>.memcached[0]`` ...).
    """
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConfigError(_REPLICATION, obj, "must be a table/object")
    unknown = sorted(set(obj) - {"replicate", "regions", "max_lag_s", "tombstone_ttl_s"})
    if unknown:
        raise ConfigError(f"{_REPLICATION}.{unknown[0]}", obj[unknown[0]], "unknown option")
    replicate = obj.get("replicate", Replicate.VALUE.value)
    if replicate not in _REPLICATE:  # a tuple: a list or a table is refused, not a TypeError
        raise ConfigError(f"{_REPLICATION}.replicate", replicate, "must be value | invalidate")
    max_lag = _seconds(obj, "max_lag_s", DEFAULT_MAX_LAG_S, MEMCACHED_MAX_TTL_S - 1)
    ttl = _seconds(
        obj, "tombstone_ttl_s", min(2 * max_lag, MEMCACHED_MAX_TTL_S), MEMCACHED_MAX_TTL_S
    )
    if ttl <= max_lag:
        raise ConfigError(
            f"{_REPLICATION}.tombstone_ttl_s",
            ttl,
            f"must be > replication.max_lag_s ({max_lag}): a delete's tombstone must outlive "
            "the longest lag, or an older set arriving late brings the value back",
        )
    return Replication(
        regions=_parse_regions(obj.get("regions")),
        replicate=Replicate(replicate),
        max_lag_s=max_lag,
        tombstone_ttl_s=ttl,
    )


def _seconds(obj: Mapping[str, Any], key: str, default: int, hi: int) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= hi:
        raise ConfigError(
            f"{_REPLICATION}.{key}", value, f"must be an integer of seconds in 1..{hi}"
        )
    return value


def _parse_regions(obj: Any) -> tuple[Region, ...]:
    field = f"{_REPLICATION}.regions"
    if not isinstance(obj, dict) or len(obj) < 2:
        raise ConfigError(field, obj, "must be a table/object of two regions or more, by name")
    regions = []
    seen: dict[MemcachedServer, str] = {}  # a server belongs to one region
    for name in sorted(obj):
        if not isinstance(name, str) or not REGION_NAME.fullmatch(name):
            raise ConfigError(
                f"{field}.{name}", name, f"a region name must match {REGION_NAME.pattern}"
            )
        region = _parse_region(f"{field}.{name}", name, obj[name])
        for index, server in enumerate(region.memcached):
            if server in seen:
                raise ConfigError(
                    f"{field}.{name}.memcached[{index}]",
                    str(server),
                    f"is already a memcached server of region {seen[server]}",
                )
            seen[server] = name
        regions.append(region)
    return tuple(regions)


def _parse_region(field: str, name: str, obj: Any) -> Region:
    if not isinstance(obj, dict):
        raise ConfigError(field, obj, "must be a table/object with memcached servers")
    unknown = sorted(set(obj) - {"memcached", "bootstrap_servers"})
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}", obj[unknown[0]], "unknown region option")
    servers = obj.get("memcached")
    if not isinstance(servers, list) or not servers:
        raise ConfigError(
            f"{field}.memcached", servers, "must be a non-empty list of host:port servers"
        )
    parsed: list[MemcachedServer] = []
    for index, entry in enumerate(servers):
        server = _memcached_server(f"{field}.memcached[{index}]", entry)
        if server in parsed:
            raise ConfigError(
                f"{field}.memcached[{index}]", entry, f"is listed twice ({field}.memcached)"
            )
        parsed.append(server)
    bootstrap = obj.get("bootstrap_servers")
    if bootstrap is not None:
        try:  # as a kafka target's bootstrap_servers, and naming a host as allowed_targets.kafka
            bootstrap = parse_bootstrap_servers(bootstrap, f"{field}.bootstrap_servers")
        except BadRequestError as exc:
            raise ConfigError(exc.field, bootstrap, exc.reason) from exc
        if not cluster_id(bootstrap):
            raise ConfigError(f"{field}.bootstrap_servers", bootstrap, "names no bootstrap server")
    return Region(name=name, memcached=tuple(parsed), bootstrap_servers=bootstrap)


def _memcached_server(field: str, entry: Any) -> MemcachedServer:
    """``host:port`` (``[v6]:port`` for an IPv6 address), the host lower case."""
    if not isinstance(entry, str):
        raise ConfigError(field, entry, "must be a host:port string")
    host, sep, port = entry.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or not 1 <= int(port) <= 65_535:
        raise ConfigError(field, entry, "must be host:port with a port in 1..65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(field, entry, "holds no IPv6 address in its brackets") from None
        return MemcachedServer(address.compressed, int(port))
    if ":" in host:
        raise ConfigError(field, entry, "an IPv6 address goes in brackets: [::1]:11211")
    host = host.lower()
    labels = host.split(".")
    if labels[-1].isdigit():  # a dotted number is an IPv4 address, or no host at all
        try:
            return MemcachedServer(str(ipaddress.IPv4Address(host)), int(port))
        except ValueError:
            raise ConfigError(field, entry, "holds no IPv4 address") from None
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(field, entry, "must name a host name or an IP address")
    return MemcachedServer(host, int(port))
