"""walstream errors: one tree. Each class carries the HTTP status the API answers it with and
the ``durable`` value of the answer's body (``FALSE``: not on the log; ``UNKNOWN``: it may be),
as class attributes, and the headers it adds (``headers()``); walstream.api.responses turns any
of them into a response with one lookup. A class without its own inherits its parent's; 500
UNKNOWN is WalError's: an error the API should never meet (a bug if it does).

Columns: class (constructor arguments), HTTP status, durable, what it means or where it goes.
tests/unit/test_errors.py holds this tree to the classes: every class listed, each one's parent,
status and durable as they are.

* WalError                                500 UNKNOWN  base of every error raised on purpose
  x BadRequestError(field, reason)        400 FALSE    client input; body names field, reason
    + PayloadTooLargeError                413 FALSE    over a route's body or the record limit
    + RequestTimeoutError                 408 FALSE    the body did not arrive in time
    + TargetNotAllowedError               403 FALSE    a target the namespace's policy refuses
  x NamespaceNotFoundError(namespace)     404 FALSE    not (or no longer) in the registry
    + NamespaceUnavailableError           503 FALSE    its latest config event is unreadable
  x MutationsNotEnabledError(namespace)   404 FALSE    the namespace has no ``mutations`` block
  x RouteNotFoundError                    404 FALSE    no such path (or no redrive/replay here)
  x MethodNotAllowedError(method, allowed)
                                          405 FALSE    + Allow: the path's methods
  x UnauthorizedError                     401 FALSE    + WWW-Authenticate: Bearer (no token)
  x ForbiddenError                        403 FALSE    unknown token, or not allowed here
  x RedriveConflictError                  409 FALSE    a redrive of the namespace is running
  x ReplayConflictError                   409 FALSE    a replay of it runs in this process
  x OverloadedError(retry_after)          503 FALSE    + Retry-After: load shed, or registry loading
  x ServiceUnavailableError               503 FALSE    a feature this process does not serve
  x WriteUnknownError                     504 UNKNOWN  no answer from the broker in time
  x WriteRejectedError                    503 FALSE    the broker refused it
    + BrokerUnavailableError(reason, retry_after)
                                          503 FALSE    + Retry-After: not handed to the broker
  x ConfigError(key, value, reason)       500 UNKNOWN  settings, namespace files: CLI exit 2
                                                       (a live namespace's topics: exit 1)
  x VersionConflictError                  500 UNKNOWN  ns apply --expect-version lost: exit 1
  x TopicError(topic, reason)             500 UNKNOWN  a topic not created, or not as needed:
                                                       CLI exit 1
  x BrokerError                           500 UNKNOWN  the embedded broker did not start/answer
  x TargetError(message)                  500 UNKNOWN  an attempt failed: retried if
                                                       ``retriable``, else dead-lettered
    + TargetUnavailableError              500 UNKNOWN  retriable (timeouts, 5xx, locked db)
    + TargetRejectedError                 500 UNKNOWN  not retriable (4xx, constraints)
  x PoisonRecordError(reason)             500 UNKNOWN  an undecodable record: dead-lettered as
                                                       it was (held while its namespace is
                                                       unknown), the stream goes on
  x EmitRefusedError(topic, reason)       500 UNKNOWN  the worker's write refused for good (too
                                                       large, bad topic): the record goes to
                                                       the DLQ
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "BadRequestError",
    "BrokerError",
    "BrokerUnavailableError",
    "ConfigError",
    "Durable",
    "EmitRefusedError",
    "ForbiddenError",
    "MethodNotAllowedError",
    "MutationsNotEnabledError",
    "NamespaceNotFoundError",
    "NamespaceUnavailableError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PoisonRecordError",
    "RedriveConflictError",
    "ReplayConflictError",
    "RequestTimeoutError",
    "RouteNotFoundError",
    "ServiceUnavailableError",
    "TargetError",
    "TargetNotAllowedError",
    "TargetRejectedError",
    "TargetUnavailableError",
    "TopicError",
    "UnauthorizedError",
    "VersionConflictError",
    "WalError",
    "WriteRejectedError",
    "WriteUnknownError",
]

#: Whether a write is on the log, as an API answer says it: TRUE only once the broker acked.
Durable = Literal["TRUE", "FALSE", "UNKNOWN"]


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))}


class WalError(Exception):
    """Base of every error walstream raises on purpose."""

    #: The HTTP status the API answers this error with.
    status: ClassVar[int] = 500
    #: The answer's ``durable``: FALSE, nothing was written; UNKNOWN, it may be on the log.
    durable: ClassVar[Durable] = "UNKNOWN"

    def headers(self) -> dict[str, str]:
        """The HTTP headers the answer carries besides the body (none by default)."""
        return {}


class BadRequestError(WalError):
    """Client input is invalid; nothing was written."""

    status = 400
    durable = "FALSE"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PayloadTooLargeError(BadRequestError):
    """The body is over its route's limit, or the record over WALSTREAM_MAX_RECORD_BYTES."""

    status = 413


