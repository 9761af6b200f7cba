"""WriteToLog request validation: parse once at the edge into an Envelope, or refuse.

Every refusal is a BadRequestError naming the field, raised before anything is written.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from walstream.core.cache_request import (
    cache_op_key,
    check_cache_set_age,
    check_memcached_target,
    only_cache_ops,
)
from walstream.core.exact import Unkept, decode_exact, first_unkept, may_hold_unkept
from walstream.core.ids import new_id
from walstream.core.numbers import as_integer
from walstream.core.target_policy import ReservedTopics
from walstream.core.targets import (
    UNSENDABLE_VALUE_PROBLEM,
    has_unsendable_chars,
    parse_memcached_target,
    parse_target,
)
from walstream.errors import BadRequestError, PayloadTooLargeError
from walstream.namespaces.config import NamespaceConfig
from walstream.records import PAYLOAD_ENCODINGS, Envelope, Lifecycle

__all__ = [
    "MAX_FUTURE_SKEW_MS",
    "MAX_PAYLOAD_DEPTH",
    "exact_body",
    "invalid_json",
    "original_write_time_problem",
    "parse_batch",
    "parse_payload_text",
    "parse_write_request",
]

_REQUEST_FIELDS = frozenset(
    {"payload", "payload_encoding", "lifecycle", "target", "idempotency_token", "key"}
)
_LIFECYCLE_FIELDS = frozenset({"delay_ms", "deliver_at", "jitter_ms", "original_write_time"})
_MAX_TOKEN_CHARS = 256
_MAX_KEY_CHARS = 1024
#: An original_write_time further ahead than this would win every last-write-wins contest.
MAX_FUTURE_SKEW_MS = 3_600_000
#: How deep a JSON payload may nest: the deepest a log record holds. orjson writes at most 254
#: levels, and the record puts the payload one level down (``walstream dlq show``, which puts it
#: two down, prints a deeper one compact).
MAX_PAYLOAD_DEPTH = 253


def _path_field(path: tuple[str | int, ...]) -> str:
    """A field name for a path in a request body, down to its ``payload``:
    ``("records", 2, "payload", "a")`` -> ``records[2].payload``."""
    field = ""
    for part in path:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += f".{part}" if field else part
            if part == "payload":
                break
    return field or "body"


def _unkept_error(field: str, path: tuple[str | int, ...], number: Unkept) -> BadRequestError:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    shown = number.text if len(number.text) <= 64 else number.text[:61] + "..."
    return BadRequestError(
        field,
        f"holds {shown} at {where}, {number.reason}: the log keeps payloads exactly, so send "
        "such a number as a string, or the payload with payload_encoding=base64",
    )


def exact_body(raw: bytes) -> Any:
    """The request body decoded again with its numbers exact (walstream.core.exact), or None
    when it holds no number the codec could change (the common case: no second decoding).

    Raises:
        BadRequestError: ``body`` nests too deep for the exact decoder.
    """
    if not may_hold_unkept(raw):
        return None
    try:
        return decode_exact(raw)
    except RecursionError:
        raise BadRequestError(
            "body", f"nests too deep (a payload may nest {MAX_PAYLOAD_DEPTH} levels)"
        ) from None


def invalid_json(raw: bytes, detail: str) -> BadRequestError:
    """The refusal of a body orjson could not decode: naming the payload whose number it
    refused (``1e400``) when the body is JSON otherwise, else ``body``."""
    try:
        exact = decode_exact(raw)
    except (ValueError, RecursionError):
        exact = None
    found = first_unkept(exact) if exact is not None else None
    if found is None:
        return BadRequestError("body", f"invalid JSON: {detail}")
    path, number = found
    if "payload" not in path[:3]:  # not in a payload (top level, or records[i]): a request field
        return _unkept_field_error(_path_field(path), path, number)
    return _unkept_error(_path_field(path), path, number)


#: What a request's number fields take, by name (a number the JSON decoder refuses, 1e400, is
#: none of them: the payload's advice, a string or base64, would be wrong for them).
_NUMBER_FIELDS = {
    "delay_ms": "an integer of ms >= 0",
    "jitter_ms": "an integer of ms >= 0",
    "deliver_at": "an integer of ms since the epoch",
    "original_write_time": "a positive integer of ms since the epoch",
    "timeout_ms": "an integer of ms in 1..300000",
    "rate": "a number of records per second > 0",
    "since": "ms since the epoch (an integer) or a time string",
    "until": "ms since the epoch (an integer) or a time string",
    "from": "ms since the epoch (an integer) or a time string",
    "to": "ms since the epoch (an integer) or a time string",
}


def _unkept_field_error(field: str, path: tuple[str | int, ...], number: Unkept) -> BadRequestError:
    shown = number.text if len(number.text) <= 64 else number.text[:61] + "..."
    name = path[-1] if path else ""
    takes = _NUMBER_FIELDS.get(name, "") if isinstance(name, str) else ""
    return BadRequestError(
        field,
        f"is {shown}, {number.reason}: {field} takes {takes or 'a number within a 64-bit float'}",
    )


def original_write_time_problem(owt: Any, now_ms: int) -> str | None:
    """What is wrong with an ``original_write_time`` at ``now_ms``, or None: the API's bounds,
    which the worker applies again to a record read from a topic (it may not come from the API).
    """
    if not isinstance(owt, int) or isinstance(owt, bool) or owt <= 0:
        return "must be a positive integer (ms since the epoch)"
    if owt > now_ms + MAX_FUTURE_SKEW_MS:
        return "is more than 1 h in the future"
    return None


def _non_negative_int(obj: dict[str, Any], name: str, field: str) -> int:
    value = as_integer(obj.get(name, 0))  # 5.0 is the integer 5 (JSON Schema's integer)
    if value is None:
        raise BadRequestError(field, "must be an integer")
    if value < 0:
        raise BadRequestError(field, "must be >= 0")
    return value


def _optional_str(obj: dict[str, Any], name: str, max_chars: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequestError(name, "must be a non-empty string")
    if len(value) > max_chars:
        raise BadRequestError(name, f"must be at most {max_chars} characters")
    return value


def _payload_size(obj: dict[str, Any], encoding: str) -> int:
    payload = obj["payload"]
    if encoding == "base64":
        if not isinstance(payload, str):
            raise BadRequestError("payload", "must be a base64 string when payload_encoding=base64")
        try:
            return len(base64.b64decode(payload, validate=True))
        except ValueError:  # binascii.Error, or non-ASCII characters
            raise BadRequestError("payload", "is not valid base64") from None
    try:  # one level down, as in the log record: the encoder refuses what it could not log
        return len(orjson.dumps([payload])) - 2
    except orjson.JSONEncodeError:
        raise BadRequestError(
            "payload", f"nests more than {MAX_PAYLOAD_DEPTH} levels deep"
        ) from None


def _check_exact(exact: Any) -> None:
    """Refuse a payload holding a number the log would change (walstream.core.exact)."""
    found = first_unkept(exact.get("payload") if isinstance(exact, dict) else None)
    if found is not None:
        path, number = found
        raise _unkept_error("payload", ("payload", *path), number)


def parse_payload_text(text: bytes) -> Any:
    """A payload given as JSON text (``walstream write``), decoded under the API's rules.

    Raises:
        BadRequestError: not JSON, or ``payload`` holds a number the log would change, or
            nests deeper than a log record holds.
    """
    wrapped = b'{"payload":' + text + b"}"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise invalid_json(wrapped, str(exc)) from None
    exact = exact_body(wrapped)
    if exact is not None:
        _check_exact(exact)
    _payload_size({"payload": value}, "json")  # as deep as a log record holds, or refused
    return value


def _lifecycle(obj: Any, ns: NamespaceConfig, now_ms: int, rand: float) -> Lifecycle:
    if obj is None:
        return Lifecycle(now_ms, now_ms, 0)  # deliver_at_ms, original_write_time_ms, delay_ms
    if not isinstance(obj, dict):
        raise BadRequestError("lifecycle", "must be an object")
    unknown = sorted(set(obj) - _LIFECYCLE_FIELDS)
    if unknown:
        raise BadRequestError(f"lifecycle.{unknown[0]}", "is not a lifecycle field")
    delay_field = "lifecycle.delay_ms"
    if "deliver_at" in obj:
        if "delay_ms" in obj:
            raise BadRequestError("lifecycle.deliver_at", "give either deliver_at or delay_ms")
        delay_field = "lifecycle.deliver_at"
        deliver_at = _non_negative_int(obj, "deliver_at", delay_field)
        delay = max(0, deliver_at - now_ms)  # a time already past: due now
    else:
        delay = _non_negative_int(obj, "delay_ms", delay_field)
    jitter = _non_negative_int(obj, "jitter_ms", "lifecycle.jitter_ms")
    if delay + jitter > ns.max_delay_ms:
        field = delay_field if delay > ns.max_delay_ms else "lifecycle.jitter_ms"
        raise BadRequestError(
            field,
            f"the delay plus jitter_ms must be <= {ns.max_delay_ms} ms (the namespace's max delay)",
        )
    owt = obj.get("original_write_time", now_ms)
    if isinstance(owt, float):  # 5.0 is the integer 5 (JSON Schema's integer)
        owt = as_integer(owt)
    problem = original_write_time_problem(owt, now_ms)
    if problem is not None:
        raise BadRequestError("lifecycle.original_write_time", problem)
    total = delay + int(rand * jitter)
    return Lifecycle(deliver_at_ms=now_ms + total, original_write_time_ms=owt, delay_ms=total)


def parse_write_request(
    obj: Any,
    ns: NamespaceConfig,
    *,
    now_ms: int,
    rand: float,
    reserved: ReservedTopics,
    exact: Any = None,
    make_id: Callable[[int], str] = new_id,
) -> Envelope:
    """Validate one WriteToLog request body against its namespace.

    Args:
        obj: the decoded JSON body.
        ns: the namespace's configuration (limits, default target).
        now_ms: the current time; lifecycle times are computed from it.
        rand: a number in [0, 1) that places the record inside its jitter window.
        reserved: walstream's own topics (walstream.topology.reserved_topics): never a target.
        exact: the same body from ``exact_body`` (None: it holds no number the log would change).
        make_id: builds the record id from ``now_ms``.

    Raises:
        BadRequestError: naming the field; PayloadTooLargeError (413) for an oversized payload;
            TargetNotAllowedError (403) for a target the namespace's policy refuses
            (walstream.core.target_policy).
    """
    if not isinstance(obj, dict):
        raise BadRequestError("body", "must be a JSON object")
    if not _REQUEST_FIELDS.issuperset(obj):
        unknown = sorted(set(obj) - _REQUEST_FIELDS)
        raise BadRequestError(unknown[0], "is not a WriteToLog field")
    if "payload" not in obj:
        raise BadRequestError("payload", "is required")
    encoding = obj.get("payload_encoding", "json")
    if encoding not in PAYLOAD_ENCODINGS:
        raise BadRequestError("payload_encoding", "must be 'json' or 'base64'")
    size = _payload_size(obj, encoding)
    if exact is not None and encoding == "json":
        _check_exact(exact)
    if size > ns.max_payload_bytes:
        raise PayloadTooLargeError(
            "payload", f"is {size} bytes, over the namespace limit of {ns.max_payload_bytes}"
        )
    target: Mapping[str, Any]
    raw_target = obj.get("target")
    if raw_target is not None:
        if isinstance(raw_target, dict) and raw_target.get("type") == "memcached":
            target = parse_memcached_target(raw_target).wire  # a cache operation (issue 17)
        else:
            target = parse_target(raw_target).wire
        only_cache_ops(target, ns)
        ns.target_policy.check(target, reserved=reserved)  # 403 naming the field
    elif ns.replication is not None:
        raise BadRequestError("target", "is required: a memcached operation (op, key, ...)")
    elif ns.target is not None:
        target = ns.target.wire
    else:
        raise BadRequestError("target", "is required: the namespace has no default target")
    lifecycle = _lifecycle(obj.get("lifecycle"), ns, now_ms, rand)
    record_id = make_id(now_ms)
    # A write without a token is its own logical write: its unique id serves as the token.
    token = _optional_str(obj, "idempotency_token", _MAX_TOKEN_CHARS) or record_id
    if has_unsendable_chars(token):  # targets send it as the Idempotency-Key header
        raise BadRequestError("idempotency_token", UNSENDABLE_VALUE_PROBLEM)
    key = _optional_str(obj, "key", _MAX_KEY_CHARS)
    if target["type"] == "memcached":
        check_memcached_target(target, obj["payload"], ns)
        check_cache_set_age(target, lifecycle.original_write_time_ms, ns, now_ms)
        key = cache_op_key(obj, target, key, lifecycle)
    # Positional on purpose: keyword construction of an 11-field NamedTuple costs ~3x more, and
    # this runs once per WriteToLog. The order is Envelope's field order.
    return Envelope(
        record_id,  # id
        ns.name,  # namespace
        key,  # key
        obj["payload"],  # payload
        encoding,  # payload_encoding
        target,  # target
        lifecycle,  # lifecycle
        token,  # idempotency_token
        now_ms,  # created_at_ms
    )


def parse_batch(obj: Any, max_records: int) -> list[Any]:
    """The list of request bodies in a batch request (each validated on its own later).

    Raises:
        BadRequestError: the batch itself is malformed (not its records).
    """
    if not isinstance(obj, dict):
        raise BadRequestError("body", "must be a JSON object with 'records'")
    unknown = sorted(set(obj) - {"records"})
    if unknown:
        raise BadRequestError(unknown[0], "is not a batch field")
    records = obj.get("records")
    if not isinstance(records, list) or not records:
        raise BadRequestError("records", "must be a non-empty array")
    if len(records) > max_records:
        raise PayloadTooLargeError("records", f"at most {max_records} records per batch")
    return records
