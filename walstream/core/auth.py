"""Bearer tokens: the token table (from settings or a secrets file), lookup and role checks.

A token is a random string (``new_token``: 256 bits from ``secrets``); walstream keeps only its
sha256. A slow password hash (bcrypt, scrypt) would buy nothing here: it slows down guessing a
*low-entropy* secret, and a 256-bit random token cannot be guessed however fast the hash is. It
would cost a lot, though: the check runs on every write, and bcrypt at its usual costs takes
tens to hundreds of milliseconds of CPU, thousands of times a whole write (sha256 of a
47-character token: well under a microsecond).

Lookup: the table is keyed by the first 8 bytes of the presented token's sha256, so what
a lookup's timing can depend on is that digest, which says nothing usable about any valid
token (sha256 is preimage-resistant); the whole stored digest is then compared with
``hmac.compare_digest`` (constant time), never with ``==``.

Roles (a token has one, and a set of namespaces unless it is ``admin``):

==================  ========================================================================
``writer``          writes to its namespaces; reads their DLQ listings with reasons reduced
                    to the error class, and their redrive status
``namespace-admin`` everything a writer may, on its namespaces: namespace endpoints, the DLQ
                    with full reasons, redrive start/cancel
``admin``           everything, every namespace
==================  ========================================================================

Token sources:

* ``WALSTREAM_TOKENS``: entries separated by whitespace or ``;``, each
  ``<sha256 hex>:<role>[:<namespace>,<namespace>...][:<name>]``.
* ``WALSTREAM_AUTH_FILE``: TOML or JSON, ``tokens = [{sha256, role, namespaces, name}]``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from walstream.errors import ConfigError, ForbiddenError, UnauthorizedError

__all__ = [
    "Access",
    "Principal",
    "Role",
    "TokenTable",
    "authorize",
    "bearer_token",
    "hash_token",
    "new_token",
    "parse_token_document",
    "parse_token_file",
    "parse_tokens_setting",
    "principals_namespaces",
    "redact_target",
    "visible_reason",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_SPLIT = re.compile(r"[\s;]+")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
#: Bytes of a digest the table is keyed by (the whole digest is compared in constant time).
_PREFIX_BYTES = 8
_sha256 = hashlib.sha256
#: What a redacted value reads as.
REDACTED = "***"


class Role(enum.StrEnum):
    WRITER = "writer"
    NAMESPACE_ADMIN = "namespace-admin"
    ADMIN = "admin"


class Access(enum.Enum):
    """What a route needs."""

    #: no token (health, readiness, metrics)
    OPEN = "open"
    #: any valid token (the OpenAPI document)
    ANY = "any"
    #: a token that may write to the route's namespace
    WRITE = "write"
    #: a token of the namespace (writer or admin); the handler redacts what writers may not see
    READ = "read"
    #: an admin, or a namespace-admin of the route's namespace (or, on a route without one,
    #: of some namespace: the handler then shows only that token's namespaces)
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token is: a label for logs (never the token), a role and its namespaces."""

    name: str
    role: Role
    namespaces: frozenset[str] = frozenset()

    def can_write(self, namespace: str) -> bool:
        return self.role is Role.ADMIN or namespace in self.namespaces

    def is_admin_of(self, namespace: str) -> bool:
        return self.role is Role.ADMIN or (
            self.role is Role.NAMESPACE_ADMIN and namespace in self.namespaces
        )


_OPEN, _ANY, _ADMIN_ACCESS = Access.OPEN, Access.ANY, Access.ADMIN
_ADMIN, _NAMESPACE_ADMIN = Role.ADMIN, Role.NAMESPACE_ADMIN


def hash_token(token: str) -> str:
    """The stored form of a token: its sha256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return "wal_" + secrets.token_urlsafe(32)


class TokenTable:
    """Token digests -> Principal, looked up by the digest's first 8 bytes and confirmed on the
    whole digest with ``hmac.compare_digest``."""

    __slots__ = ("_by_prefix",)

    def __init__(self, entries: Mapping[str, Principal] | None = None) -> None:
        self._by_prefix: dict[bytes, tuple[tuple[bytes, Principal], ...]] = {}
        for digest_hex, principal in (entries or {}).items():
            digest = bytes.fromhex(digest_hex)
            prefix = digest[:_PREFIX_BYTES]
            self._by_prefix[prefix] = (*self._by_prefix.get(prefix, ()), (digest, principal))

    def __len__(self) -> int:
        return sum(len(candidates) for candidates in self._by_prefix.values())

    def entries(self) -> dict[str, Principal]:
        return {d.hex(): p for candidates in self._by_prefix.values() for d, p in candidates}

    def lookup(self, token: str) -> Principal | None:
        """The token's principal, or None for an unknown token."""
        digest = _sha256(token.encode()).digest()
        for stored, principal in self._by_prefix.get(digest[:_PREFIX_BYTES], ()):
            if hmac.compare_digest(stored, digest):
                return principal
        return None

    def merged(self, other: TokenTable) -> TokenTable:
        return TokenTable({**self.entries(), **other.entries()})


