"""Mutation requests at the API's edge: parse once into frozen values, or refuse naming the field.

Shapes (JSON bodies; the txn id and seq of the per-operation routes come from the path):

* one operation, ``POST .../mutations/{txn_id}/{seq}``:
  ``{"op": "put", "table": t, "id": k, "value": v, "value_encoding": "json"|"base64",
  "original_write_time": ms}`` or ``{"op": "delete", "table": t, "id": k,
  "original_write_time": ms}`` (``original_write_time`` optional). A JSON value is stored as
  its orjson bytes (what the kv target stores for a JSON payload), a base64 one as its bytes.
* the completion marker, ``POST .../mutations/{txn_id}:complete``: ``{"count": n}``.
* a whole MutateItems, ``POST .../mutations``: ``{"txn_id": id, "operations": [op, ...]}``;
  operation i has seq i.

seq is 0-based (0..count-1): it is the operation's index in its MutateItems, and the commit
progress "n" reads "seqs below n applied". Every refusal is a BadRequestError naming the field
(PayloadTooLargeError, 413, over a limit) raised before anything is written.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from walstream.core.exact import first_unkept
from walstream.core.mutations.wire import TXN_ID, MutationLimits, OpKind, kv_key_problem
from walstream.core.numbers import as_integer
from walstream.core.target_policy import IDENTIFIER
from walstream.core.validate import original_write_time_problem
from walstream.errors import BadRequestError, PayloadTooLargeError

__all__ = [
    "MutateItems",
    "Operation",
    "parse_count",
    "parse_mutate_items",
    "parse_operation",
    "parse_seq",
    "parse_txn_id",
]

_PUT_FIELDS = frozenset({"op", "table", "id", "value", "value_encoding", "original_write_time"})
_DELETE_FIELDS = frozenset({"op", "table", "id", "original_write_time"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One put (``value`` its bytes) or delete (``value`` None) of ``id`` in kv ``table``."""

    op: OpKind
    table: str
    id: str
    value: bytes | None
    original_write_time_ms: int | None = None

    @property
    def weight(self) -> int:
        """What the operation counts against its transaction's bytes: value, id and table."""
        return len(self.value or b"") + len(self.id.encode()) + len(self.table)


@dataclass(frozen=True, slots=True, kw_only=True)
class MutateItems:
    """A whole transaction in one request: operation i has seq i."""

    txn_id: str
    operations: tuple[Operation, ...]


def parse_txn_id(value: Any, field: str = "txn_id") -> str:
    """A transaction id (walstream.core.mutations.wire.TXN_ID says which and why).

    Raises:
        BadRequestError: naming ``field``.
    """
    if not isinstance(value, str) or not TXN_ID.fullmatch(value):
        raise BadRequestError(
            field, "must be 1..128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)"
        )
    return value


def parse_seq(value: Any, limits: MutationLimits, field: str = "seq") -> int:
    """An operation's seq: an integer (or its decimal digits, from a path) in 0..operations_max-1.

    Raises:
        BadRequestError: naming ``field``; PayloadTooLargeError past the operations limit.
    """
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        value = int(value)
    seq = as_integer(value)
    if seq is None or seq < 0:
        raise BadRequestError(field, "must be an integer >= 0 (seqs are 0-based)")
    if seq >= limits.operations_max:
        raise PayloadTooLargeError(
            field, f"must be < {limits.operations_max} (operations per transaction)"
        )
    return seq


def parse_count(obj: Any, limits: MutationLimits) -> int:
    """The operation count of a completion marker body ``{"count": n}``.

    Raises:
        BadRequestError: naming ``body`` or ``count``; PayloadTooLargeError past the limit.
    """
    if not isinstance(obj, dict):
        raise BadRequestError("body", "must be a JSON object with 'count'")
    unknown = sorted(set(obj) - {"count"})
    if unknown:
        raise BadRequestError(unknown[0], "is not a completion marker field")
    count = as_integer(obj.get("count"))
    if count is None or count < 1:
        raise BadRequestError("count", "must be an integer >= 1 (the number of operations)")
    if count > limits.operations_max:
        raise PayloadTooLargeError(
            "count", f"must be <= {limits.operations_max} (operations per transaction)"
        )
    return count


def _key(obj: Mapping[str, Any], field: str) -> str:
    value = obj.get("id")
    problem = kv_key_problem(value)
    if problem is not None:
        raise BadRequestError(field, problem)
    return str(value)


