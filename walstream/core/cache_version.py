"""Versioned memcached items: last-write-wins on a cache that keeps no timestamps (issue 17).

memcached stores bytes and a CAS number, nothing else, so walstream stores an operation's
version with the value, in a compact binary header the walstream client strips again. Format 2
(written since the touch and expiry fix; all integers unsigned big-endian)::

    offset  size  field
    0       1     magic 0xC1 (never the first byte of UTF-8 text or JSON)
    1       1     format version, 2
    2       1     kind: 0 value, 1 tombstone, 2 touched (no value known: only a touch's version)
    3       1     flags: bit 0 a touch is recorded (the touch fields below are meaningful)
    4       8     original write time of the set or delete, ms since the epoch (0 for kind 2)
    12      8     expires at, ms since the epoch (0: never): when the value expires, decided
                  by the newest of its set and the touches after it; on a tombstone and kind 2
                  the recorded touch's expiry, for a set older than that touch arriving later
    20      8     original write time of the newest touch newer than the set or delete
    28      2     idempotency token length n (of the set or delete)
    30      2     the touch's idempotency token length m
    32      n     idempotency token, UTF-8
    32 + n  m     the touch's idempotency token, UTF-8
    32+n+m  ...   the value's exact bytes (nothing for a tombstone or kind 2)

Format 1 (before; still read, never written): magic, format 1, kind (0 value, 1 tombstone),
original write time (8), token length (2), token, value: no expiry (its TTL lived in memcached
only) and no touch.

Client flags stay 0, so a plain memcached client reads the header and the value as one blob.
A version orders by (original write time, idempotency token) as :mod:`walstream.core.lww`
does, so every region decides every conflict the same way. An operation is applied only when
it is newer than what the key holds; a delete stores a versioned tombstone (kept for a TTL
longer than the longest replication lag allowed) so a late, older set cannot bring the value
back.

Expiry is measured from the original write time (a set's or touch's TTL, 0 never, over 30 days
an absolute Unix time, as memcached reads it), so every region expires a value at the same
moment (by its own clock: regions' clock skew shifts it by as much). memcached keeps the item
``tombstone_ttl_s`` longer than its expiry (:func:`exptime`): an expired value is still a
versioned marker, so a set older than it arriving late is stale, as a late set older than a
delete is; the walstream client's ``get`` reads it as a miss.

A touch keeps the version of the value and records its own: the item's expiry is the newest
touch's when that touch is newer than the value, else the value's own. State and expiry are
then a function of the highest set/delete and the highest touch a key has seen, whatever order
they arrived in (a touch of a key holding nothing or a tombstone is recorded too, for a set
older than the touch arriving later). One consequence: a touch newer than a value's expiry
gives it a new life (memcached's own touch of an expired item does nothing) where the value
had expired, because a region that gets a touch before an earlier one cannot tell whether the
earlier one kept the value alive.

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
from dataclasses import dataclass, replace
from enum import Enum

from walstream.core.lww import Outcome as LwwOutcome
from walstream.core.lww import Version, should_apply

__all__ = [
    "FORMAT_VERSION",
    "HEADER_BYTES",
    "ITEM_OVERHEAD_BYTES",
    "KEY_MAX_BYTES",
    "MAGIC",
    "RELATIVE_TTL_MAX_S",
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
    "expired",
    "expires_at_ms",
    "exptime",
    "fold",
    "newer",
]

MAGIC = 0xC1
FORMAT_VERSION = 2
_HEADER = struct.Struct(">BBBBQQQHH")
_HEADER_V1 = struct.Struct(">BBBQH")
#: Bytes of the header before the tokens.
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
#: The longest TTL memcached reads as relative seconds; a larger one is an absolute Unix time.
RELATIVE_TTL_MAX_S = 30 * 86_400
#: An absolute exptime in the past (memcached expires such an item at once).
_PAST = RELATIVE_TTL_MAX_S + 1
_TOKEN_MAX_BYTES = 2**16 - 1
_WRITE_TIME_MAX_MS = 2**64 - 1
_HAS_TOUCH = 0x01
#: What a key sent as it is may not hold: spaces and control characters.
_BAD_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]")
_NO_VERSION = Version(0, "")


class Kind(Enum):
    """What a stored item is."""

    VALUE = 0
    TOMBSTONE = 1
    #: No value known: only a touch's version and expiry (a touch of a key holding nothing).
    TOUCHED = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredItem:
    """An item walstream wrote: its version, its kind, and the value's exact bytes.

    ``expires_at_ms`` (0: never) is when the value expires (on a tombstone or a TOUCHED item:
    the recorded touch's expiry); ``touch`` the version of the newest touch newer than
    ``version`` (None: no such touch). A TOUCHED item's ``version`` is unused (0, "").
    """

    version: Version
    kind: Kind
    value: bytes = b""
    expires_at_ms: int = 0
    touch: Version | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Foreign:
    """Bytes walstream did not write (or cannot read): no version, older than any operation.

    ``expires_at_ms`` is set by a touch (0: never), None when memcached's own expiry stands.
    """

    raw: bytes
    expires_at_ms: int | None = None


#: What a key holds: nothing (None), a walstream item, or foreign bytes.
Stored = StoredItem | Foreign | None


#: Kinds by their code, and codes by kind (faster than the Enum's own lookups: once per item).
_KINDS = tuple(Kind)
_CODES = {kind: kind.value for kind in Kind}


def encode(item: StoredItem) -> bytes:
    """The bytes stored in memcached for ``item`` (header, then the value), format 2.

    Raises:
        ValueError: a write time or expiry outside 0..2**64-1, a token over 65,535 UTF-8
            bytes, or a tombstone or TOUCHED item with a value.
    """
    token = item.version.idempotency_token.encode()
    touch = item.touch or _NO_VERSION
    touch_token = touch.idempotency_token.encode()
    if len(token) > _TOKEN_MAX_BYTES or len(touch_token) > _TOKEN_MAX_BYTES:
        raise ValueError("idempotency token over 65535 bytes")
    if item.kind is not Kind.VALUE and item.value:
        raise ValueError(f"a {item.kind.name.lower()} item has no value")
    try:
        header = _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            _CODES[item.kind],
            _HAS_TOUCH if item.touch is not None else 0,
            item.version.original_write_time_ms,
            item.expires_at_ms,
            touch.original_write_time_ms,
            len(token),
            len(touch_token),
        )
    except struct.error as exc:
        raise ValueError(f"original write time or expiry out of range: {exc}") from None
    return b"".join((header, token, touch_token, item.value))


def decode(raw: bytes) -> StoredItem | Foreign:
    """Read an item's bytes (format 2, or format 1 from before); anything that is not a
    well-formed walstream item is Foreign."""
    if len(raw) < 2 or raw[0] != MAGIC:
        return Foreign(raw=raw)
    if raw[1] == 1:
        return _decode_v1(raw)
    if raw[1] != FORMAT_VERSION or len(raw) < HEADER_BYTES:
        return Foreign(raw=raw)
    _, _, kind, flags, write_ms, expires_ms, touch_ms, n, m = _HEADER.unpack_from(raw)
    end = HEADER_BYTES + n + m
    if kind > 2 or flags & ~_HAS_TOUCH or len(raw) < end:
        return Foreign(raw=raw)
    value = raw[end:]
    if kind and value:  # only a value (kind 0) has one
        return Foreign(raw=raw)
    try:
        token = raw[HEADER_BYTES : HEADER_BYTES + n].decode()
        touch = Version(touch_ms, raw[HEADER_BYTES + n : end].decode()) if flags else None
    except UnicodeDecodeError:
        return Foreign(raw=raw)
    return StoredItem(
        version=Version(write_ms, token),
        kind=_KINDS[kind],
        value=value,
        expires_at_ms=expires_ms,
        touch=touch,
    )


def _decode_v1(raw: bytes) -> StoredItem | Foreign:
    """Format 1: its expiry was memcached's alone (read as never: memcached still expires it)."""
    if len(raw) < _HEADER_V1.size:
        return Foreign(raw=raw)
    _, _, kind, write_time_ms, token_len = _HEADER_V1.unpack_from(raw)
    end = _HEADER_V1.size + token_len
    if kind not in (0, 1) or len(raw) < end:
        return Foreign(raw=raw)
    try:
        token = raw[_HEADER_V1.size : end].decode()
    except UnicodeDecodeError:
        return Foreign(raw=raw)
    value = raw[end:]
    if kind == Kind.TOMBSTONE.value and value:
        return Foreign(raw=raw)
    return StoredItem(version=Version(write_time_ms, token), kind=Kind(kind), value=value)


def newer(incoming: Version, stored: Stored) -> bool:
    """Whether a set or delete at ``incoming`` replaces what the key holds.

    Nothing, foreign bytes and a TOUCHED item are older than any version; a walstream value or
    tombstone loses to an equal version (a duplicate: same idempotency token) and to a newer one.
    """
    return _order(incoming, stored) is LwwOutcome.APPLY


def _order(incoming: Version, stored: Stored) -> LwwOutcome:
    if not isinstance(stored, StoredItem) or stored.kind is Kind.TOUCHED:
        return LwwOutcome.APPLY
    return should_apply(stored.version, incoming)


def expires_at_ms(write_time_ms: int, ttl_s: int) -> int:
    """When an operation's TTL ends, in ms since the epoch (0: never), as memcached reads a TTL
    (0 never, up to 30 days relative, beyond an absolute Unix time) but measured from the
    operation's original write time, not from when a region applies it."""
    if ttl_s == 0:
        return 0
    if ttl_s > RELATIVE_TTL_MAX_S:
        return ttl_s * 1_000
    return write_time_ms + ttl_s * 1_000


def expired(item: StoredItem, now_ms: int) -> bool:
    """Whether ``item``'s value has expired at ``now_ms`` (a get's miss; memcached still keeps
    it, a versioned marker, for the tombstone TTL)."""
    return 0 < item.expires_at_ms <= now_ms


def exptime(state: StoredItem | Foreign, *, tombstone_ttl_s: int) -> int:
    """The exptime to store ``state`` with, in memcached's terms (0 never, up to 30 days
    relative seconds, beyond an absolute Unix time).

    A value with an expiry is kept ``tombstone_ttl_s`` past it (an absolute time, so every
    region drops it at the same moment; at most 2**31-1, memcached's limit: 2038); a
    tombstone and a TOUCHED item live ``tombstone_ttl_s`` from now; a touched foreign value
    ends at its touch's expiry; anything expired for longer goes at once.
    """
    if isinstance(state, Foreign):
        at, keep_s = state.expires_at_ms or 0, 0
    elif state.kind is Kind.VALUE:
        at, keep_s = state.expires_at_ms, tombstone_ttl_s
    else:
        return tombstone_ttl_s
    if at == 0:
        return 0
    unix_s = -(-at // 1_000) + keep_s
    return min(max(unix_s, _PAST), TTL_MAX_S)


class OpKind(Enum):
    """A replicated cache operation."""

    SET = "set"
    DELETE = "delete"
    TOUCH = "touch"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheOp:
    """One cache operation with its version. ``value`` is for SET only; ``ttl_s`` is the item's
    TTL in memcached's terms (0: no expiry; over 30 days: an absolute Unix time), counted from
    the version's original write time, for SET and TOUCH, and unused by DELETE (its tombstone
    lives for the writer's tombstone TTL)."""

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

    Its key must pass :func:`check_key`, its TTL memcached's range, its version and expiry the
    header's, and its encoded item (with no touch recorded) the server's item size.
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
    write_ms = op.version.original_write_time_ms
    if not 0 <= write_ms <= _WRITE_TIME_MAX_MS:
        return PoisonReason.VERSION_OUT_OF_RANGE
    if expires_at_ms(write_ms, op.ttl_s) > _WRITE_TIME_MAX_MS:
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
    #: of a missing key does nothing either); its version is recorded all the same.
    ABSENT = "absent"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fold:
    """The state to write back for one key and the outcome of each of its operations.

    ``write`` is None when no operation changed the key (nothing to write); otherwise it is
    the item's new bytes with ``ttl_s`` its exptime in memcached's terms (:func:`exptime`).
    """

    outcomes: tuple[OpOutcome, ...]
    write: bytes | None
    ttl_s: int


_SKIPPED = {LwwOutcome.DUPLICATE: OpOutcome.DUPLICATE, LwwOutcome.STALE: OpOutcome.STALE}


def _touch(state: Stored, op: CacheOp) -> tuple[OpOutcome, StoredItem | Foreign | None]:
    """A touch's outcome over ``state`` and the state it leaves (None: unchanged)."""
    at = expires_at_ms(op.version.original_write_time_ms, op.ttl_s)
    if state is None:
        return OpOutcome.ABSENT, StoredItem(
            version=_NO_VERSION, kind=Kind.TOUCHED, expires_at_ms=at, touch=op.version
        )
    if isinstance(state, Foreign):
        return OpOutcome.APPLIED, replace(state, expires_at_ms=at)
    is_value = state.kind is Kind.VALUE
    if state.kind is not Kind.TOUCHED and op.version <= state.version:
        return (OpOutcome.STALE if is_value else OpOutcome.ABSENT), None
    if state.touch is not None and op.version <= state.touch:
        if not is_value:
            return OpOutcome.ABSENT, None
        same = op.version.idempotency_token == state.touch.idempotency_token
        return (OpOutcome.DUPLICATE if same else OpOutcome.STALE), None
    outcome = OpOutcome.APPLIED if is_value else OpOutcome.ABSENT
    return outcome, replace(state, expires_at_ms=at, touch=op.version)


def _replace(state: Stored, op: CacheOp) -> StoredItem:
    """The item a set or delete newer than ``state`` leaves: a touch newer than it stays."""
    kept: Version | None = None
    if isinstance(state, StoredItem) and state.touch is not None and state.touch > op.version:
        kept, expires = state.touch, state.expires_at_ms
    else:
        expires = expires_at_ms(op.version.original_write_time_ms, op.ttl_s)
    if op.kind is OpKind.SET:
        return StoredItem(
            version=op.version, kind=Kind.VALUE, value=op.value, expires_at_ms=expires, touch=kept
        )
    return StoredItem(
        version=op.version,
        kind=Kind.TOMBSTONE,
        expires_at_ms=expires if kept is not None else 0,
        touch=kept,
    )


def fold(stored: Stored, ops: list[CacheOp], *, tombstone_ttl_s: int) -> Fold:
    """Run one key's operations, in order, over what the key holds.

    A set or delete newer than the running state replaces it (a delete with a tombstone that
    keeps its version); one that is not is STALE, or DUPLICATE on an equal idempotency token.
    A touch newer than the value and than any touch recorded records its version and expiry
    (the value keeps its own version); on a key holding nothing or a tombstone it is ABSENT
    but recorded, for a set older than the touch arriving later. A set or delete keeps a
    recorded touch newer than itself (and its expiry). So the state written is the same
    whatever order the same operations arrive in.

    Args:
        stored: what the key holds now (read with its CAS).
        ops: the key's operations, in log order (all for the same key).
        tombstone_ttl_s: how long a tombstone lives: longer than the longest replication lag
            (an expired value is kept as long past its expiry).
    """
    state = stored
    changed = False
    outcomes: list[OpOutcome] = []
    for op in ops:
        if op.kind is OpKind.TOUCH:
            outcome, after = _touch(state, op)
        else:
            order = _order(op.version, state)
            if order is LwwOutcome.APPLY:
                outcome, after = OpOutcome.APPLIED, _replace(state, op)
            else:
                outcome, after = _SKIPPED[order], None
        if after is not None:
            state, changed = after, True
        outcomes.append(outcome)
    if not changed or state is None:
        return Fold(outcomes=tuple(outcomes), write=None, ttl_s=0)
    raw = state.raw if isinstance(state, Foreign) else encode(state)
    return Fold(
        outcomes=tuple(outcomes), write=raw, ttl_s=exptime(state, tombstone_ttl_s=tombstone_ttl_s)
    )
