"""Wire formats: the versioned record envelope, encoded with orjson.

A record's Kafka value is one JSON object with ``"v": 1``; optional fields at their defaults
(``key`` null, ``payload_encoding`` json, ``delay_ms``, ``attempt``, ``not_before_ms``,
``first_attempt_ms`` and ``redrive`` 0, ``history`` empty) are left out and read back as those
defaults. Decoding never lets a bad record
through silently: undecodable bytes and unknown versions raise PoisonRecordError with a reason,
which consumers route to the DLQ instead of crashing (or, with Faust, acking and losing it).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from walstream.errors import PoisonRecordError

__all__ = [
    "WIRE_VERSION",
    "AttemptError",
    "Envelope",
    "Lifecycle",
    "decode_envelope",
    "encode_envelope",
]

WIRE_VERSION = 1
PAYLOAD_ENCODINGS = ("json", "base64")


class Lifecycle(NamedTuple):
    """When a record may be delivered, and when the client originally wrote it (for LWW)."""

    deliver_at_ms: int
    original_write_time_ms: int
    delay_ms: int = 0


class AttemptError(NamedTuple):
    """One failed delivery attempt, kept in the record's history."""

    at_ms: int
    attempt: int
    error_class: str
    message: str


class Envelope(NamedTuple):
    """One logged write.

    Value objects here are NamedTuples rather than frozen dataclasses: as immutable, and several
    times cheaper to build, which counts on the WriteToLog hot path (one envelope per request).
    """

    id: str
    namespace: str
    key: str | None
    #: The JSON value itself (payload_encoding "json") or base64 text ("base64").
    payload: Any
    payload_encoding: str
    target: Mapping[str, Any]
    lifecycle: Lifecycle
    idempotency_token: str
    created_at_ms: int
    attempt: int = 0
    history: tuple[AttemptError, ...] = ()
    #: Not to be delivered before this (a retry's backoff); 0: no such bound.
    not_before_ms: int = 0
    #: When the worker first tried to deliver the record (its retry budget starts there); 0: not
    #: yet. Kept apart from ``history``, which is bounded and may lose its first entries.
    first_attempt_ms: int = 0
    #: How many times the record was redriven from the DLQ. Its attempt count is kept per
    #: redrive, so a redriven copy starts a fresh count instead of passing for a stale one.
    redrive: int = 0

    @property
    def due_ms(self) -> int:
        """When the record may be delivered: its lifecycle's time, or a retry's backoff."""
        return max(self.lifecycle.deliver_at_ms, self.not_before_ms)

    def payload_bytes(self) -> bytes:
        """The payload as the bytes a target receives."""
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return orjson.dumps(self.payload)


def _envelope_dict(env: Envelope) -> dict[str, Any]:
    life = env.lifecycle
    lifecycle = {
        "deliver_at_ms": life.deliver_at_ms,
        "original_write_time_ms": life.original_write_time_ms,
    }
    if life.delay_ms:
        lifecycle["delay_ms"] = life.delay_ms
    obj = {
        "v": WIRE_VERSION,
        "id": env.id,
        "namespace": env.namespace,
        "payload": env.payload,
        "target": env.target,
        "lifecycle": lifecycle,
        "idempotency_token": env.idempotency_token,
        "created_at_ms": env.created_at_ms,
    }
    # Fields at their defaults stay off the wire: a new write is the common record, and every
    # field encoded costs the API's hot path (and the broker) for nothing.
    if env.key is not None:
        obj["key"] = env.key
    if env.payload_encoding != "json":
        obj["payload_encoding"] = env.payload_encoding
    if env.attempt:
        obj["attempt"] = env.attempt
    if env.history:
        # NamedTuples encode as JSON arrays; history entries are objects on the wire
        obj["history"] = [h._asdict() for h in env.history]
    if env.not_before_ms:
        obj["not_before_ms"] = env.not_before_ms
    if env.first_attempt_ms:
        obj["first_attempt_ms"] = env.first_attempt_ms
    if env.redrive:
        obj["redrive"] = env.redrive
    return obj


def encode_envelope(env: Envelope) -> bytes:
    """The Kafka value of a record."""
    return orjson.dumps(_envelope_dict(env))


def _need(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PoisonRecordError(f"field {name!r} missing or of the wrong type")
    return value


def _optional(obj: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    if name not in obj:
        return default
    return _need(obj, name, kind)


def decode_envelope(raw: bytes | None) -> Envelope:
    """Decode a Kafka value into an Envelope.

    Raises:
        PoisonRecordError: with a reason (undecodable, unknown version, missing field).
    """
    if raw is None:
        raise PoisonRecordError("empty value")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonRecordError(f"undecodable: {exc}") from None
    if not isinstance(obj, dict):
        raise PoisonRecordError("undecodable: not a JSON object")
    version = obj.get("v")
    if version != WIRE_VERSION:
        raise PoisonRecordError(f"unknown wire version {version!r}")
    encoding = obj.get("payload_encoding", "json")
    if encoding not in PAYLOAD_ENCODINGS:
        raise PoisonRecordError(f"unknown payload_encoding {encoding!r}")
    if encoding == "base64":
        try:
            base64.b64decode(_need(obj, "payload", str), validate=True)
        except ValueError:  # binascii.Error, or non-ASCII characters
            raise PoisonRecordError("payload is not valid base64") from None
    life = _need(obj, "lifecycle", dict)
    key = obj.get("key")
    if key is not None and not isinstance(key, str):
        raise PoisonRecordError("field 'key' of the wrong type")
    try:
        history = tuple(
            AttemptError(
                at_ms=int(h["at_ms"]),
                attempt=int(h["attempt"]),
                error_class=str(h["error_class"]),
                message=str(h["message"]),
            )
            for h in _optional(obj, "history", list, [])
        )
    except (KeyError, TypeError, ValueError):
        raise PoisonRecordError("malformed history") from None
    return Envelope(
        id=_need(obj, "id", str),
        namespace=_need(obj, "namespace", str),
        key=key,
        payload=obj.get("payload"),
        payload_encoding=encoding,
        target=_need(obj, "target", dict),
        lifecycle=Lifecycle(
            deliver_at_ms=_need(life, "deliver_at_ms", int),
            original_write_time_ms=_need(life, "original_write_time_ms", int),
            delay_ms=_optional(life, "delay_ms", int, 0),
        ),
        idempotency_token=_need(obj, "idempotency_token", str),
        created_at_ms=_need(obj, "created_at_ms", int),
        attempt=_optional(obj, "attempt", int, 0),
        history=history,
        not_before_ms=_optional(obj, "not_before_ms", int, 0),
        first_attempt_ms=_optional(obj, "first_attempt_ms", int, 0),
        redrive=_optional(obj, "redrive", int, 0),
    )
