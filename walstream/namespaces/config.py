"""Namespace configuration: the validated model and its parser (pure; no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from walstream.core.delay import TIERS_MS
from walstream.core.ordering import OnDlq
from walstream.core.retention import (
    MIN_DLQ_RETENTION_MS,
    UNLIMITED,
    log_retention_floor_ms,
    retry_horizon_ms,
)
from walstream.core.target_policy import TargetPolicy, parse_allowed_targets
from walstream.core.targets import NAMESPACE_NAME, TargetSpec, parse_target
from walstream.errors import BadRequestError, ConfigError
from walstream.namespaces.replication import Replication, parse_replication
from walstream.topology import NamespaceTopics, default_topics

__all__ = ["BackoffPolicy", "MutationsConfig", "NamespaceConfig", "Ordering", "parse_namespace"]

_E = TypeVar("_E", bound=Enum)

DEFAULT_MAX_DELAY_MS = 7 * 24 * 3600 * 1000
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
#: A mutation transaction's default completion timeout (seconds), and its bounds.
DEFAULT_COMPLETION_TIMEOUT_S = 600
MAX_COMPLETION_TIMEOUT_S = 86_400


class Ordering(Enum):
    """Per-key delivery order: ``none`` lets a retried record be overtaken by later ones of its
    key; ``key`` holds a key's later records behind one waiting in retry or delay."""

    NONE = "none"
    KEY = "key"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    """Retry backoff: delay = min(cap, base * multiplier**attempt), +/- jitter (a fraction)."""

    base_ms: int = 1000
    multiplier: float = 2.0
    cap_ms: int = 300_000
    jitter: float = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class MutationsConfig:
    """Multi-partition mutations of a namespace (issue 18; block ``mutations``): how long a
    transaction may wait for all its operations, from its first record, before it is
    dead-lettered naming the missing seqs."""

    completion_timeout_ms: int = DEFAULT_COMPLETION_TIMEOUT_S * 1000

    def to_json(self) -> dict[str, int]:
        return {"completion_timeout_s": self.completion_timeout_ms // 1000}


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceConfig:
    """One namespace: where its records live and how they are delivered."""

    name: str
    partitions: int | None = None
    topics: NamespaceTopics
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    max_attempts: int = 10
    target: TargetSpec | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_delay_ms: int = DEFAULT_MAX_DELAY_MS
    description: str = ""
    #: Error classes (TargetError.error_class, e.g. "http_409") never retried.
    non_retryable: frozenset[str] = frozenset()
    #: Time from the first attempt after which a failing record is dead-lettered (None: no limit).
    retry_budget_ms: int | None = None
    ordering: Ordering = Ordering.NONE
    #: ``key`` ordering: whether dead-lettering a key's head lets the records behind it go on.
    on_dlq: OnDlq = OnDlq.RELEASE
    # -- retention (walstream.core.retention; README "Topics and retention") --
    #: How long the log and retry topics keep records; -1 (the default): forever. A finite value
    #: is at least ``log_retention_floor_ms()``; records still owed past it are lost.
    log_retention_ms: int = UNLIMITED
    #: How long the DLQ keeps entries; -1 (the default): forever.
    dlq_retention_ms: int = UNLIMITED
    # -- target restrictions (walstream.core.target_policy) --
    #: What records may name besides the namespace's own target's destination, as configured:
    #: http origins, Kafka clusters and topics, kv tables, wal namespaces (None: nothing else;
    #: record-level targets are off).
    allowed_targets: TargetPolicy | None = None
    #: Cross-region replication of a memcached cache (walstream.namespaces.replication; None:
    #: the namespace replicates nothing).
    replication: Replication | None = None
    #: Multi-partition mutations (``wal.<ns>.mutations`` / ``.markers``; None: the namespace
    #: takes none, the API answers 404 MutationsNotEnabledError).
    mutations: MutationsConfig | None = None
    #: What is checked (walstream.core.target_policy): ``allowed_targets`` plus the namespace's
    #: own target, built once per config version (it keeps its verdicts).
    target_policy: TargetPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        policy = (self.allowed_targets or TargetPolicy()).with_target(
            self.target.wire if self.target else None
        )
        object.__setattr__(self, "target_policy", policy)

    @property
    def key_ordered(self) -> bool:
        return self.ordering is Ordering.KEY

    def log_retention_floor_ms(self) -> int:
        """The shortest finite ``log_retention_ms`` allowed: one record's retries and its
        longest wait (core.retention.log_retention_floor_ms)."""
        horizon = retry_horizon_ms(
            max_attempts=self.max_attempts,
            base_ms=self.backoff.base_ms,
            multiplier=self.backoff.multiplier,
            cap_ms=self.backoff.cap_ms,
            jitter=self.backoff.jitter,
            retry_budget_ms=self.retry_budget_ms,
        )
        return log_retention_floor_ms(
            retry_horizon=horizon,
            longest_tier_ms=TIERS_MS[-1],
            max_delay_ms=self.max_delay_ms,
            key_ordered=self.key_ordered,
        )

    def _retention_json(self) -> dict[str, int]:
        # Only when finite: a process that predates the fields still reads the event.
        retention = {"log_retention_ms": self.log_retention_ms}
        retention["dlq_retention_ms"] = self.dlq_retention_ms
        return {key: value for key, value in retention.items() if value != UNLIMITED}

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON form (what is published on the control topic)."""
        return {
            "name": self.name,
            "partitions": self.partitions,
            "topics": {"log": self.topics.log, "retry": self.topics.retry, "dlq": self.topics.dlq},
            "backoff": {
                "base_ms": self.backoff.base_ms,
                "multiplier": self.backoff.multiplier,
                "cap_ms": self.backoff.cap_ms,
                "jitter": self.backoff.jitter,
            },
            "max_attempts": self.max_attempts,
            "target": self.target.to_json() if self.target else None,
            "max_payload_bytes": self.max_payload_bytes,
            "max_delay_ms": self.max_delay_ms,
            "description": self.description,
            "non_retryable": sorted(self.non_retryable),
            "retry_budget_ms": self.retry_budget_ms,
            "ordering": self.ordering.value,
            "on_dlq": self.on_dlq.value,
            **self._retention_json(),
            # only when set, as allowed_targets below
            **({"replication": self.replication.to_json()} if self.replication else {}),
            **({"mutations": self.mutations.to_json()} if self.mutations else {}),
        } | (  # only when set: a process that predates the field still reads the event
            {"allowed_targets": self.allowed_targets.to_json()} if self.allowed_targets else {}
        )


_TOP_LEVEL = {
    "name",
    "partitions",
    "topics",
    "backoff",
    "max_attempts",
    "target",
    "max_payload_bytes",
    "max_delay_ms",
    "description",
    "non_retryable",
    "retry_budget_ms",
    "ordering",
    "on_dlq",
    "log_retention_ms",
    "dlq_retention_ms",
    "allowed_targets",
    "replication",
    "mutations",
}


def _int(obj: Mapping[str, Any], key: str, default: int, lo: int, hi: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ConfigError(key, value, f"must be an integer >= {lo}")
    if hi is not None and value > hi:
        raise ConfigError(key, value, f"must be <= {hi}")
    return value


def _number(obj: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = obj.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(key, value, f"must be a number in [{lo}, {hi}]")
    return float(value)


def _choice(obj: Mapping[str, Any], key: str, enum: type[_E], default: _E) -> _E:
    value = obj.get(key, default.value)
    for member in enum:
        if member.value == value:
            return member
    choices = " | ".join(str(m.value) for m in enum)
    raise ConfigError(key, value, f"must be one of {choices}")


def _parse_backoff(obj: Any) -> BackoffPolicy:
    if obj is None:
        return BackoffPolicy()
    if not isinstance(obj, dict):
        raise ConfigError("backoff", obj, "must be a table/object")
    unknown = set(obj) - {"base_ms", "multiplier", "cap_ms", "jitter"}
    if unknown:
        raise ConfigError(f"backoff.{sorted(unknown)[0]}", obj, "unknown option")
    d = BackoffPolicy()
    base = _int(obj, "base_ms", d.base_ms, 1)
    cap = _int(obj, "cap_ms", d.cap_ms, 1)
    if cap < base:
        raise ConfigError("backoff.cap_ms", cap, "must be >= backoff.base_ms")
    return BackoffPolicy(
        base_ms=base,
        multiplier=_number(obj, "multiplier", d.multiplier, 1.0, 100.0),
        cap_ms=cap,
        jitter=_number(obj, "jitter", d.jitter, 0.0, 1.0),
    )


def _parse_mutations(obj: Any) -> MutationsConfig | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ConfigError("mutations", obj, "must be a table/object")
    unknown = set(obj) - {"completion_timeout_s"}
    if unknown:
        raise ConfigError(f"mutations.{sorted(unknown)[0]}", obj, "unknown option")
    value = obj.get("completion_timeout_s", DEFAULT_COMPLETION_TIMEOUT_S)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 1 <= value <= MAX_COMPLETION_TIMEOUT_S
    ):
        raise ConfigError(
            "mutations.completion_timeout_s",
            value,
            f"must be an integer in 1..{MAX_COMPLETION_TIMEOUT_S} (seconds)",
        )
    return MutationsConfig(completion_timeout_ms=value * 1000)


def _parse_topics(name: str, obj: Any) -> NamespaceTopics:
    defaults = default_topics(name)
    if obj is None:
        return defaults
    if not isinstance(obj, dict):
        raise ConfigError("topics", obj, "must be a table/object")
    unknown = set(obj) - {"log", "retry", "dlq"}
    if unknown:
        raise ConfigError(f"topics.{sorted(unknown)[0]}", obj, "unknown topic role")
    for role, topic in obj.items():
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"topics.{role}", topic, "must be a topic name")
    topics = NamespaceTopics(
        log=obj.get("log", defaults.log),
        retry=obj.get("retry", defaults.retry),
        dlq=obj.get("dlq", defaults.dlq),
    )
    if len(set(topics.all())) != 3:
        raise ConfigError("topics", obj, "log, retry and dlq must be different topics")
    return topics


def parse_namespace(obj: Any) -> NamespaceConfig:
    """Validate a namespace definition (from a topology file or the control topic).

    Raises:
        ConfigError: naming the key and the value that is wrong.
    """
    if not isinstance(obj, dict):
        raise ConfigError("namespace", obj, "must be a table/object")
    unknown = set(obj) - _TOP_LEVEL
    if unknown:
        raise ConfigError(sorted(unknown)[0], obj[sorted(unknown)[0]], "unknown namespace option")
    name = obj.get("name")
    if not isinstance(name, str) or not NAMESPACE_NAME.fullmatch(name):
        raise ConfigError("name", name, f"must match {NAMESPACE_NAME.pattern}")
    partitions = obj.get("partitions")
    if partitions is not None:
        partitions = _int(obj, "partitions", 1, 1, 10_000)
    target = None
    if obj.get("target") is not None:
        try:
            target = parse_target(obj["target"])
        except BadRequestError as exc:
            raise ConfigError(exc.field, obj["target"], exc.reason) from exc
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description", description, "must be a string")
    non_retryable = obj.get("non_retryable", [])
    if not isinstance(non_retryable, list) or not all(
        isinstance(c, str) and c for c in non_retryable
    ):
        raise ConfigError("non_retryable", non_retryable, "must be a list of error class names")
    budget = obj.get("retry_budget_ms")
    if budget is not None:
        budget = _int(obj, "retry_budget_ms", 1, 1)
    allowed = None
    if obj.get("allowed_targets") is not None:
        try:
            allowed = parse_allowed_targets(obj["allowed_targets"])
        except BadRequestError as exc:
            raise ConfigError(exc.field, obj["allowed_targets"], exc.reason) from exc
    config = NamespaceConfig(
        name=name,
        partitions=partitions,
        topics=_parse_topics(name, obj.get("topics")),
        backoff=_parse_backoff(obj.get("backoff")),
        max_attempts=_int(obj, "max_attempts", 10, 1, 1000),
        target=target,
        max_payload_bytes=_int(obj, "max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES, 1),
        max_delay_ms=_int(obj, "max_delay_ms", DEFAULT_MAX_DELAY_MS, 0),
        description=description,
        non_retryable=frozenset(non_retryable),
        retry_budget_ms=budget,
        ordering=_choice(obj, "ordering", Ordering, Ordering.NONE),
        on_dlq=_choice(obj, "on_dlq", OnDlq, OnDlq.RELEASE),
        log_retention_ms=_retention(obj, "log_retention_ms"),
        dlq_retention_ms=_retention(obj, "dlq_retention_ms"),
        allowed_targets=allowed,
        replication=parse_replication(obj.get("replication")),
        mutations=_parse_mutations(obj.get("mutations")),
    )
    _check_retention(config)
    return config


def _retention(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key, UNLIMITED)
    if not isinstance(value, int) or isinstance(value, bool) or (value < 1 and value != UNLIMITED):
        raise ConfigError(key, value, "must be -1 (keep forever) or a number of milliseconds")
    return value


def _check_retention(config: NamespaceConfig) -> None:
    """Refuse a finite retention that would drop records walstream still owes.

    Raises:
        ConfigError: naming ``log_retention_ms`` or ``dlq_retention_ms``.
    """
    held = config.key_ordered and config.on_dlq is OnDlq.HOLD
    if config.log_retention_ms != UNLIMITED:
        if held:  # a held key parks records by log offset until an operator acts
            raise ConfigError(
                "log_retention_ms",
                config.log_retention_ms,
                "must be -1: ordering=key with on_dlq=hold parks records behind a held key "
                "for as long as it is held",
            )
        floor = config.log_retention_floor_ms()
        if config.log_retention_ms < floor:
            raise ConfigError(
                "log_retention_ms",
                config.log_retention_ms,
                f"must be -1 or >= {floor} (the namespace's retries plus its longest wait; "
                "records still owed past it are lost)",
            )
    if config.dlq_retention_ms != UNLIMITED:
        if held:  # the DLQ entry is what releases a held key (redrive or discard)
            raise ConfigError(
                "dlq_retention_ms",
                config.dlq_retention_ms,
                "must be -1: ordering=key with on_dlq=hold releases a key only through its "
                "DLQ entry",
            )
        if config.dlq_retention_ms < MIN_DLQ_RETENTION_MS:
            raise ConfigError(
                "dlq_retention_ms",
                config.dlq_retention_ms,
                f"must be -1 or >= {MIN_DLQ_RETENTION_MS} (an hour)",
            )
