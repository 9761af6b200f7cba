"""An http target's request, encoded (pure): the URL split once into an ``Endpoint``, and the
bytes of the POST its client (walstream.targets.http_client) writes on a connection, refused
before anything is sent when a header would break the request's framing."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from yarl import URL

from walstream.core.targets import HEADER_NAME, UNSENDABLE_HEADERS, has_unsendable_chars

__all__ = [
    "USER_AGENT",
    "Endpoint",
    "InvalidHeaderError",
    "InvalidUrlError",
    "encode_request",
    "parse_endpoint",
]

#: The client's User-Agent header.
USER_AGENT = b"walstream"


class InvalidHeaderError(ValueError):
    """A header name that is not an HTTP token or is one the client sets itself (framing,
    hop-by-hop: ``UNSENDABLE_HEADERS``), or a value with a control character in it (CR, LF,
    NUL or another no header value may hold: ``walstream.core.targets.has_unsendable_chars``)."""


class InvalidUrlError(ValueError):
    """Not an absolute http:// or https:// URL with a host."""


class Endpoint(NamedTuple):
    """A URL split once into what a request needs."""

    #: (scheme, host, port): the connections of one origin are pooled together
    origin: tuple[str, str, int]
    host_header: bytes
    path: bytes
    tls: bool


@lru_cache(maxsize=4096)
def parse_endpoint(url: str) -> Endpoint:
    """``url`` split into its origin, Host header, request target and scheme.

    Raises:
        InvalidUrlError: not an http(s) URL with a host.
    """
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise InvalidUrlError(f"not an http(s) URL: {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.raw_host
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if parsed.is_default_port() else f"{shown}:{port}"
    return Endpoint(
        (parsed.scheme, host, port),
        host_header.encode("ascii"),
        (parsed.raw_path_qs or "/").encode("ascii"),
        parsed.scheme == "https",
    )


def encode_request(endpoint: Endpoint, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    """The bytes of a POST. Raises InvalidHeaderError for a header that would break framing.

    The framing and hop-by-hop headers are this client's alone: a caller's Transfer-Encoding or
    Content-Length beside ours would let the body pass as the next request on the connection.
    """
    parts = [
        b"POST ",
        endpoint.path,
        b" HTTP/1.1\r\nHost: ",
        endpoint.host_header,
        b"\r\nUser-Agent: ",
        USER_AGENT,
        b"\r\nContent-Length: ",
        str(len(body)).encode(),
        b"\r\n",
    ]
    for name, value in headers:
        if HEADER_NAME.fullmatch(name) is None:
            raise InvalidHeaderError(f"header name {name!r} is not an HTTP token")
        if name.lower() in UNSENDABLE_HEADERS:
            raise InvalidHeaderError(
                f"header {name} is set by the client only (framing/hop-by-hop)"
            )
        if has_unsendable_chars(value):
            raise InvalidHeaderError(f"header {name} has a control character in its value")
        parts += (name.encode("ascii"), b": ", value.encode("utf-8"), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)
