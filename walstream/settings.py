"""Process settings: the only module that reads the environment (``WALSTREAM_*``).

Namespace configuration is data, not settings: it arrives over the control topic.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from walstream.core.limits import WORKER_ALLOWANCE_BYTES, max_record_bytes
from walstream.core.mutations.wire import IDEMPOTENCY_WINDOW_MIN_MS, MutationLimits
from walstream.errors import ConfigError

if TYPE_CHECKING:
    from walstream.namespaces.config import NamespaceConfig

__all__ = ["Settings"]

_PREFIX = "WALSTREAM_"


#: MutationLimits' fields by the setting that gives each.
_MUTATION_VARS = {
    "operations_max": _PREFIX + "MUTATION_OPERATIONS_MAX",
    "txn_bytes_max": _PREFIX + "MUTATION_TXN_BYTES_MAX",
    "chunk_bytes": _PREFIX + "MUTATION_CHUNK_BYTES",
    "idempotency_window_ms": _PREFIX + "MUTATION_IDEMPOTENCY_WINDOW_S",
    "completion_timeout_ms": "mutations.completion_timeout_s",
}


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")


def _parse_optional_str(raw: str) -> str | None:
    return raw.strip() or None


_PARSERS: dict[type | str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "bool": _parse_bool,
    "str": str,
    "str | None": _parse_optional_str,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a walstream process is configured with.

    Each field ``name`` is read from ``WALSTREAM_<NAME>``; see README.md for the table.
    """

    #: Kafka bootstrap servers ("host:port,..."). Unset: `make run` starts the embedded broker.
    bootstrap_servers: str | None = None
    #: Faust app id = consumer group of the worker; persistent state, change only with a migration.
    app_id: str = "walstream"
    #: The compacted control topic every process folds into its namespace registry.
    control_topic: str = "walstream.namespaces"
    #: Partitions of a namespace's topics when its definition does not say.
    default_partitions: int = 4
    #: Copies of every topic walstream creates, and how many an acks=all write waits for; both
    #: capped to the brokers the cluster reports (1 on the embedded broker), with a WARNING at
    #: start when that leaves one copy (walstream.kafka.admin).
    replication_factor: int = 3
    min_insync_replicas: int = 2

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    #: Writes awaiting a broker ack at once; beyond it the API answers 503 (durable=FALSE).
    max_in_flight: int = 10_000
    #: Seconds the API waits for the broker's ack before answering durable=UNKNOWN.
    write_timeout_s: float = 5.0
    #: Seconds a shed client is told to wait (Retry-After).
    shed_retry_after_s: float = 1.0
    #: The largest batch request body; single writes are bounded by the largest record (about
    #: PRODUCER_MAX_REQUEST_BYTES), admin requests by 256 KiB (walstream.api.body).
    max_request_bytes: int = 16 * 1024 * 1024
    #: Seconds a request's body may take to arrive once its headers have (408 beyond).
    body_read_timeout_s: float = 30.0
    #: Seconds a request's line and headers may take to arrive from their first byte; the
    #: connection is closed beyond (walstream.api.server).
    header_read_timeout_s: float = 10.0
    #: Seconds an idle keep-alive connection stays open, counted from its opening or its last
    #: answer until a request's headers are in (aiohttp's keepalive_timeout).
    keepalive_timeout_s: float = 75.0
    #: The worker's producer refuses larger requests (Faust's producer_max_request_size). The API
    #: accepts an encoded record only up to this less HISTORY_MAX_BYTES and a fixed allowance
    #: (walstream.core.limits), so the worker can always write it again with its history.
    producer_max_request_bytes: int = 1_000_000
    #: A record's history of failed attempts is kept within this many encoded bytes (its first
    #: entry and the latest ones).
    history_max_bytes: int = 16 * 1024
    max_batch_records: int = 10_000
    #: Seconds an API process waits at start for the registry to catch up before serving anyway.
    registry_ready_timeout_s: float = 30.0
    #: Bearer tokens on every API route but /healthz and /readyz (walstream.core.auth). Off only
    #: by saying so (WALSTREAM_AUTH=false); `make run` keeps it on with a dev token it prints.
    auth: bool = True
    #: Token hashes: "<sha256 hex>:<role>[:<ns>,<ns>...][:<name>]", separated by spaces or ";".
    tokens: str | None = None
    #: A secrets file (TOML, or JSON by its .json suffix) listing token hashes, roles and
    #: namespaces; re-read when its mtime, size or inode changes, checked at most this often.
    auth_file: str | None = None
    auth_file_poll_s: float = 5.0

    #: Faust table store: "memory://" or "rocksdb://".
    store: str = "rocksdb://"
    data_dir: str = ".walstream-data"
    #: Tansu holds a JoinGroup for max(1 s, session/2): Faust's default 60 s means 30 s starts.
    broker_session_timeout_s: float = 6.0
    broker_heartbeat_interval_s: float = 1.0
    #: Seconds between the worker's periodic offset commits (Faust's broker_commit_interval).
    #: Records acked since the last commit are delivered again after a crash.
    commit_interval_s: float = 2.8
    #: Seconds a replication stage waits for a hole in a partition's offsets to fill before it
    #: passes it (walstream.core.fetch_gaps). walstream's topics are neither compacted nor
    #: transactional, so a hole is a record still being stored (the embedded broker hands out a
    #: later batch before an earlier acked one is stored): passing it too soon loses it.
    replication_hole_wait_s: float = 30.0
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = 6066
    #: Correct end offsets under-reported by the broker (Tansu 0.6.0); a no-op on Kafka.
    correct_end_offsets: bool = True
    #: How long a worker's fetch waits for data. Tansu answers only when the wait ends, so this
    #: bounds the latency of every retry and delay hop; on Kafka 500 saves idle fetches.
    consumer_fetch_max_wait_ms: int = 50

    #: Records each delivery agent works on at once (one actor per slot).
    deliver_concurrency: int = 32
    #: kv target database: "sqlite:///path" (default: <data_dir>/kv.sqlite) or "postgresql://...".
    kv_url: str | None = None
    #: Transient failures in a row that open a target's circuit breaker.
    breaker_threshold: int = 5
    breaker_base_open_ms: int = 1_000
    breaker_max_open_ms: int = 60_000
    #: A target client, producer or breaker of an endpoint (http origin, Kafka cluster) unused
    #: this long is closed and forgotten; at most TARGET_MAX_ENDPOINTS are kept (least recently
    #: used go first). Records may name endpoints: this bounds what they make a worker hold.
    target_idle_ttl_s: float = 600.0
    target_max_endpoints: int = 256
    #: An idle keep-alive connection of the http target is closed after this long.
    http_idle_timeout_s: float = 30.0
    #: How long a delay tier keeps records beyond its delay: the longest delay-stage outage that
    #: loses nothing.
    delay_grace_ms: int = 7 * 86_400_000
    #: How long the delay stage tries a record whose destination topic or partition does not
    #: exist (a deleted namespace) before dead-lettering it (walstream.core.delay).
    delay_dest_grace_ms: int = 60_000
    #: How long the deliver stage tries a write (retry copy, delay hop) whose destination topic
    #: is missing (unknown, or sends time out, and the cluster's metadata lacks it) before the
    #: record is dead-lettered instead (walstream.core.emit). DLQ writes are never given up.
    emit_dest_grace_ms: int = 60_000
    #: Records the delay stage holds in memory for their last stretch (what comes due within the
    #: smallest tier + its lead, 13 s) at most; beyond, it pauses reading the tiers.
    delay_timer_capacity: int = 200_000
    #: Records each delivery agent has taken and not finished (delivering, waiting behind their
    #: key, or held until due): the memory bound of an agent, and where the stream waits.
    deliver_max_pending: int = 4_096
    #: Records that may wait behind one key's head (``ordering = "key"``); past it a record is
    #: dead-lettered (OrderingOverflow, its reason naming the head) instead of parked.
    ordering_max_parked_per_key: int = 100_000
    #: Records of one key an agent holds (delivering, waiting their turn or held until due) before
    #: it stops fetching that key's partition; the partition is fetched again once the key is down
    #: to half. Other partitions keep flowing behind a hot key.
    deliver_max_key_pending: int = 1_024
    #: Seconds a rebalance waits for records being delivered from the partitions it takes away;
    #: queued records are dropped at once. Neither is committed: the next owner reads them again.
    deliver_revoke_wait_s: float = 5.0
    #: How long before its due time a delayed record (or a quick retry) is handed to the agent that
    #: delivers it, which holds it until then. It should cover the way there: a produce, a fetch
    #: (up to CONSUMER_FETCH_MAX_WAIT_MS on Tansu) and Faust's hand-over; more only costs memory.
    delay_handoff_lead_ms: int = 500
    #: Seconds a worker waits before resubscribing after namespaces change (coalesces changes).
    resubscribe_delay_s: float = 2.0
    #: Allocations between young-generation garbage collections, in the API and the workers.
    #: Python's 700 collects every few requests; their objects are short-lived and freed by
    #: reference counting, so those collections find next to nothing (walstream.runtime).
    gc_gen0_threshold: int = 10_000
    #: Seconds between `make run`'s notes of what a start that is taking long still waits for.
    run_waiting_note_s: float = 30.0

    # -- multi-partition mutations (issue 18; walstream.core.mutations) --
    #: Operations one transaction may hold (seqs 0..this-1); 413 beyond. At most 10,000.
    mutation_operations_max: int = 1_000
    #: Bytes one transaction may hold (its values, ids and table names); 413 beyond.
    mutation_txn_bytes_max: int = 16 * 1024 * 1024
    #: A value over this is written as chunks of this size, one log record each (<= 512 KiB).
    mutation_chunk_bytes: int = 256 * 1024
    #: Seconds a committed transaction is remembered: a re-sent operation, marker or whole
    #: MutateItems within it applies nothing again (at least a day).
    mutation_idempotency_window_s: int = 86_400
    #: Where the API asks a worker for a transaction's status (GET .../mutations/{txn_id});
    #: unset: http://<WORKER_WEB_HOST>:<WORKER_WEB_PORT>.
    worker_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``WALSTREAM_*`` variables, then ``overrides``.

        Raises:
            ConfigError: naming the variable and the value that could not be used.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            key = _PREFIX + field.name.upper()
            if key not in env:
                continue
            raw = env[key]
            parser = _PARSERS[str(field.type)]
            try:
                values[field.name] = parser(raw)
            except ValueError as exc:
                raise ConfigError(key, raw, f"expected {field.type}") from exc
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError for values that parse but make no sense."""
        positive = {
            "max_in_flight": self.max_in_flight,
            "write_timeout_s": self.write_timeout_s,
            "max_request_bytes": self.max_request_bytes,
            "body_read_timeout_s": self.body_read_timeout_s,
            "header_read_timeout_s": self.header_read_timeout_s,
            "keepalive_timeout_s": self.keepalive_timeout_s,
            "max_batch_records": self.max_batch_records,
            "default_partitions": self.default_partitions,
            "replication_factor": self.replication_factor,
            "min_insync_replicas": self.min_insync_replicas,
            "broker_session_timeout_s": self.broker_session_timeout_s,
            "commit_interval_s": self.commit_interval_s,
            "deliver_concurrency": self.deliver_concurrency,
            "consumer_fetch_max_wait_ms": self.consumer_fetch_max_wait_ms,
            "breaker_threshold": self.breaker_threshold,
            "breaker_base_open_ms": self.breaker_base_open_ms,
            "delay_timer_capacity": self.delay_timer_capacity,
            "delay_handoff_lead_ms": self.delay_handoff_lead_ms,
            "deliver_max_pending": self.deliver_max_pending,
            "ordering_max_parked_per_key": self.ordering_max_parked_per_key,
            "deliver_max_key_pending": self.deliver_max_key_pending,
            "deliver_revoke_wait_s": self.deliver_revoke_wait_s,
            "gc_gen0_threshold": self.gc_gen0_threshold,
            "run_waiting_note_s": self.run_waiting_note_s,
            "target_idle_ttl_s": self.target_idle_ttl_s,
            "target_max_endpoints": self.target_max_endpoints,
            "http_idle_timeout_s": self.http_idle_timeout_s,
            "history_max_bytes": self.history_max_bytes,
            "auth_file_poll_s": self.auth_file_poll_s,
            "replication_hole_wait_s": self.replication_hole_wait_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(_PREFIX + name.upper(), value, "must be > 0")
        if self.min_insync_replicas > self.replication_factor:
            raise ConfigError(
                _PREFIX + "MIN_INSYNC_REPLICAS",
                self.min_insync_replicas,
                "must be <= WALSTREAM_REPLICATION_FACTOR, or every acks=all write fails",
            )
        if self.broker_heartbeat_interval_s >= self.broker_session_timeout_s:
            raise ConfigError(
                _PREFIX + "BROKER_HEARTBEAT_INTERVAL_S",
                self.broker_heartbeat_interval_s,
                "must be below WALSTREAM_BROKER_SESSION_TIMEOUT_S",
            )
        if self.max_batch_records > self.max_in_flight:
            raise ConfigError(
                _PREFIX + "MAX_BATCH_RECORDS",
                self.max_batch_records,
                "must be <= WALSTREAM_MAX_IN_FLIGHT, or a full batch could never be admitted",
            )
        if self.max_record_bytes < 64 * 1024:
            raise ConfigError(
                _PREFIX + "PRODUCER_MAX_REQUEST_BYTES",
                self.producer_max_request_bytes,
                "leaves the API under 64 KiB per record after WALSTREAM_HISTORY_MAX_BYTES "
                f"and the worker's allowance of {WORKER_ALLOWANCE_BYTES} bytes",
            )
        if self.store not in {"memory://", "rocksdb://"}:
            raise ConfigError(_PREFIX + "STORE", self.store, "expected memory:// or rocksdb://")
        if self.breaker_max_open_ms < self.breaker_base_open_ms:
            raise ConfigError(
                _PREFIX + "BREAKER_MAX_OPEN_MS", self.breaker_max_open_ms, "must be >= BASE_OPEN_MS"
            )
        if self.kv_url is not None and not self.kv_url.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):
            raise ConfigError(
                _PREFIX + "KV_URL", self.kv_url, "expected sqlite:/// or postgresql://"
            )

        if self.tokens is not None:
            from walstream.core.auth import parse_tokens_setting

            parse_tokens_setting(self.tokens)  # ConfigError naming the entry
        if self.worker_url is not None and not self.worker_url.startswith(("http://", "https://")):
            raise ConfigError(_PREFIX + "WORKER_URL", self.worker_url, "expected http(s)://...")
        self.mutation_limits()  # ConfigError naming the variable

    def mutation_limits(self, ns: NamespaceConfig | None = None) -> MutationLimits:
        """The bounds of a transaction of namespace ``ns`` (its completion timeout; None or a
        namespace without a ``mutations`` block: the default one).

        Raises:
            ConfigError: naming the WALSTREAM_MUTATION_* variable out of its bounds.
        """
        window_s = self.mutation_idempotency_window_s
        if window_s * 1000 < IDEMPOTENCY_WINDOW_MIN_MS:
            raise ConfigError(
                _MUTATION_VARS["idempotency_window_ms"],
                window_s,
                f"must be >= {IDEMPOTENCY_WINDOW_MIN_MS // 1000} (a day)",
            )
        timeout = (
            {"completion_timeout_ms": ns.mutations.completion_timeout_ms}
            if ns is not None and ns.mutations is not None
            else {}
        )
        try:
            return MutationLimits(
                operations_max=self.mutation_operations_max,
                txn_bytes_max=self.mutation_txn_bytes_max,
                chunk_bytes=self.mutation_chunk_bytes,
                idempotency_window_ms=window_s * 1000,
                **timeout,
            )
        except ConfigError as exc:  # name the variable, not the field
            var = _MUTATION_VARS[exc.key.removeprefix("mutations.")]
            reason = exc.reason.replace("txn_bytes_max", _MUTATION_VARS["txn_bytes_max"])
            raise ConfigError(var, exc.value, reason) from exc

    @property
    def worker_base_url(self) -> str:
        """The worker's web server the API asks (WALSTREAM_WORKER_URL), without a trailing /."""
        if self.worker_url:
            return self.worker_url.rstrip("/")
        host = self.worker_web_host
        if host in {"0.0.0.0", "::", ""}:  # a worker listening on every address: ask on loopback
            host = "127.0.0.1"
        return f"http://{host}:{self.worker_web_port}"

    @property
    def max_record_bytes(self) -> int:
        """The largest encoded record (key + value) the API accepts (walstream.core.limits)."""
        return max_record_bytes(self.producer_max_request_bytes, self.history_max_bytes)

    @property
    def fetch_max_records(self) -> int:
        """The most records one worker fetch hands out: a key's cap, and at most 500.

        A partition paused for a hot key still hands out the rest of the fetch it was paused
        in (walstream.agents.dispatch); bounded so, that rest cannot fill the agent's buffer
        (aiokafka's default is unbounded: up to 1 MiB per partition, thousands of records)."""
        return max(1, min(self.deliver_max_key_pending, 500))

    @property
    def bootstrap_list(self) -> list[str]:
        """Bootstrap servers as a list; raises ConfigError when none are configured."""
        if not self.bootstrap_servers:
            raise ConfigError(_PREFIX + "BOOTSTRAP_SERVERS", None, "no Kafka bootstrap servers")
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)