def _principal(
    digest: Any, role: Any, namespaces: Any, name: Any, where: str
) -> tuple[str, Principal]:
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
        raise ConfigError(where, "<sha256>", "sha256 must be 64 hex digits (walstream token hash)")
    try:
        parsed_role = Role(role)
    except ValueError:
        raise ConfigError(where, role, f"role must be one of {', '.join(Role)}") from None
    if not isinstance(namespaces, list | tuple | frozenset) or not all(
        isinstance(n, str) and n for n in namespaces
    ):
        raise ConfigError(where, namespaces, "namespaces must be a list of names")
    if parsed_role is not Role.ADMIN and not namespaces:
        raise ConfigError(where, role, "a writer or namespace-admin token must name namespaces")
    if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        raise ConfigError(where, name, "name must be 1-64 of A-Z a-z 0-9 _ . @ -")
    label = name if name is not None else f"{parsed_role}-{digest[:8]}"
    return digest.lower(), Principal(label, parsed_role, frozenset(namespaces))


def parse_tokens_setting(raw: str, key: str = "WALSTREAM_TOKENS") -> TokenTable:
    """``<sha256>:<role>[:<ns>,<ns>][:<name>]`` entries, separated by whitespace or ``;``."""
    entries: dict[str, Principal] = {}
    for index, entry in enumerate(e for e in _ENTRY_SPLIT.split(raw.strip()) if e):
        parts = entry.split(":")
        if not 2 <= len(parts) <= 4:
            raise ConfigError(
                f"{key}[{index}]", "<entry>", "expected <sha256>:<role>[:<ns>,...][:<name>]"
            )
        namespaces = [n for n in parts[2].split(",") if n] if len(parts) > 2 else []
        name = parts[3] if len(parts) > 3 else None
        digest, principal = _principal(parts[0], parts[1], namespaces, name, f"{key}[{index}]")
        entries[digest] = principal
    return TokenTable(entries)


def parse_token_document(obj: Any, source: str) -> TokenTable:
    """``{"tokens": [{"sha256": ..., "role": ..., "namespaces": [...], "name": ...}]}``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("tokens", []), list):
        raise ConfigError(source, "<document>", "expected a 'tokens' list")
    entries: dict[str, Principal] = {}
    for index, item in enumerate(obj.get("tokens", [])):
        where = f"{source}: tokens[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(where, "<entry>", "expected a table/object")
        unknown = set(item) - {"sha256", "role", "namespaces", "name"}
        if unknown:
            raise ConfigError(where, sorted(unknown), "unknown keys")
        digest, principal = _principal(
            item.get("sha256"),
            item.get("role"),
            item.get("namespaces", []),
            item.get("name"),
            where,
        )
        entries[digest] = principal
    return TokenTable(entries)


def parse_token_file(text: str, source: str) -> TokenTable:
    """A secrets file: JSON when it ends in ``.json``, TOML otherwise."""
    try:
        obj = orjson.loads(text) if source.endswith(".json") else tomllib.loads(text)
    except (orjson.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(source, "<file>", f"cannot parse: {exc}") from None
    return parse_token_document(obj, source)


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    Raises:
        UnauthorizedError: no header, or not a bearer token (HTTP 401).
    """
    if not header:
        raise UnauthorizedError("a bearer token is required (Authorization: Bearer <token>)")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
    if not token.isascii() and not _is_utf8(token):
        # bytes that are not UTF-8 (the server hands them over as lone surrogates): no token
        # of any table, and no digest can be taken of them
        raise UnauthorizedError("the bearer token must be UTF-8 text")
    return token


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def authorize(principal: Principal, access: Access, namespace: str | None) -> None:
    """Raise ForbiddenError unless ``principal`` may use a route that needs ``access``."""
    # the hot path first, with no enum attribute lookups (~100 ns each on 3.11): a write or
    # read by one of the namespace's own tokens
    if namespace in principal.namespaces and access is not _ADMIN_ACCESS:
        return
    role = principal.role
    if access is _OPEN or access is _ANY or role is _ADMIN:
        return
    if namespace is None:  # a route over all namespaces: admins of some namespace
        if access is _ADMIN_ACCESS and role is _NAMESPACE_ADMIN:
            return
        raise ForbiddenError(f"token {principal.name!r} is not an admin token")
    if access is _ADMIN_ACCESS:
        if principal.is_admin_of(namespace):
            return
        raise ForbiddenError(f"token {principal.name!r} is not an admin of namespace {namespace!r}")
    raise ForbiddenError(f"token {principal.name!r} is not allowed for namespace {namespace!r}")


def visible_reason(error_class: str, reason: str, principal: Principal | None, ns: str) -> str:
    """A DLQ entry's reason as ``principal`` may see it: target errors quote upstream answers
    (an http body, a database error, which ports answer), so only the namespace's admins (or
    everyone, with auth off: ``principal`` None) see the reason; writers get the error class."""
    if principal is None or principal.is_admin_of(ns):
        return reason
    return f"{error_class} (the reason is shown to the namespace's admins)"


def _redact_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.netloc or "@" not in parts.netloc:
        return value
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def _redact(value: Any, key: str | None) -> Any:
    if key is not None and key.lower() == "headers" and isinstance(value, dict):
        return {name: REDACTED for name in value}
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, None) for v in value]
    if isinstance(value, str) and "@" in value and "//" in value:
        return _redact_url(value)
    return value


def redact_target(config_json: Mapping[str, Any]) -> dict[str, Any]:
    """A namespace's JSON with secrets taken out: every ``headers`` value (``Authorization``,
    API keys) and the userinfo of every URL (``https://user:pass@host`` -> ``***@host``)."""
    return {k: _redact(v, k) for k, v in config_json.items()}


def principals_namespaces(principal: Principal | None, names: Iterable[str]) -> list[str]:
    """The names among ``names`` that ``principal`` administers (all with auth off)."""
    if principal is None or principal.role is Role.ADMIN:
        return list(names)
    return [n for n in names if principal.is_admin_of(n)]