def _value(obj: Mapping[str, Any], prefix: str, exact: Any) -> bytes:
    if "value" not in obj:
        raise BadRequestError(f"{prefix}value", "is required for a put")
    encoding = obj.get("value_encoding", "json")
    if encoding == "base64":
        text = obj["value"]
        if not isinstance(text, str):
            raise BadRequestError(f"{prefix}value", "must be a base64 string (value_encoding)")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
            raise BadRequestError(f"{prefix}value", "is not valid base64") from None
    if encoding != "json":
        raise BadRequestError(f"{prefix}value_encoding", "must be 'json' or 'base64'")
    found = first_unkept(exact.get("value")) if isinstance(exact, dict) else None
    if found is not None:
        raise BadRequestError(
            f"{prefix}value",
            f"holds {found[1].text}, {found[1].reason}: send it as a string, or the value as "
            "base64",
        )
    try:
        return orjson.dumps(obj["value"])
    except orjson.JSONEncodeError:  # nests deeper than orjson writes
        raise BadRequestError(f"{prefix}value", "nests too deep for a JSON value") from None


def parse_operation(
    obj: Any, limits: MutationLimits, *, now_ms: int, prefix: str = "", exact: Any = None
) -> Operation:
    """One operation body.

    Args:
        obj: the decoded JSON object.
        limits: the transaction bounds (a value may not exceed a transaction's bytes).
        now_ms: the time now (an original write time may be at most 1 h ahead).
        prefix: prepended to field names (``operations[3].``).
        exact: the same object decoded by ``walstream.core.validate.exact_body`` (None: it
            holds no number the codec would change).

    Raises:
        BadRequestError: naming the field; PayloadTooLargeError for a value over the limit.
    """
    if not isinstance(obj, dict):
        raise BadRequestError(prefix.rstrip(".") or "body", "must be a JSON object")
    op = obj.get("op")
    if op not in ("put", "delete"):
        raise BadRequestError(f"{prefix}op", "must be 'put' or 'delete'")
    unknown = sorted(set(obj) - (_PUT_FIELDS if op == "put" else _DELETE_FIELDS))
    if unknown:
        raise BadRequestError(f"{prefix}{unknown[0]}", f"is not a field of a {op}")
    table = obj.get("table")
    if not isinstance(table, str) or not IDENTIFIER.fullmatch(table):
        # the kv target quotes only such names: a SQL identifier PostgreSQL keeps whole
        raise BadRequestError(f"{prefix}table", f"must match {IDENTIFIER.pattern}")
    key = _key(obj, f"{prefix}id")
    owt = obj.get("original_write_time")
    if owt is not None:
        owt = as_integer(owt) if isinstance(owt, float) else owt
        problem = original_write_time_problem(owt, now_ms)
        if problem is not None:
            raise BadRequestError(f"{prefix}original_write_time", problem)
    value = _value(obj, prefix, exact) if op == "put" else None
    operation = Operation(op=op, table=table, id=key, value=value, original_write_time_ms=owt)
    if operation.weight > limits.txn_bytes_max:
        raise PayloadTooLargeError(
            f"{prefix}value",
            f"is {operation.weight} bytes with its id and table, over the transaction limit "
            f"of {limits.txn_bytes_max}",
        )
    return operation


def parse_mutate_items(
    obj: Any, limits: MutationLimits, *, now_ms: int, exact: Any = None
) -> MutateItems:
    """A whole MutateItems body.

    Raises:
        BadRequestError: naming the field (``operations[i].table`` ...); PayloadTooLargeError
            for too many operations or bytes.
    """
    if not isinstance(obj, dict):
        raise BadRequestError("body", "must be a JSON object with 'txn_id' and 'operations'")
    unknown = sorted(set(obj) - {"txn_id", "operations"})
    if unknown:
        raise BadRequestError(unknown[0], "is not a MutateItems field")
    txn_id = parse_txn_id(obj.get("txn_id"))
    items = obj.get("operations")
    if not isinstance(items, list) or not items:
        raise BadRequestError("operations", "must be a non-empty array")
    if len(items) > limits.operations_max:
        raise PayloadTooLargeError(
            "operations", f"holds {len(items)}, over the limit of {limits.operations_max}"
        )
    exact_items = exact.get("operations") if isinstance(exact, dict) else None
    ops: list[Operation] = []
    total = 0
    for i, item in enumerate(items):
        exact_item = exact_items[i] if isinstance(exact_items, list) else None
        op = parse_operation(
            item, limits, now_ms=now_ms, prefix=f"operations[{i}].", exact=exact_item
        )
        total += op.weight
        if total > limits.txn_bytes_max:
            raise PayloadTooLargeError(
                "operations",
                f"hold over {limits.txn_bytes_max} bytes (values, ids and tables) by "
                f"operations[{i}]",
            )
        ops.append(op)
    return MutateItems(txn_id=txn_id, operations=tuple(ops))
