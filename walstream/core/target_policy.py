"""Which targets a namespace's records may name (pure; no I/O).

A record may carry its own target, so without a limit any writer could make the workers write
anywhere they can reach: walstream's own topics (the control topic rewrites other namespaces),
other namespaces' logs, any table of the kv database, any host. A namespace's policy says what
its records may name:

* its own ``target``'s destination, always (its http origin, its Kafka cluster and topic, its kv
  table, its wal namespace). Keys, paths, headers and kv ``op`` vary freely within it;
* record-level targets, a destination other than that, only when the namespace lists
  ``allowed_targets`` (off by default), and only the destinations listed there;
* never walstream's own topics (``ReservedTopics``, built by walstream.topology from the single
  source of names: the control topic, the table changelogs and agent topics, the delay tiers,
  the poison topic, ``wal.*`` and every namespace's log, retry and DLQ topic, Kafka's ``__*``),
  whatever the lists say and on any cluster.

The API refuses a write naming anything else (403 naming the field) and the worker re-checks
before each attempt against the namespace's current policy (a record produced straight into a
log is dead-lettered, and nothing is connected to or run). Verdicts for allowed destinations are
kept per policy object, which is per namespace version.

Config shape (the namespace's ``allowed_targets``)::

    {"http": ["https://hooks.example.com", "http://10.0.0.7:8080"],
     "kafka": ["b1:9092,b2:9092"],
     "kafka_topics": ["orders.out", "team-a.*"],
     "kv_tables": ["profiles", "team_a_*"],
     "wal": ["orders-eu"]}

An http entry is an origin (scheme, host, optional port; no path). A kafka entry is one
cluster's bootstrap list; a record's ``bootstrap_servers`` must be the same list (order, case
and spaces aside); the home cluster (no ``bootstrap_servers``) needs no entry. ``kafka_topics``
and ``kv_tables`` entries are names, or prefixes ending in ``*``; they hold on every allowed
cluster. ``wal`` lists the namespaces a wal target may forward to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from walstream.core.targets import NAMESPACE_NAME
from walstream.errors import BadRequestError, TargetNotAllowedError

__all__ = [
    "IDENTIFIER",
    "ReservedTopics",
    "TargetPolicy",
    "cluster_id",
    "destination",
    "origin_of",
    "parse_allowed_targets",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: A kv table name: what the kv targets accept and quote (no quote, space or punctuation).
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: Verdicts kept per policy (destinations found allowed); past this the memory starts over.
_SEEN_MAX = 4096
_OFF = "record-level targets are off for this namespace (it lists no allowed_targets)"

#: A destination: what one target writes to, told apart from the options that vary per record
#: (``("http", origin)``, ``("kafka", cluster, topic)``, ``("kv", table)``,
#: ``("wal", cluster, namespace)``; cluster "" is the home cluster).
Destination = tuple[str, ...]


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


def destination(spec: Mapping[str, Any]) -> Destination | None:
    """What ``spec`` writes to (None: a target type without one, refused elsewhere)."""
    kind = spec.get("type")
    if kind == "http":
        url = str(spec.get("url", ""))
        return ("http", origin_of(url) or url)
    if kind == "kafka" or kind == "wal":
        servers = spec.get("bootstrap_servers")
        cluster = cluster_id(str(servers)) if servers else ""
        name = spec.get("topic" if kind == "kafka" else "namespace", "")
        return (kind, cluster, str(name))
    if kind == "kv":
        return ("kv", str(spec.get("table", "")))
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservedTopics:
    """walstream's own topics: no target may name one (walstream.topology.reserved_topics)."""

    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    #: The namespace owning a topic (the registry's ``namespace_of``): any namespace's topics,
    #: whatever they are named.
    namespace_of: Callable[[str], str | None] | None = None

    def covers(self, topic: str) -> bool:
        if topic in self.names or topic.startswith(self.prefixes):
            return True
        return self.namespace_of is not None and self.namespace_of(topic) is not None


