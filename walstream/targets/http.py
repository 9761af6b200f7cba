"""The http target: POST the payload to an upstream app.

2xx is success. 408, 429, 5xx, timeouts and connection errors are transient (retry); any other
status is the upstream refusing this record (dead-letter). Redirects are not followed: a target
URL that moved is a configuration error, not something to chase with people's writes.
"""

from __future__ import annotations

import aiohttp

from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.records import Envelope
from walstream.targets.base import delivery_headers

__all__ = ["HttpTarget"]

DEFAULT_TIMEOUT_MS = 10_000
_TRANSIENT = frozenset({408, 425, 429})


class HttpTarget:
    """Posts records to the URL in each record's target (one pooled session for all of them)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def deliver(self, envelope: Envelope) -> None:
        target = envelope.target
        url = target["url"]
        headers = {
            "Content-Type": "application/json"
            if envelope.payload_encoding == "json"
            else "application/octet-stream",
            **delivery_headers(envelope),
            **target.get("headers", {}),
        }
        timeout = aiohttp.ClientTimeout(total=target.get("timeout_ms", DEFAULT_TIMEOUT_MS) / 1000)
        try:
            async with self._session.post(
                url,
                data=envelope.payload_bytes(),
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError as exc:
            raise TargetUnavailableError(f"POST {url}: timed out", error_class="timeout") from exc
        except aiohttp.ClientError as exc:
            raise TargetUnavailableError(
                f"POST {url}: {type(exc).__name__}: {exc}", error_class="connection"
            ) from exc
        if 200 <= status < 300:
            return
        if status in _TRANSIENT or status >= 500:
            raise TargetUnavailableError(f"POST {url}: HTTP {status}", error_class=f"http_{status}")
        raise TargetRejectedError(f"POST {url}: HTTP {status}", error_class=f"http_{status}")

    async def close(self) -> None:
        """The session belongs to the pool; nothing to close here."""
