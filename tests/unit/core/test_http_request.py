"""An http target's request, encoded (walstream.core.http_request): a URL's origin, Host header
and request target, and the bytes of a POST, refused before sending when a header would break
its framing."""

from __future__ import annotations

import pytest

from walstream.core.http_request import (
    Endpoint,
    InvalidHeaderError,
    InvalidUrlError,
    encode_request,
    parse_endpoint,
)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://up.example/x", Endpoint(("http", "up.example", 80), b"up.example", b"/x", False)),
        (
            "https://up.example/a/b?c=1&d=%20",
            Endpoint(("https", "up.example", 443), b"up.example", b"/a/b?c=1&d=%20", True),
        ),
        # no path: the request target is "/"
        ("http://up.example", Endpoint(("http", "up.example", 80), b"up.example", b"/", False)),
        # a port other than the scheme's is in the Host header
        (
            "http://127.0.0.1:8080/in",
            Endpoint(("http", "127.0.0.1", 8080), b"127.0.0.1:8080", b"/in", False),
        ),
        ("https://h:80/", Endpoint(("https", "h", 80), b"h:80", b"/", True)),
        # an IPv6 host is bracketed in the Host header, not in the origin
        ("http://[::1]:9000/p", Endpoint(("http", "::1", 9000), b"[::1]:9000", b"/p", False)),
        ("https://[::1]/p", Endpoint(("https", "::1", 443), b"[::1]", b"/p", True)),
        # a non-ASCII path is sent percent-encoded
        ("http://h/é", Endpoint(("http", "h", 80), b"h", b"/%C3%A9", False)),
    ],
)
def test_a_url_is_split_into_origin_host_header_and_target(url: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(url) == endpoint


@pytest.mark.parametrize("url", ["ftp://up.example/x", "/relative", "http://", "up.example"])
def test_a_url_that_is_not_http_with_a_host_is_refused(url: str) -> None:
    with pytest.raises(InvalidUrlError, match="not an http"):
        parse_endpoint(url)


def test_a_post_is_written_with_its_framing_first_then_the_callers_headers() -> None:
    endpoint = parse_endpoint("http://up.example:8080/in?x=1")
    request = encode_request(endpoint, b"a\r\nbody", [("X-Token", "t é"), ("wal-id", "1")])
    assert request == (
        b"POST /in?x=1 HTTP/1.1\r\n"
        b"Host: up.example:8080\r\n"
        b"User-Agent: walstream\r\n"
        b"Content-Length: 7\r\n"
        b"X-Token: t \xc3\xa9\r\n"  # a value is sent as UTF-8
        b"wal-id: 1\r\n"
        b"\r\n"
        b"a\r\nbody"
    )


def test_an_empty_body_with_no_headers() -> None:
    request = encode_request(parse_endpoint("https://h/"), b"", [])
    assert request == (
        b"POST / HTTP/1.1\r\nHost: h\r\nUser-Agent: walstream\r\nContent-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (("Bad Name", "v"), "is not an HTTP token"),
        (("", "v"), "is not an HTTP token"),
        (("X-é", "v"), "is not an HTTP token"),
        (("Content-Length", "0"), "set by the client only"),
        (("TRANSFER-ENCODING", "chunked"), "set by the client only"),
        (("Host", "other"), "set by the client only"),
        (("Connection", "close"), "set by the client only"),
        (("X-Token", "a\r\nX-Evil: 1"), "control character"),
        (("X-Token", "a\nb"), "control character"),
        (("X-Token", "a\x00"), "control character"),
        (("X-Token", "a\x7f"), "control character"),
    ],
)
def test_a_header_that_would_break_framing_is_refused(header: tuple[str, str], why: str) -> None:
    with pytest.raises(InvalidHeaderError, match=why):
        encode_request(parse_endpoint("http://h/"), b"1", [("X-Ok", "fine"), header])