def _matches(name: str, names: frozenset[str], prefixes: tuple[str, ...]) -> bool:
    return name in names or (bool(prefixes) and name.startswith(prefixes))


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetPolicy:
    """What a namespace's records may name."""

    http_origins: frozenset[str] = frozenset()
    kafka_clusters: frozenset[str] = frozenset()
    kafka_topics: frozenset[str] = frozenset()
    kafka_topic_prefixes: tuple[str, ...] = ()
    kv_tables: frozenset[str] = frozenset()
    kv_table_prefixes: tuple[str, ...] = ()
    wal_namespaces: frozenset[str] = frozenset()
    #: Whether records may name a destination other than the namespace's own target (on when
    #: the namespace lists ``allowed_targets``).
    record_targets: bool = False
    #: The namespace's own target's destination.
    own: Destination | None = None
    _seen: dict[Destination, bool] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def check(
        self, spec: Mapping[str, Any], field: str = "target", *, reserved: ReservedTopics
    ) -> None:
        """Refuse a target the namespace may not name.

        Args:
            spec: the target (validated by walstream.core.targets at the API; maybe crafted
                when read from a topic).
            field: the request field the target came in, for the error.
            reserved: walstream's own topics on this deployment.

        Raises:
            TargetNotAllowedError: naming ``<field>``, ``<field>.url``, ``.topic``, ``.table``,
                ``.namespace`` or ``.bootstrap_servers``; the reason names ``allowed_targets``.
        """
        kind = spec.get("type")
        if kind == "kafka":
            topic = str(spec.get("topic", ""))
            if reserved.covers(topic):
                raise TargetNotAllowedError(
                    f"{field}.topic",
                    f"{topic!r} is one of walstream's own topics: no target may name it, "
                    "whatever the namespace's allowed_targets say",
                )
        elif kind == "kv" and not IDENTIFIER.fullmatch(str(spec.get("table", ""))):
            raise TargetNotAllowedError(
                f"{field}.table",
                f"must match {IDENTIFIER.pattern} (the namespace's allowed_targets.kv_tables "
                "never allow another name)",
            )
        dest = destination(spec)
        if dest is None or dest == self.own or dest in self._seen:
            return
        self._check_listed(dest, field)
        if not self.record_targets:  # the lists hold only the own target's parts: unreachable
            raise TargetNotAllowedError(field, f"names {_describe(dest)}: {_OFF}")
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()
        self._seen[dest] = True

    def _refuse(self, field: str, what: str, listed: str) -> TargetNotAllowedError:
        if not self.record_targets:
            return TargetNotAllowedError(
                field, f"{what} is not the namespace's own target's: {_OFF}"
            )
        return TargetNotAllowedError(
            field, f"{what} is not in the namespace's allowed_targets.{listed}"
        )

    def _check_listed(self, dest: Destination, field: str) -> None:
        kind = dest[0]
        if kind == "http":
            if dest[1] not in self.http_origins:
                raise self._refuse(f"{field}.url", f"origin {dest[1]!r}", "http")
            return
        if kind in ("kafka", "wal") and dest[1] and dest[1] not in self.kafka_clusters:
            raise self._refuse(f"{field}.bootstrap_servers", f"cluster {dest[1]!r}", "kafka")
        if kind == "kafka" and not _matches(dest[2], self.kafka_topics, self.kafka_topic_prefixes):
            raise self._refuse(f"{field}.topic", f"topic {dest[2]!r}", "kafka_topics")
        if kind == "kv" and not _matches(dest[1], self.kv_tables, self.kv_table_prefixes):
            raise self._refuse(f"{field}.table", f"table {dest[1]!r}", "kv_tables")
        if kind == "wal" and dest[2] not in self.wal_namespaces:
            raise self._refuse(f"{field}.namespace", f"namespace {dest[2]!r}", "wal")

    def with_target(self, spec: Mapping[str, Any] | None) -> TargetPolicy:
        """This policy plus the namespace's own target ``spec`` (always allowed)."""
        if spec is None:
            return self
        dest = destination(spec)
        if dest is None:
            return self
        kind = dest[0]
        policy = self
        if kind == "http" and origin_of(dest[1]) is not None:
            policy = replace(policy, http_origins=policy.http_origins | {dest[1]})
        if kind in ("kafka", "wal") and dest[1]:
            policy = replace(policy, kafka_clusters=policy.kafka_clusters | {dest[1]})
        if kind == "kafka":
            policy = replace(policy, kafka_topics=policy.kafka_topics | {dest[2]})
        if kind == "kv":
            policy = replace(policy, kv_tables=policy.kv_tables | {dest[1]})
        if kind == "wal":
            policy = replace(policy, wal_namespaces=policy.wal_namespaces | {dest[2]})
        return replace(policy, own=dest)

    def to_json(self) -> dict[str, list[str]]:
        """The ``allowed_targets`` object (lists past issue 13's two only when not empty: a
        process that predates them still reads the event)."""
        shown: dict[str, list[str]] = {
            "http": sorted(self.http_origins),
            "kafka": sorted(self.kafka_clusters),
        }
        extra = {
            "kafka_topics": _listed(self.kafka_topics, self.kafka_topic_prefixes),
            "kv_tables": _listed(self.kv_tables, self.kv_table_prefixes),
            "wal": sorted(self.wal_namespaces),
        }
        return shown | {key: value for key, value in extra.items() if value}


