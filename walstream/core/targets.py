"""Target specs: where a record is delivered, validated once at the edge.

The delivery code for each type lives in ``walstream.targets``; this module only says what a
well-formed spec of each type looks like, so bad specs are refused before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from walstream.core.cache_version import KEY_MAX_BYTES, PoisonReason, check_key
from walstream.core.numbers import as_integer
from walstream.errors import BadRequestError

__all__ = [
    "HEADER_NAME",
    "KV_KEY_MAX_CHARS",
    "KV_KEY_PATTERN",
    "MEMCACHED_MAX_KEY_BYTES",
    "MEMCACHED_MAX_TTL_S",
    "MEMCACHED_OPS",
    "MEMCACHED_OPTIONS",
    "NAMESPACE_NAME",
    "REGION_NAME",
    "RESERVED_HEADERS",
    "TARGET_TYPES",
    "UNSENDABLE_HEADERS",
    "UNSENDABLE_VALUE_CHARS",
    "UNSENDABLE_VALUE_PROBLEM",
    "TargetSpec",
    "has_unsendable_chars",
    "kv_key_problem",
    "parse_bootstrap_servers",
    "parse_memcached_target",
    "parse_target",
]

NAMESPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: A replication region's name (a namespace's ``replication.regions``, a memcached target's
#: ``origin_region``): it names the region's topic ``wal.<ns>.region.<r>`` (walstream.topology),
#: so no dot, and at most 63 characters like a namespace's.
REGION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: What a memcached target does to its key (issue 17): set the record's payload as the value,
#: delete the key, or touch it (a new ttl).
MEMCACHED_OPS = ("set", "delete", "touch")
#: memcached's key limit (its text and meta protocols): 250 bytes, no space or control character
#: (the rule is walstream.core.cache_version.check_key's).
MEMCACHED_MAX_KEY_BYTES = KEY_MAX_BYTES
#: memcached reads an expiration time over 30 days as a Unix time, not a number of seconds.
MEMCACHED_MAX_TTL_S = 30 * 86_400
_MAX_BOOTSTRAP_CHARS = 1024
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MAX_KEY_CHARS = 1024
#: A kv key (a kv target's ``key``, a mutation's ``id``): 1..1024 characters, no NUL.
#: PostgreSQL's text cannot hold NUL (it refuses the key, 22021, a permanent failure: a record
#: dead-lettered at delivery, a transaction dead-lettered with the seqs before it applied, and
#: failing so on every redrive). Every other character is kept as given by both kv databases
#: (SQLite, PostgreSQL), control characters included: a DynamoDB or Cassandra key may hold them.
#: (A lone surrogate, which UTF-8 cannot encode, never reaches here: the JSON decoder refuses
#: one.) A regex read alike by Python's re and the OpenAPI document's ECMA-262 patterns.
KV_KEY_MAX_CHARS = _MAX_KEY_CHARS
KV_KEY_PATTERN = "^[^\\u0000]*$"
_KV_KEY = re.compile(KV_KEY_PATTERN)
_KV_KEY_NUL = "must not hold NUL (U+0000): PostgreSQL cannot store it in a kv key"
#: What an http target's client sends (walstream.core.http_request checks again as it encodes):
#: header names are HTTP tokens, and no value holds a character of UNSENDABLE_VALUE_CHARS.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: The characters no HTTP header value may hold (a regex class body, read alike by Python's re
#: and the OpenAPI document's ECMA-262 patterns): the control characters but HTAB, and DEL.
#: RFC 9110 5.5 makes a field value of visible characters, SP, HTAB and obs-text; CR, LF and NUL
#: would end the header (or smuggle another), and upstream servers refuse a value with any other
#: of them with a 400 (aiohttp "Invalid header value char", nginx, Node), which a delivery can
#: only dead-letter. So the API refuses them at the edge (an idempotency_token, which http
#: targets receive as Idempotency-Key; an http target's headers), and the http target's client
#: before sending (a record logged before the API did). Characters beyond ASCII go out as
#: UTF-8 (obs-text), as before.
UNSENDABLE_VALUE_CHARS = "\\x00-\\x08\\x0a-\\x1f\\x7f"
_UNSENDABLE_VALUE = re.compile(f"[{UNSENDABLE_VALUE_CHARS}]")
#: The reason given for such a value.
UNSENDABLE_VALUE_PROBLEM = (
    "must not contain CR, LF or NUL, nor any other control character but tab (U+0001-U+001F, "
    "U+007F): an HTTP header value cannot hold one"
)


def has_unsendable_chars(value: str) -> bool:
    """Whether ``value`` holds a character no HTTP header value may (UNSENDABLE_VALUE_CHARS)."""
    return _UNSENDABLE_VALUE.search(value) is not None


#: Header names an http target may not set (lower case; compared whatever their case). The
#: framing headers (Content-Length, Transfer-Encoding, Host) are the client's own: a second one
#: beside them lets a payload pass as the next request on a pooled connection (RFC 7230 3.3.3,
#: request smuggling). The hop-by-hop ones (RFC 7230 6.1) describe the connection, which the
#: client owns: Connection, Keep-Alive, TE, Trailer, Upgrade, Proxy-Connection. Expect changes
#: how the exchange runs (100-continue). Proxy-Authorization and Proxy-Authenticate are
#: hop-by-hop too; the client uses no proxy, so they would only hand proxy credentials to the
#: origin.
UNSENDABLE_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
#: Header names walstream sets on every http delivery (walstream.targets.base.delivery_headers;
#: lower case, compared whatever their case). A target header of one of these names would replace
#: walstream's own: Idempotency-Key is how a target deduplicates retries, so it is refused at the
#: edge, and the http target puts walstream's value last anyway (records already in the log).
RESERVED_HEADERS = frozenset(
    {
        "idempotency-key",
        "x-wal-id",
        "x-wal-namespace",
        "x-wal-original-write-time",
        "x-wal-attempt",
        "x-wal-deliver-at",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec:
    """A validated target: its type and that type's options."""

    type: str
    options: Mapping[str, Any]
    #: The spec as records carry it, built once: every record of a namespace shares this dict
    #: (records are never mutated), instead of building one per write.
    wire: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **self.options}


