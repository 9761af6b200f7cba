"""The http target: POST the payload to an upstream app.

2xx is success. 408, 425, 429, 5xx, timeouts and connection errors are transient (retry); any
other status is the upstream refusing this record (dead-letter), and so is a header that cannot
be sent (a control character in a value). Redirects are not followed: a target URL that moved is a
configuration error, not something to chase with people's writes.
"""

from __future__ import annotations

from walstream.core.http_request import InvalidHeaderError, InvalidUrlError
from walstream.errors import TargetRejectedError, TargetUnavailableError
from walstream.records import Envelope
from walstream.targets.base import delivery_headers
from walstream.targets.http_client import HttpClient

__all__ = ["HttpTarget"]

DEFAULT_TIMEOUT_MS = 10_000
_TRANSIENT = frozenset({408, 425, 429})
#: How much of a refusing upstream's answer goes into the error (and so the DLQ history).
_QUOTED_BODY_CHARS = 200


class HttpTarget:
    """Posts records to the URL in each record's target (one pooled client for all of them)."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client

    async def deliver(self, envelope: Envelope) -> None:
        target = envelope.target
        url = target["url"]
        ours = delivery_headers(envelope)
        headers = [
            (
                "Content-Type",
                "application/json"
                if envelope.payload_encoding == "json"
                else "application/octet-stream",
            )
        ]
        extra = target.get("headers")
        if extra:  # the target's own headers win over Content-Type, whatever their case ...
            names = {name.lower() for name in extra}
            headers = [h for h in headers if h[0].lower() not in names]
            # ... but never over the delivery headers (Idempotency-Key is how a target
            # deduplicates): the API refuses those names, and a record logged before it did
            # still goes out with walstream's values.
            mine = {name.lower() for name in ours}
            headers += [(k, v) for k, v in extra.items() if k.lower() not in mine]
        headers += ours.items()
        timeout_s = target.get("timeout_ms", DEFAULT_TIMEOUT_MS) / 1000
        try:
            response = await self._client.post(
                url, envelope.payload_bytes(), headers, timeout_s=timeout_s
            )
        except TimeoutError as exc:
            raise TargetUnavailableError(f"POST {url}: timed out", error_class="timeout") from exc
        except OSError as exc:
            raise TargetUnavailableError(
                f"POST {url}: {type(exc).__name__}: {exc}", error_class="connection"
            ) from exc
        except (InvalidHeaderError, InvalidUrlError) as exc:
            raise TargetRejectedError(f"POST {url}: {exc}", error_class="bad_request") from exc
        status = response.status
        if 200 <= status < 300:
            return
        message = f"POST {url}: HTTP {status}"
        if response.body:
            message += f": {response.body[:_QUOTED_BODY_CHARS].decode('utf-8', 'replace')}"
        if status in _TRANSIENT or status >= 500:
            raise TargetUnavailableError(message, error_class=f"http_{status}")
        raise TargetRejectedError(message, error_class=f"http_{status}")

    async def close(self) -> None:
        """The client belongs to the pool; nothing to close here."""