def _listed(names: frozenset[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(names) + sorted(f"{p}*" for p in prefixes)


def _describe(dest: Destination) -> str:
    kind = dest[0]
    where = f" on {dest[1]}" if kind in ("kafka", "wal") and dest[1] else ""
    if kind == "http":
        return f"http origin {dest[1]!r}"
    if kind == "kafka":
        return f"kafka topic {dest[2]!r}{where}"
    if kind == "kv":
        return f"kv table {dest[1]!r}"
    return f"wal namespace {dest[2]!r}{where}"


def _strings(field: str, value: Any) -> Iterable[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequestError(field, "must be a list of non-empty strings")
    return value


def _names(
    field: str, value: Any, pattern: re.Pattern[str]
) -> tuple[frozenset[str], tuple[str, ...]]:
    """Names and ``prefix*`` entries, each matching ``pattern`` (the prefix without its ``*``)."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for entry in _strings(field, value):
        stem = entry.removesuffix("*")
        if not pattern.fullmatch(stem):
            raise BadRequestError(
                field, f"{entry!r} is not a name or a prefix* ({pattern.pattern})"
            )
        (prefixes if entry.endswith("*") else names).add(stem)
    return frozenset(names), tuple(sorted(prefixes))


_KINDS = ("http", "kafka", "kafka_topics", "kv_tables", "wal")


def parse_allowed_targets(obj: Any, field: str = "allowed_targets") -> TargetPolicy:
    """A TargetPolicy from a namespace's ``allowed_targets`` object (record-level targets on).

    Raises:
        BadRequestError: naming the field (``allowed_targets.http`` …).
    """
    if not isinstance(obj, dict):
        raise BadRequestError(field, f"must be an object of lists ({', '.join(_KINDS)})")
    unknown = sorted(set(obj) - set(_KINDS))
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
    topics, topic_prefixes = _names(f"{field}.kafka_topics", obj.get("kafka_topics", []), _TOPIC)
    tables, table_prefixes = _names(f"{field}.kv_tables", obj.get("kv_tables", []), IDENTIFIER)
    namespaces = set()
    for entry in _strings(f"{field}.wal", obj.get("wal", [])):
        if not NAMESPACE_NAME.fullmatch(entry):
            raise BadRequestError(f"{field}.wal", f"{entry!r} is not a namespace name")
        namespaces.add(entry)
    return TargetPolicy(
        http_origins=frozenset(origins),
        kafka_clusters=frozenset(clusters),
        kafka_topics=topics,
        kafka_topic_prefixes=topic_prefixes,
        kv_tables=tables,
        kv_table_prefixes=table_prefixes,
        wal_namespaces=frozenset(namespaces),
        record_targets=True,
    )
