"""The API's HTTP server: aiohttp's low-level server, with a deadline on every phase of a request.

- An idle connection (no request yet, or none since its last answer) is closed after
  WALSTREAM_KEEPALIVE_TIMEOUT_S: aiohttp's ``keepalive_timeout`` (its default is 3,630 s).
  aiohttp counts it from the connection's opening or its last answer, and bytes arriving do not
  extend it (``RequestHandler._process_keepalive`` closes a connection whose handler still waits
  for a request), so it also bounds a request head that never ends.
- A request's line and headers must arrive within WALSTREAM_HEADER_READ_TIMEOUT_S of their first
  byte (``ApiConnection``): a client that trickles a head (slowloris) holds a connection that
  long, not the keep-alive time.
- A body must arrive within WALSTREAM_BODY_READ_TIMEOUT_S (408, walstream.api.body); the
  connection is then closed at once (``close_after_answer``), not after aiohttp's lingering.

Bad requests are the client's doing, so they are logged in one line at INFO: aiohttp logs a
malformed request at ERROR with a traceback (``RequestHandler.handle_error``). A request its
parser refuses (a bad request line or header, bad chunks, a Content-Encoding it cannot decode:
br, zstd) is answered with the documented Error JSON (durable FALSE), not aiohttp's text/plain.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from walstream.api.responses import json_response

__all__ = ["ApiConnection", "ApiServer"]

logger = logging.getLogger(__name__)


class ApiConnection(RequestHandler):
    """One client connection, closed when a request head takes over ``header_timeout_s``.

    It reads aiohttp's own connection state: ``_request_count`` (heads parsed, malformed ones
    too) and ``_waiter`` (set while the connection waits for its next request)."""

    def __init__(self, manager: web.Server, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None
        self._quiet = False

    def _waiting_for_head(self) -> bool:
        """Between requests: none parsed yet, or the connection waits for its next one (not
        while a request's body or a pipelined request arrives)."""
        waiter = self._waiter
        return self._request_count == 0 or (waiter is not None and not waiter.done())

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        arm = bool(data) and self._head_deadline is None and self._waiting_for_head()
        super().data_received(data)
        if self._request_count != heads:  # a head is complete (or refused)
            self._disarm()
        elif arm:
            self._head_deadline = self._loop.call_later(
                self._header_timeout_s, self._head_timed_out, heads
            )

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self, heads: int) -> None:
        self._head_deadline = None
        if self._request_count == heads and self.transport is not None:
            peer = self.transport.get_extra_info("peername")
            logger.info(
                "closed a connection from %s: its request headers did not arrive within %g s",
                peer,
                self._header_timeout_s,
            )
            self.force_close()

    def close_after_answer(self) -> None:
        """Close the connection once the current request is answered, without reading the
        rest of its body first (aiohttp's lingering, up to 10 s)."""
        self._lingering_time = 0.0
        self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """aiohttp's answer to a request it could not parse; logged in one line when it is the
        client's fault (4xx), with aiohttp's traceback otherwise. A 4xx is the Error JSON."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        logger.info(
            "bad request from %s (%d): %s", request.remote, status, message or exc or "malformed"
        )
        self._quiet = True
        try:  # without exc: aiohttp logs it with a traceback (at DEBUG for a bad method)
            super().handle_error(request, status, None, message)  # raises if answered already
        finally:
            self._quiet = False
        response = json_response(_parser_error(request, exc, message), status)
        response.force_close()  # the connection's bytes cannot be trusted past the refusal
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if not self._quiet:
            super().log_exception(*args, **kw)


def _parser_error(
    request: BaseRequest, exc: BaseException | None, message: str | None
) -> dict[str, str]:
    """The Error body of a request aiohttp's parser refused (nothing was written)."""
    if isinstance(exc, ContentEncodingError):  # aiohttp's words: "Please install `Brotli`"
        # the request holds no headers here: the coding is in aiohttp's message, "... (br) ..."
        named = re.search(r"\((\w+)\)", str(exc))
        encoding = named[1] if named else request.headers.get("Content-Encoding", "")
        reason = f"Content-Encoding {encoding!r} is not supported: send the body as it is, or gzip"
        reason += " or deflate it"
    else:
        reason = (message or str(exc or "") or "malformed").splitlines()[0]
        reason = f"is not a request the server can read: {reason}"
    return {
        "durable": "FALSE",
        "message": f"request: {reason}",
        "error": "BadRequestError",
        "field": "request",
        "reason": reason,
    }


class ApiServer(web.Server):
    """aiohttp's low-level server, serving each connection with an ``ApiConnection``."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return ApiConnection(
            self, header_timeout_s=self._header_timeout_s, loop=self._loop, **self._kwargs
        )
