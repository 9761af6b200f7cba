"""Which endpoints a namespace's records may make a worker connect to (pure; no I/O).

A record may carry its own target, so without a limit any writer could make the workers open
connections (and keep a client, a pool and a breaker) to any host or Kafka cluster it names.
A namespace's ``allowed_targets`` lists the http origins and Kafka clusters its records may
name; by default only its own target's origin or cluster. The home cluster (a kafka or wal
target without ``bootstrap_servers``) is always allowed: the worker is connected to it anyway.
kv targets name no endpoint (the worker's own database). The API refuses a write naming
anything else (403) and the worker re-checks before each attempt (a record produced straight
into the log is dead-lettered, and nothing is connected to).

Config shape (the namespace's ``allowed_targets``)::

    {"http": ["https://hooks.example.com", "http://10.0.0.7:8080"],
     "kafka": ["b1:9092,b2:9092"]}

An http entry is an origin (scheme, host, optional port; no path). A kafka entry is one
cluster's bootstrap list; a record's ``bootstrap_servers`` must be the same list (order, case
and spaces aside).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from walstream.errors import BadRequestError

__all__ = [
    "TargetNotAllowedError",
    "TargetPolicy",
    "cluster_id",
    "origin_of",
    "parse_allowed_targets",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetNotAllowedError(BadRequestError):
    """The target names an endpoint the namespace's ``allowed_targets`` does not list."""

    status = 403


@lru_cache(maxsize=4096)
def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of an http(s) URL (host lower case, default port filled in), or
    None for a URL with no such origin."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port or _DEFAULT_PORTS[scheme]}"


@lru_cache(maxsize=4096)
def cluster_id(bootstrap_servers: str) -> str:
    """One spelling of a bootstrap list: hosts lower case, sorted, comma-joined, no spaces."""
    hosts = {h.strip().lower() for h in bootstrap_servers.split(",") if h.strip()}
    return ",".join(sorted(hosts))


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetPolicy:
    """The endpoints a namespace's records may name."""

    http_origins: frozenset[str] = frozenset()
    kafka_clusters: frozenset[str] = frozenset()

    def check(self, spec: Mapping[str, Any], field: str = "target") -> None:
        """Refuse a target naming an endpoint outside the policy.

        Raises:
            TargetNotAllowedError: naming ``<field>.url`` or ``<field>.bootstrap_servers``.
        """
        kind = spec.get("type")
        if kind == "http":
            url = str(spec.get("url", ""))
            origin = origin_of(url)
            if origin is None or origin not in self.http_origins:
                raise TargetNotAllowedError(
                    f"{field}.url",
                    f"origin {origin or url!r} is not in the namespace's allowed_targets.http",
                )
        elif kind in ("kafka", "wal"):
            servers = spec.get("bootstrap_servers")
            if servers and cluster_id(str(servers)) not in self.kafka_clusters:
                raise TargetNotAllowedError(
                    f"{field}.bootstrap_servers",
                    f"cluster {servers!r} is not in the namespace's allowed_targets.kafka",
                )

    def with_target(self, spec: Mapping[str, Any] | None) -> TargetPolicy:
        """This policy plus the endpoint of ``spec`` (a namespace's own target)."""
        if spec is None:
            return self
        kind = spec.get("type")
        if kind == "http" and (origin := origin_of(str(spec.get("url", "")))) is not None:
            return TargetPolicy(
                http_origins=self.http_origins | {origin}, kafka_clusters=self.kafka_clusters
            )
        if kind in ("kafka", "wal") and spec.get("bootstrap_servers"):
            return TargetPolicy(
                http_origins=self.http_origins,
                kafka_clusters=self.kafka_clusters | {cluster_id(str(spec["bootstrap_servers"]))},
            )
        return self

    def to_json(self) -> dict[str, list[str]]:
        return {"http": sorted(self.http_origins), "kafka": sorted(self.kafka_clusters)}


def _strings(field: str, value: Any) -> Iterable[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequestError(field, "must be a list of non-empty strings")
    return value


def parse_allowed_targets(obj: Any, field: str = "allowed_targets") -> TargetPolicy:
    """A TargetPolicy from a namespace's ``allowed_targets`` object.

    Raises:
        BadRequestError: naming the field (``allowed_targets.http`` …).
    """
    if not isinstance(obj, dict):
        raise BadRequestError(field, "must be an object with 'http' and/or 'kafka' lists")
    unknown = sorted(set(obj) - {"http", "kafka"})
    if unknown:
        raise BadRequestError(f"{field}.{unknown[0]}", "is not a kind of allowed target")
    origins = set()
    for entry in _strings(f"{field}.http", obj.get("http", [])):
        origin = origin_of(entry)
        if origin is None or urlsplit(entry).path not in ("", "/"):
            raise BadRequestError(
                f"{field}.http", f"{entry!r} is not an origin (http(s)://host[:port])"
            )
        origins.add(origin)
    clusters = set()
    for entry in _strings(f"{field}.kafka", obj.get("kafka", [])):
        cluster = cluster_id(entry)
        if not cluster:
            raise BadRequestError(f"{field}.kafka", f"{entry!r} names no bootstrap server")
        clusters.add(cluster)
    return TargetPolicy(http_origins=frozenset(origins), kafka_clusters=frozenset(clusters))
