"""Request bodies: each route's byte limit, refused before reading, enforced while reading.

A body costs the API its bytes, then the decoded JSON (tens of times the bytes for small values:
16 MiB of ``[[],[],...]`` decodes to ~0.5 GB and a second of event loop). So every route has a
limit (``BodyLimit``), the smallest its requests need; a Content-Length over it is refused (413)
before a byte is read, a chunked body is read only up to it, and nothing over it is decoded. A
body must arrive within WALSTREAM_BODY_READ_TIMEOUT_S (408): slow clients hold a connection and
their bytes, never an in-flight write slot (handlers take one only once the body is read).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import (
    ContentEncodingError,
    ContentLengthError,
    PayloadEncodingError,
)

from walstream.api.server import ApiConnection
from walstream.errors import BadRequestError, PayloadTooLargeError, RequestTimeoutError
from walstream.settings import Settings

__all__ = [
    "BODY_LIMIT",
    "MUTATION_OVERHEAD_PER_OP_BYTES",
    "REQUEST_OVERHEAD_BYTES",
    "SMALL_BODY_BYTES",
    "BodyLimit",
    "BodyLimits",
    "check_length",
    "read_body",
]

logger = logging.getLogger(__name__)

#: What a single write's body may hold beyond its encoded record: the record carries every
#: request field (and more), so this only covers whitespace and escapes a compact encoding drops.
REQUEST_OVERHEAD_BYTES = 64 * 1024
#: Admin routes (a redrive's selection: ~7,000 record ids) and routes that take no body.
SMALL_BODY_BYTES = 256 * 1024
#: What a mutation request's JSON may hold per operation beyond its weight (values, ids and
#: table names): field names, quotes, an original write time, escapes in an id.
MUTATION_OVERHEAD_PER_OP_BYTES = 512

#: The limit of the request's route, set by the API before its handler runs.
BODY_LIMIT = web.RequestKey("walstream.body_limit", int)


class BodyLimit(enum.Enum):
    """Which limit a route's bodies have (bytes from ``BodyLimits``)."""

    #: One record: the largest record the API accepts plus REQUEST_OVERHEAD_BYTES.
    RECORD = "record"
    #: A batch of records: WALSTREAM_MAX_REQUEST_BYTES.
    BATCH = "batch"
    #: Admin requests and routes without a body: SMALL_BODY_BYTES.
    SMALL = "small"
    #: A mutation (issue 18): a whole transaction of WALSTREAM_MUTATION_TXN_BYTES_MAX with its
    #: values in base64, plus MUTATION_OVERHEAD_PER_OP_BYTES per operation and
    #: REQUEST_OVERHEAD_BYTES (~23 MiB for the default 16 MiB).
    MUTATION = "mutation"


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyLimits:
    """Bytes per ``BodyLimit``, and how long a body may take to arrive."""

    record: int
    batch: int
    small: int
    read_timeout_s: float
    mutation: int = SMALL_BODY_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        """Limits from settings; none but a mutation's is over WALSTREAM_MAX_REQUEST_BYTES (a
        mutation's follows WALSTREAM_MUTATION_TXN_BYTES_MAX and _OPERATIONS_MAX)."""
        cap = settings.max_request_bytes
        base64_bytes = -(-settings.mutation_txn_bytes_max // 3) * 4
        per_op = settings.mutation_operations_max * MUTATION_OVERHEAD_PER_OP_BYTES
        return cls(
            record=min(cap, settings.max_record_bytes + REQUEST_OVERHEAD_BYTES),
            batch=cap,
            small=min(cap, SMALL_BODY_BYTES),
            read_timeout_s=settings.body_read_timeout_s,
            mutation=base64_bytes + per_op + REQUEST_OVERHEAD_BYTES,
        )

    def bytes_for(self, kind: BodyLimit) -> int:
        """The byte limit of ``kind``."""
        if kind is BodyLimit.RECORD:
            return self.record
        if kind is BodyLimit.BATCH:
            return self.batch
        if kind is BodyLimit.MUTATION:
            return self.mutation
        return self.small


def _too_large(limit: int, detail: str) -> PayloadTooLargeError:
    return PayloadTooLargeError("body", f"{detail}, over this route's limit of {limit} bytes")


async def _continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` (the client waits for it before sending the body)."""
    if request.version == HttpVersion11 and (
        request.headers.get("Expect", "").lower() == "100-continue"
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # not the response (as aiohttp's own expect handler)


def check_length(request: web.BaseRequest, limit: int) -> None:
    """Refuse a declared body over ``limit`` before reading any of it.

    Raises:
        PayloadTooLargeError: (413) the Content-Length is over ``limit``.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit, f"is {length} bytes (Content-Length)")


async def read_body(request: web.BaseRequest, timeout_s: float) -> bytes:
    """The body, read up to the route's limit (``request[BODY_LIMIT]``) within ``timeout_s``.

    A body already received (the common case: small requests arrive whole) is taken without
    arming a timer. Reading stops as soon as the body is over the limit.

    Raises:
        PayloadTooLargeError: (413) the body is over the limit.
        RequestTimeoutError: (408) the body did not arrive within ``timeout_s``.
        BadRequestError: (400) ``body`` is not what its Content-Encoding or framing says
            (not gzip, bad chunks), is sent with stacked codings (``gzip, gzip``), or the client
            closed the connection before its end.
    """
    encoding = request.headers.get("Content-Encoding")
    if encoding is not None and "," in encoding:
        _check_codings(encoding)
    try:
        return await _read_body(request, timeout_s)
    except web.RequestPayloadError as exc:
        # aiohttp's parser refused the bytes: it hands the body's reader this error, caused
        # by what it found wrong
        raise _framing_error(request, exc.__cause__) from None
    except ConnectionError:
        # the client closed the connection mid-body: its doing, so one line, no traceback
        # (the answer goes nowhere)
        logger.info(
            "%s %s from %s: the connection closed before the body ended",
            request.method,
            request.path,
            request.remote,
        )
        raise BadRequestError("body", "the connection closed before the body ended") from None


def _check_codings(encoding: str) -> None:
    """Refuse a list of content codings (RFC 9110 8.4: applied in order): aiohttp decodes one
    coding alone, and would hand over the body of ``gzip, gzip`` still encoded."""
    if any(c.strip().lower() not in ("", "identity") for c in encoding.split(",")):
        raise BadRequestError(
            "body",
            f"is sent with Content-Encoding {encoding!r}: the API decodes one coding (gzip or "
            "deflate), not a list; send the body as it is, or with one coding",
        )


def _framing_error(request: web.BaseRequest, cause: BaseException | None) -> BadRequestError:
    if isinstance(cause, ContentEncodingError):
        encoding = request.headers.get("Content-Encoding", "")
        return BadRequestError("body", f"is not valid {encoding} data (its Content-Encoding)")
    if isinstance(cause, ContentLengthError):
        return BadRequestError("body", "ended before its Content-Length")
    if isinstance(cause, PayloadEncodingError):
        return BadRequestError("body", f"is not framed as its headers say: {cause.message}")
    return BadRequestError("body", "could not be read as its headers say")


async def _read_body(request: web.BaseRequest, timeout_s: float) -> bytes:
    limit = request[BODY_LIMIT]
    payload = request.content
    chunk = payload.read_nowait()  # what has arrived; never waits
    if payload.at_eof():  # the whole body (small requests arrive with their headers)
        if len(chunk) > limit:
            raise _too_large(limit, f"has {len(chunk)} bytes")
        return chunk
    chunks: list[bytes] = [chunk] if chunk else []
    size = len(chunk)
    if size > limit:
        raise _too_large(limit, f"has more than {limit} bytes (reading stopped at {size})")
    deadline: float | None = None
    while True:
        chunk = payload.read_nowait()  # what has arrived; never waits
        if not chunk:
            if payload.is_eof():
                break
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + timeout_s
                await _continue(request)
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await payload.readany()
            except TimeoutError:
                if isinstance(request.protocol, ApiConnection):
                    request.protocol.close_after_answer()  # waited long enough for the rest
                raise RequestTimeoutError(
                    "body", f"did not arrive within {timeout_s:g} s ({size} bytes read)"
                ) from None
            if not chunk:
                break
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, f"has more than {limit} bytes (reading stopped at {size})")
        chunks.append(chunk)
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)