def _str(field: str, pattern: re.Pattern[str] | None = None, max_len: int = 4096) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise BadRequestError(field, "must be a non-empty string")
        if len(value) > max_len:
            raise BadRequestError(field, f"must be at most {max_len} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise BadRequestError(field, f"must match {pattern.pattern}")
        return value

    return check


def kv_key_problem(value: Any) -> str | None:
    """Why ``value`` is not a kv key (None: it is one): a string of 1..KV_KEY_MAX_CHARS
    characters matching KV_KEY_PATTERN (the API answers 400 naming the field; the kv target and
    the mutation agents refuse it as a record's)."""
    if not isinstance(value, str) or not value or len(value) > KV_KEY_MAX_CHARS:
        return f"must be a string of 1..{KV_KEY_MAX_CHARS} characters"
    if not _KV_KEY.fullmatch(value):
        return _KV_KEY_NUL
    return None


def _kv_key(field: str) -> Callable[[Any], str]:
    base = _str(field, max_len=KV_KEY_MAX_CHARS)

    def check(value: Any) -> str:
        key: str = base(value)
        if not _KV_KEY.fullmatch(key):
            raise BadRequestError(field, _KV_KEY_NUL)
        return key

    return check


def _url(field: str) -> Callable[[Any], str]:
    base = _str(field, max_len=2048)

    def check(value: Any) -> str:
        url: str = base(value)
        if not url.startswith(("http://", "https://")):
            raise BadRequestError(field, "must be an http:// or https:// URL")
        return url

    return check


def _positive_int(field: str, maximum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = as_integer(value)  # 5.0 is the integer 5 (JSON Schema's integer)
        if number is None or not 0 < number <= maximum:
            raise BadRequestError(field, f"must be an integer in 1..{maximum}")
        return number

    return check


def _seconds(field: str, maximum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = as_integer(value)  # 5.0 is the integer 5 (JSON Schema's integer)
        if number is None or not 0 <= number <= maximum:
            raise BadRequestError(field, f"must be an integer of seconds in 0..{maximum}")
        return number

    return check


#: Why a memcached target's key is refused, for each reason check_key gives.
_MEMCACHED_KEY_PROBLEMS = {
    PoisonReason.KEY_EMPTY: "must be a non-empty string",
    PoisonReason.KEY_TOO_LONG: f"must be at most {KEY_MAX_BYTES} bytes (memcached's key limit)",
    PoisonReason.KEY_BAD_CHAR: "must not contain a space or a control character (memcached keys)",
}


def _memcached_key(field: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise BadRequestError(field, "must be a non-empty string")
        problem = check_key(value.encode())
        if problem is not None:
            raise BadRequestError(field, _MEMCACHED_KEY_PROBLEMS[problem])
        return value

    return check


def _region(field: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not REGION_NAME.fullmatch(value):  # "a\n" too
            raise BadRequestError(field, f"must be a region name ({REGION_NAME.pattern})")
        return value

    return check


def _headers(field: str) -> Callable[[Any], dict[str, str]]:
    def check(value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise BadRequestError(field, "must be an object of string values")
        for name, header in value.items():
            if HEADER_NAME.fullmatch(name) is None:
                raise BadRequestError(f"{field}.{name!r}", "is not an HTTP header name (a token)")
            if name.lower() in UNSENDABLE_HEADERS:
                raise BadRequestError(
                    f"{field}.{name}",
                    "is a framing or hop-by-hop header the http client sets itself",
                )
            if name.lower() in RESERVED_HEADERS:
                raise BadRequestError(
                    f"{field}.{name}",
                    "is a header walstream sets on every delivery",
                )
            if has_unsendable_chars(header):
                raise BadRequestError(f"{field}.{name}", UNSENDABLE_VALUE_PROBLEM)
        return value

    return check


# type -> {option: (required, checker factory)}
_SCHEMAS: dict[str, dict[str, tuple[bool, Callable[[str], Callable[[Any], Any]]]]] = {
    "kafka": {
        "topic": (True, lambda f: _str(f, _TOPIC_NAME)),
        "key": (False, lambda f: _str(f, max_len=_MAX_KEY_CHARS)),
        "bootstrap_servers": (False, lambda f: _str(f, max_len=_MAX_BOOTSTRAP_CHARS)),
    },
    "http": {
        "url": (True, _url),
        "timeout_ms": (False, lambda f: _positive_int(f, 300_000)),
        "headers": (False, _headers),
    },
    "kv": {
        "table": (True, lambda f: _str(f, _IDENTIFIER)),
        "key": (True, _kv_key),
        "op": (False, lambda f: _one_of(f, ("put", "delete"))),
    },
    "wal": {
        "namespace": (True, lambda f: _str(f, NAMESPACE_NAME)),
        "bootstrap_servers": (False, lambda f: _str(f, max_len=_MAX_BOOTSTRAP_CHARS)),
    },
}

TARGET_TYPES = frozenset(_SCHEMAS)


def _one_of(field: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise BadRequestError(field, f"must be one of {', '.join(choices)}")
        return str(value)

    return check


#: The memcached target's options (issue 17 item 2): a replicated namespace's cache operation,
#: which only WriteToLog takes (walstream.core.validate.parse_write_request), so not one of
#: _SCHEMAS (a namespace's own target, a redrive's, are delivered targets); ``ttl`` is
#: memcached's expiration in seconds (0: none), for set and touch.
MEMCACHED_OPTIONS: dict[str, tuple[bool, Callable[[str], Callable[[Any], Any]]]] = {
    "op": (True, lambda f: _one_of(f, MEMCACHED_OPS)),
    "key": (True, _memcached_key),
    "ttl": (False, lambda f: _seconds(f, MEMCACHED_MAX_TTL_S)),
    "origin_region": (True, lambda f: _region(f)),
}


def parse_bootstrap_servers(value: Any, field: str) -> str:
    """A Kafka bootstrap list (``host:port,...``) as a kafka or wal target's
    ``bootstrap_servers`` takes it (a namespace region's cluster too).

    Raises:
        BadRequestError: naming ``field``.
    """
    servers: str = _str(field, max_len=_MAX_BOOTSTRAP_CHARS)(value)
    return servers


def parse_memcached_target(obj: Any, field: str = "target") -> TargetSpec:
    """Validate a memcached target: ``{"type": "memcached", "op": "set" | "delete" | "touch",
    "key", "ttl"?, "origin_region"}`` (the namespace's part:
    walstream.core.cache_request.check_memcached_target). A touch needs its ttl; a delete takes
    none.

    Raises:
        BadRequestError: naming the offending field (``target.key``, ``target.ttl`` ...).
    """
    if not isinstance(obj, dict):
        raise BadRequestError(field, "must be an object with a 'type'")
    if obj.get("type") != "memcached":
        raise BadRequestError(f"{field}.type", "must be memcached")
    spec = _parse_options("memcached", MEMCACHED_OPTIONS, obj, field)
    op = spec.options["op"]
    if op == "touch" and "ttl" not in spec.options:
        raise BadRequestError(f"{field}.ttl", "is required for a touch (its new expiration)")
    if op == "delete" and "ttl" in spec.options:
        raise BadRequestError(
            f"{field}.ttl",
            "is not an option of a delete (its tombstone lives the namespace's "
            "replication.tombstone_ttl_s)",
        )
    return spec


def parse_target(obj: Any, field: str = "target") -> TargetSpec:
    """Validate a target object such as ``{"type": "http", "url": "http://…"}``.

    Raises:
        BadRequestError: naming the offending field (``target.url``, ``target.type`` …).
    """
    if not isinstance(obj, dict):
        raise BadRequestError(field, "must be an object with a 'type'")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _SCHEMAS:
        raise BadRequestError(f"{field}.type", f"must be one of {', '.join(sorted(_SCHEMAS))}")
    return _parse_options(kind, _SCHEMAS[kind], obj, field)


def _parse_options(
    kind: str,
    schema: Mapping[str, tuple[bool, Callable[[str], Callable[[Any], Any]]]],
    obj: Mapping[str, Any],
    field: str,
) -> TargetSpec:
    unknown = sorted(set(obj) - set(schema) - {"type"})
    if unknown:
        raise BadRequestError(f"{field}.{unknown[0]}", f"is not an option of a {kind} target")
    options: dict[str, Any] = {}
    for name, (required, checker) in schema.items():
        if name not in obj:
            if required:
                raise BadRequestError(f"{field}.{name}", f"is required for a {kind} target")
            continue
        options[name] = checker(f"{field}.{name}")(obj[name])
    return TargetSpec(type=kind, options=options)
