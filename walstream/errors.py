"""walstream errors: one tree, mapped to HTTP in one place (walstream.api.middlewares).

* WalError
  x BadRequestError(field, reason)        -> HTTP 400, never written
    + PayloadTooLargeError                -> HTTP 413
    + RequestTimeoutError                 -> HTTP 408 (the body did not arrive in time)
  x NamespaceNotFoundError(namespace)     -> HTTP 404
    + NamespaceUnavailableError           -> HTTP 503 (its latest config event is unreadable)
  x UnauthorizedError                     -> HTTP 401 + WWW-Authenticate: Bearer (no token)
  x ForbiddenError                        -> HTTP 403 (unknown token, or not allowed here)
  x OverloadedError(retry_after)          -> HTTP 503 + Retry-After, durable=FALSE
  x ServiceUnavailableError               -> HTTP 503 (a feature this process cannot serve)
  x RedriveConflictError (walstream.dlq)  -> HTTP 409 (a redrive of the namespace is running)
  x WriteUnknownError                     -> HTTP 504, durable=UNKNOWN (may be on the log)
  x WriteRejectedError                    -> HTTP 503, durable=FALSE (the broker refused it)
    + BrokerUnavailableError(retry_after) -> HTTP 503 + Retry-After (not handed to the broker)
  x ConfigError(key, value, reason)       -> settings / namespace files; CLI exit 2
  x TargetError (retriable: bool)         -> retry if retriable, else DLQ
    + TargetUnavailableError              retriable = True  (timeouts, 5xx, locked database)
    + TargetRejectedError                 retriable = False (4xx, constraint violations)
  x PoisonRecordError(reason)             -> undecodable record; routed to the DLQ, stream continues
  x EmitRefusedError(topic, reason)       -> the worker's producer or broker refuses a record for
                                             good (too large, bad topic); the record goes to the DLQ
  x BrokerError                           -> the embedded broker could not start
  x TopicError(topic, reason)             -> a topic could not be created, or is not as walstream
                                             needs it (partitions, a name in use); CLI exit 1
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "BrokerError",
    "BrokerUnavailableError",
    "ConfigError",
    "EmitRefusedError",
    "ForbiddenError",
    "NamespaceNotFoundError",
    "NamespaceUnavailableError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PoisonRecordError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "TargetError",
    "TargetRejectedError",
    "TargetUnavailableError",
    "TopicError",
    "UnauthorizedError",
    "WalError",
    "WriteRejectedError",
    "WriteUnknownError",
]


class WalError(Exception):
    """Base of every error walstream raises on purpose."""


class BadRequestError(WalError):
    """Client input is invalid; nothing was written."""

    status = 400

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PayloadTooLargeError(BadRequestError):
    """The payload is over the namespace's limit."""

    status = 413


class RequestTimeoutError(BadRequestError):
    """The request's body did not arrive within WALSTREAM_BODY_READ_TIMEOUT_S."""

    status = 408


class NamespaceNotFoundError(WalError):
    """The namespace is not (or no longer) in the registry."""

    def __init__(self, namespace: str) -> None:
        super().__init__(f"namespace {namespace!r} is not defined")
        self.namespace = namespace


class NamespaceUnavailableError(NamespaceNotFoundError):
    """The namespace's latest control event is unreadable: no config is in force (HTTP 503;
    the worker holds its records as for an unknown namespace)."""

    def __init__(self, namespace: str, reason: str) -> None:
        super().__init__(namespace)
        self.args = (
            f"namespace {namespace!r} is unavailable: its latest configuration event is "
            f"unreadable ({reason})",
        )
        self.reason = reason


class UnauthorizedError(WalError):
    """The request carries no (usable) bearer token: HTTP 401."""

    status = 401


class ForbiddenError(WalError):
    """The token is unknown, or not allowed for this namespace or operation: HTTP 403."""

    status = 403


class OverloadedError(WalError):
    """The process sheds load; the client should retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float, reason: str = "too many writes in flight") -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ServiceUnavailableError(WalError):
    """This process does not offer what was asked (e.g. DLQ endpoints without a cluster): 503."""


class WriteUnknownError(WalError):
    """The broker did not answer in time: the write may or may not be on the log."""


class WriteRejectedError(WalError):
    """The broker answered with a definite refusal: the write is not on the log."""


class BrokerUnavailableError(WriteRejectedError):
    """The broker did not take the record (no answer, no metadata in time): it is not on the
    log; the client should retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(f"broker unavailable: {reason}")
        self.retry_after = retry_after


class ConfigError(WalError):
    """A setting or a namespace definition is invalid."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(f"{key}={value!r}: {reason}")
        self.key = key
        self.value = value
        self.reason = reason


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


class BrokerError(WalError):
    """The embedded broker could not be started or did not answer."""


class TopicError(WalError):
    """A topic could not be created, or is not as walstream needs it (``ns apply`` refuses)."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"topic {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason
