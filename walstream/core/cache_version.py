"""Versioned memcached items: last-write-wins on a cache that keeps no timestamps (issue 17).

memcached stores bytes and a CAS number, nothing else, so walstream stores an operation's
version with the value, in a compact binary header the walstream client strips again:

    offset  size  field
    0       1     magic 0xC1 (never the first byte of UTF-8 text or JSON)
    1       1     format version, 1
    2       1     kind: 0 value, 1 tombstone
    3       8     original write time, ms since the epoch, unsigned big-endian
    11      2     idempotency token length n, unsigned big-endian
    13      n     idempotency token, UTF-8
    13 + n  ...   the value's exact bytes (nothing for a tombstone)

Client flags stay 0, so a plain memcached client reads the header and the value as one blob.
A version orders by (original write time, idempotency token) as :mod:`walstream.core.lww`
does, so every region decides every conflict the same way. An operation is applied only when
it is newer than what the key holds; a delete stores a versioned tombstone (kept for a TTL
longer than the longest replication lag allowed) so a late, older set cannot bring the value
back.

Bytes walstream did not write (a value set by a plain memcached client, or a header this code
cannot read) have no version: any versioned operation is newer and replaces them, and the
walstream client's ``get`` returns them unchanged.

:func:`fold` is the whole LWW decision for one key: it runs a key's operations, in order,
over the item the key holds and returns the state to write back (with a CAS check) and the
outcome of each operation.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import Enum

from walstream.core.lww import Outcome as LwwOutcome
from walstream.core.lww import Version, should_apply

__all__ = [
    "FORMAT_VERSION",
    "HEADER_BYTES",
    "ITEM_OVERHEAD_BYTES",
    "KEY_MAX_BYTES",
    "MAGIC",
    "TTL_MAX_S",
    "CacheOp",
    "Fold",
    "Foreign",
    "Kind",
    "OpKind",
    "OpOutcome",
    "PoisonReason",
    "Stored",
    "StoredItem",
    "check_key",
    "check_op",
    "decode",
    "encode",
    "fold",
    "newer",
]

MAGIC = 0xC1
FORMAT_VERSION = 1
_HEADER = struct.Struct(">BBBQH")
#: Bytes of the header before the token.
HEADER_BYTES = _HEADER.size
#: memcached's longest key (ASCII and meta protocols).
KEY_MAX_BYTES = 250
#: What memcached 1.6 (x86-64, CAS on) adds to key and value to size an item against
#: ``item_size_max``: the item struct (48), the CAS (8), the key's NUL (1) and the value's CRLF (2).
#: Measured on Debian's 1.6.18: under a 1 MiB item size the largest value is 1 MiB - 59 - key
#: length (a larger one is answered ``SERVER_ERROR object too large for cache``).
ITEM_OVERHEAD_BYTES = 59
#: memcached reads a TTL as a signed 32-bit number (over 30 days: an absolute Unix time).
TTL_MAX_S = 2**31 - 1
_TOKEN_MAX_BYTES = 2**16 - 1
_WRITE_TIME_MAX_MS = 2**64 - 1
#: What a key sent as it is may not hold: spaces and control characters.
_BAD_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]")


class Kind(Enum):
    """What a stored item is."""

    VALUE = 0
    TOMBSTONE = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredItem:
    """An item walstream wrote: its version, its kind, and the value's exact bytes."""

    version: Version
    kind: Kind
    value: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Foreign:
    """Bytes walstream did not write (or cannot read): no version, older than any operation."""

    raw: bytes


#: What a key holds: nothing (None), a walstream item, or foreign bytes.
Stored = StoredItem | Foreign | None


def encode(item: StoredItem) -> bytes:
    """The bytes stored in memcached for ``item`` (header, then the value).

    Raises:
        ValueError: a write time outside 0..2**64-1, a token over 65,535 UTF-8 bytes, or a
            tombstone with a value.
    """
    token = item.version.idempotency_token.encode()
    if len(token) > _TOKEN_MAX_BYTES:
        raise ValueError("idempotency token over 65535 bytes")
    if item.kind is Kind.TOMBSTONE and item.value:
        raise ValueError("a tombstone has no value")
    try:
        header = _HEADER.pack(
            MAGIC, FORMAT_VERSION, item.kind.value, item.version.original_write_time_ms, len(token)
        )
    except struct.error as exc:
        raise ValueError(f"original write time out of range: {exc}") from None
    return b"".join((header, token, item.value))


def decode(raw: bytes) -> StoredItem | Foreign:
    """Read an item's bytes; anything that is not a well-formed walstream item is Foreign."""
    if len(raw) < HEADER_BYTES or raw[0] != MAGIC:
        return Foreign(raw=raw)
    _, fmt, kind, write_time_ms, token_len = _HEADER.unpack_from(raw)
    end = HEADER_BYTES + token_len
    if fmt != FORMAT_VERSION or kind not in (0, 1) or len(raw) < end:
        return Foreign(raw=raw)
    try:
        token = raw[HEADER_BYTES:end].decode()
    except UnicodeDecodeError:
        return Foreign(raw=raw)
    value = raw[end:]
    if kind == Kind.TOMBSTONE.value and value:
        return Foreign(raw=raw)
    return StoredItem(version=Version(write_time_ms, token), kind=Kind(kind), value=value)


def newer(incoming: Version, stored: Stored) -> bool:
    """Whether an operation at ``incoming`` replaces what the key holds.

    Nothing and foreign bytes are older than any version; a walstream item loses to an equal
    version (a duplicate: same idempotency token) and to a newer one.
    """
    if not isinstance(stored, StoredItem):
        return True
    return should_apply(stored.version, incoming) is LwwOutcome.APPLY


class OpKind(Enum):
    """A replicated cache operation."""

    SET = "set"
    DELETE = "delete"
    TOUCH = "touch"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheOp:
    """One cache operation with its version. ``value`` is for SET only; ``ttl_s`` is the item's
    TTL in memcached's terms (0: no expiry; over 30 days: an absolute Unix time) for SET and
    TOUCH, and unused by DELETE (its tombstone lives for the writer's tombstone TTL)."""

    kind: OpKind
    key: bytes
    version: Version
    value: bytes = b""
    ttl_s: int = 0


class PoisonReason(Enum):
    """Why an operation can never be applied (retrying cannot help: it goes to the DLQ)."""

    KEY_EMPTY = "key_empty"
    KEY_TOO_LONG = "key_too_long"
    KEY_BAD_CHAR = "key_bad_char"
    VALUE_TOO_LARGE = "value_too_large"
    TTL_OUT_OF_RANGE = "ttl_out_of_range"
    VERSION_OUT_OF_RANGE = "version_out_of_range"
    VALUE_ON_NON_SET = "value_on_non_set"


def check_key(key: bytes) -> PoisonReason | None:
    """Why memcached would refuse ``key`` (sent as it is, no base64), or None.

    1 to 250 bytes, none of them a space or a control character (bytes <= 0x20 and 0x7F):
    memcached answers CLIENT_ERROR to such a key and, for a set, reads the value as a command.
    """
    if not key:
        return PoisonReason.KEY_EMPTY
    if len(key) > KEY_MAX_BYTES:
        return PoisonReason.KEY_TOO_LONG
    if _BAD_KEY_BYTE.search(key):
        return PoisonReason.KEY_BAD_CHAR
    return None


def check_op(op: CacheOp, *, item_size_max: int) -> PoisonReason | None:
    """Why ``op`` can never be stored on a server with this ``item_size_max``, or None.

    Its key must pass :func:`check_key`, its TTL memcached's range, and its encoded item the
    server's item size.
    """
    key = op.key
    key_problem = check_key(key)
    if key_problem is not None:
        return key_problem
    if not 0 <= op.ttl_s <= TTL_MAX_S:
        return PoisonReason.TTL_OUT_OF_RANGE
    if op.kind is not OpKind.SET and op.value:
        return PoisonReason.VALUE_ON_NON_SET
    token_bytes = len(op.version.idempotency_token.encode())
    if not 0 <= op.version.original_write_time_ms <= _WRITE_TIME_MAX_MS:
        return PoisonReason.VERSION_OUT_OF_RANGE
    if token_bytes > _TOKEN_MAX_BYTES:
        return PoisonReason.VERSION_OUT_OF_RANGE
    size = HEADER_BYTES + token_bytes + len(op.value)  # what encode() makes of it
    if size + len(key) + ITEM_OVERHEAD_BYTES > item_size_max:
        return PoisonReason.VALUE_TOO_LARGE
    return None


class OpOutcome(Enum):
    """What an operation did to the key (decided by :func:`fold`)."""

    APPLIED = "applied"
    #: Older than what the key holds: skipped (counted as skipped-as-stale).
    STALE = "stale"
    #: Same idempotency token as what the key holds: a redelivery, skipped.
    DUPLICATE = "duplicate"
    #: A touch of a key holding nothing or a tombstone: nothing to touch (memcached's own touch
    #: of a missing key does nothing either).
    ABSENT = "absent"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fold:
    """The state to write back for one key and the outcome of each of its operations.

    ``write`` is None when no operation changed the key (nothing to write); otherwise it is
    the item's new bytes with ``ttl_s`` its TTL.
    """

    outcomes: tuple[OpOutcome, ...]
    write: bytes | None
    ttl_s: int


def _touchable(state: Stored) -> StoredItem | Foreign | None:
    """The value a touch would touch: None for nothing or a tombstone."""
    if isinstance(state, StoredItem) and state.kind is Kind.TOMBSTONE:
        return None
    return state


def fold(stored: Stored, ops: list[CacheOp], *, tombstone_ttl_s: int) -> Fold:
    """Run one key's operations, in order, over what the key holds.

    A set or delete newer than the running state replaces it (a delete with a tombstone that
    keeps its version); one that is not is STALE, or DUPLICATE on an equal idempotency token.
    A touch sets the TTL of the value in place when the value is not newer than the touch; it
    keeps the value's version, so a set older than the touch but newer than the value still
    wins when it arrives late (only the TTL can then differ from the origin region's).

    Args:
        stored: what the key holds now (read with its CAS).
        ops: the key's operations, in log order (all for the same key).
        tombstone_ttl_s: how long a tombstone lives: longer than the longest replication lag.
    """
    state = stored
    written: StoredItem | Foreign | None = None
    ttl_s = 0
    outcomes: list[OpOutcome] = []
    for op in ops:
        if op.kind is OpKind.TOUCH:
            item = _touchable(state)
            if item is None:
                outcome = OpOutcome.ABSENT
            elif isinstance(item, StoredItem) and op.version <= item.version:
                outcome = OpOutcome.STALE
            else:
                outcome = OpOutcome.APPLIED
                written, ttl_s = item, op.ttl_s
        elif newer(op.version, state):
            outcome = OpOutcome.APPLIED
            if op.kind is OpKind.SET:
                written = StoredItem(version=op.version, kind=Kind.VALUE, value=op.value)
                ttl_s = op.ttl_s
            else:
                written = StoredItem(version=op.version, kind=Kind.TOMBSTONE)
                ttl_s = tombstone_ttl_s
            state = written
        else:
            same = (
                isinstance(state, StoredItem)
                and state.version.idempotency_token == op.version.idempotency_token
            )
            outcome = OpOutcome.DUPLICATE if same else OpOutcome.STALE
        outcomes.append(outcome)
    if written is None:
        return Fold(outcomes=tuple(outcomes), write=None, ttl_s=0)
    raw = written.raw if isinstance(written, Foreign) else encode(written)
    return Fold(outcomes=tuple(outcomes), write=raw, ttl_s=ttl_s)