class RequestTimeoutError(BadRequestError):
    """The request's body did not arrive within WALSTREAM_BODY_READ_TIMEOUT_S."""

    status = 408


class TargetNotAllowedError(BadRequestError):
    """The target names a destination the namespace's policy does not allow
    (walstream.core.target_policy)."""

    status = 403


class NamespaceNotFoundError(WalError):
    """The namespace is not (or no longer) in the registry."""

    status = 404
    durable = "FALSE"

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} is not defined")
        self.namespace = namespace


class NamespaceUnavailableError(NamespaceNotFoundError):
    """The namespace's latest control event is unreadable: no config is in force (HTTP 503;
    the worker holds its records as for an unknown namespace)."""

    status = 503

    def __init__(self, namespace: str, reason: str) -> None:
        super().__init__(namespace)
        self.args = (
            f"namespace {namespace!r} is unavailable: its latest configuration event is "
            f"unreadable ({reason})",
        )
        self.reason = reason


class MutationsNotEnabledError(WalError):
    """The namespace takes no multi-partition mutations (its configuration has no
    ``mutations`` block): HTTP 404 on the mutation routes, nothing written."""

    status = 404
    durable = "FALSE"

    def __init__(self, namespace: str) -> None:
        super().__init__(
            f"namespace {namespace!r} takes no mutations (its configuration has no "
            "'mutations' block)"
        )
        self.namespace = namespace


class RouteNotFoundError(WalError):
    """No route has this path, or nothing is there (no redrive or replay of the namespace in
    this process): HTTP 404."""

    status = 404
    durable = "FALSE"


class MethodNotAllowedError(WalError):
    """The path exists, but not for this method (HTTP 405, with Allow)."""

    status = 405
    durable = "FALSE"

    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(f"method {method} not allowed; allowed: {', '.join(allowed)}")
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class UnauthorizedError(WalError):
    """The request carries no (usable) bearer token: HTTP 401."""

    status = 401
    durable = "FALSE"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="walstream"'}


class ForbiddenError(WalError):
    """The token is unknown, or not allowed for this namespace or operation: HTTP 403."""

    status = 403
    durable = "FALSE"


class RedriveConflictError(WalError):
    """A redrive of this namespace is already running, here or in another process (HTTP 409)."""

    status = 409
    durable = "FALSE"


class ReplayConflictError(WalError):
    """A replay of this namespace is already running in this process (HTTP 409)."""

    status = 409
    durable = "FALSE"


class OverloadedError(WalError):
    """The process sheds load; the client should retry after ``retry_after`` seconds."""

    status = 503
    durable = "FALSE"

    def __init__(self, retry_after: float, reason: str = "too many writes in flight") -> None:
        super().__init__(reason)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return _retry_after(self.retry_after)


class ServiceUnavailableError(WalError):
    """This process does not offer what was asked (e.g. DLQ endpoints without a cluster): 503."""

    status = 503
    durable = "FALSE"


class WriteUnknownError(WalError):
    """The broker did not answer in time: the write may or may not be on the log."""

    status = 504
    durable = "UNKNOWN"


class WriteRejectedError(WalError):
    """The broker answered with a definite refusal: the write is not on the log."""

    status = 503
    durable = "FALSE"


class BrokerUnavailableError(WriteRejectedError):
    """The broker did not take the record (no answer, no metadata in time): it is not on the
    log; the client should retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(f"broker unavailable: {reason}")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return _retry_after(self.retry_after)


class ConfigError(WalError):
    """A setting or a namespace definition is invalid."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(f"{key}={value!r}: {reason}")
        self.key = key
        self.value = value
        self.reason = reason


class VersionConflictError(WalError):
    """``ns apply --expect-version`` saw another version, or a concurrent apply won (exit 1)."""


class TopicError(WalError):
    """A topic could not be created, or is not as walstream needs it (``ns apply`` refuses)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"topic {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class BrokerError(WalError):
    """The embedded broker could not be started or did not answer."""


class TargetError(WalError):
    """A delivery attempt failed; ``retriable`` says whether trying again can help.

    ``error_class`` names the failure for the record's history, the DLQ and a namespace's
    ``non_retryable`` list (``http_503``, ``timeout``, ``connection`` ...).
    """

    retriable = True

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class or type(self).__name__


class TargetUnavailableError(TargetError):
    """The target could not take the write now (timeout, overload, outage): retry later."""

    retriable = True


class TargetRejectedError(TargetError):
    """The target refused the write for good (bad request, conflict): dead-letter it."""

    retriable = False


class PoisonRecordError(WalError):
    """A record on a topic cannot be decoded; it goes to the DLQ with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmitRefusedError(WalError):
    """A record the worker writes can never be written to ``topic`` (too large, invalid topic)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason
