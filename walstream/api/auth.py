"""Bearer-token auth for the API: which route needs what, and the token table it checks.

``ROUTE_ACCESS`` names what each route needs (walstream.core.auth.Access); a route missing from
it needs an admin token, so a route added later is closed until someone opens it on purpose.
The token table comes from WALSTREAM_TOKENS and WALSTREAM_AUTH_FILE; the file is re-read when
its (mtime, size, inode) changes, looked at no more than every WALSTREAM_AUTH_FILE_POLL_S (one
``stat`` then, none on other requests). A file that cannot be read or parsed keeps the last good
table (logged); tokens are never logged, only the names the table gives them.

Cost: verifying a token (sha256 through OpenSSL, the digest lookup, ``hmac.compare_digest``)
counts ~14,000 instructions (callgrind), ~4 % of a whole single-record write. So a header that
verified is kept, header -> principal, until the table is reloaded (at most _VERIFIED_MAX; only
verified headers enter, so refused guesses cannot fill it): a request then costs one dict lookup.
That dict holds the raw headers of tokens in use, in memory only, as every request buffer does;
finding one compares strings only after their hashes match, and ``str`` hashes are SipHash with a
key random per process, so its timing tells a guesser nothing about a valid token.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from walstream.clock import Clock, SystemClock
from walstream.core.auth import (
    Access,
    Principal,
    TokenTable,
    authorize,
    bearer_token,
    parse_token_file,
    parse_tokens_setting,
)
from walstream.errors import ConfigError, ForbiddenError
from walstream.settings import Settings

__all__ = ["PRINCIPAL", "ROUTE_ACCESS", "Authenticator", "require_tokens"]

logger = logging.getLogger(__name__)

#: Verified headers kept at most (cleared when full: a client's next request re-verifies).
_VERIFIED_MAX = 4096

#: The request's principal, for handlers that show less to some tokens (absent: auth is off).
PRINCIPAL = web.RequestKey("principal", Principal)

#: (method, pattern) -> what the route needs. Not listed: Access.ADMIN.
ROUTE_ACCESS: Mapping[tuple[str, str], Access] = {
    ("GET", "/healthz"): Access.OPEN,
    ("GET", "/readyz"): Access.OPEN,
    ("GET", "/metrics"): Access.OPEN,
    ("GET", "/v1/openapi.json"): Access.ANY,
    ("POST", "/v1/namespaces/{namespace}/log"): Access.WRITE,
    ("POST", "/v1/namespaces/{namespace}/log:batch"): Access.WRITE,
    ("POST", "/v1/namespaces/{namespace}/mutations"): Access.WRITE,
    ("POST", "/v1/namespaces/{namespace}/mutations/{txn_id}/{seq}"): Access.WRITE,
    ("POST", "/v1/namespaces/{namespace}/mutations/{txn_id}:complete"): Access.WRITE,
    ("GET", "/v1/namespaces/{namespace}/mutations/{txn_id}"): Access.READ,
    ("GET", "/v1/namespaces/{namespace}/dlq"): Access.READ,
    ("GET", "/v1/namespaces/{namespace}/dlq/{id}"): Access.READ,
    ("GET", "/v1/namespaces/{namespace}/dlq:redrive"): Access.READ,
    ("POST", "/v1/namespaces/{namespace}/replay"): Access.ADMIN,
    ("GET", "/v1/namespaces/{namespace}/replay"): Access.ADMIN,
    ("DELETE", "/v1/namespaces/{namespace}/replay"): Access.ADMIN,
}


_Stamp = tuple[int, int, int]


def _stat(path: Path) -> _Stamp | None:
    """What says the file changed: (mtime, size, inode); a replaced secret changes the inode."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Authenticator:
    """Resolves an Authorization header to a Principal, re-reading the secrets file on change."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.enabled = settings.auth
        self._clock = clock or SystemClock()
        self._static = parse_tokens_setting(settings.tokens) if settings.tokens else TokenTable()
        self._file = Path(settings.auth_file) if settings.auth_file else None
        self._poll_s = settings.auth_file_poll_s
        self._next_check = 0.0
        self._stamp: _Stamp | None = None
        self._table = self._static
        #: Authorization header -> principal, for headers verified against the table since it
        #: was last (re)loaded (see the module docstring).
        self._verified: dict[str, Principal] = {}
        if self._file is not None:
            self._load(self._file, _stat(self._file), at_start=True)
            self._next_check = self._clock.monotonic() + self._poll_s

    def __len__(self) -> int:
        return len(self._table)

    def _load(self, path: Path, stamp: _Stamp | None, *, at_start: bool = False) -> None:
        try:
            table = parse_token_file(path.read_text(), str(path))
        except (OSError, ConfigError) as exc:
            if at_start:
                raise ConfigError("WALSTREAM_AUTH_FILE", str(path), str(exc)) from exc
            logger.error("auth file not reloaded, keeping the last good tokens: %s", exc)
        else:
            self._table = self._static.merged(table)
            self._verified.clear()  # a removed token stops at once
            logger.info("auth file %s loaded: %d tokens", path, len(table))
        self._stamp = stamp

    def maybe_reload(self) -> None:
        """Re-read the secrets file if it changed (at most one stat per poll interval)."""
        if self._file is None:
            return
        now = self._clock.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._poll_s
        stamp = _stat(self._file)
        if stamp != self._stamp:
            self._load(self._file, stamp)

    def principal(self, authorization: str | None) -> Principal:
        """The principal of an Authorization header.

        Raises:
            UnauthorizedError: no bearer token (401).
            ForbiddenError: a token this deployment does not know (403).
        """
        self.maybe_reload()
        header = authorization or ""
        principal = self._verified.get(header)
        if principal is not None:
            return principal
        principal = self._table.lookup(bearer_token(header))
        if principal is None:  # never cached: refused tokens cannot fill the cache
            raise ForbiddenError("the token is not valid for this deployment")
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[header] = principal
        return principal

    def verified_count(self) -> int:
        """Headers in the verified cache (for tests and debugging)."""
        return len(self._verified)

    def check(self, authorization: str | None, access: Access, namespace: str | None) -> Principal:
        """The principal, if it may use a route needing ``access`` (on ``namespace``)."""
        principal = self.principal(authorization)
        authorize(principal, access, namespace)
        return principal


def require_tokens(settings: Settings) -> None:
    """Refuse to serve with auth on and no token source: every request would be refused."""
    if settings.auth and not settings.tokens and not settings.auth_file:
        raise ConfigError(
            "WALSTREAM_AUTH",
            True,
            "auth is on but neither WALSTREAM_TOKENS nor WALSTREAM_AUTH_FILE is set "
            "(`walstream token new` makes one; WALSTREAM_AUTH=false turns auth off)",
        )
