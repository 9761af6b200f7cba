"""Versioned memcached items: last-write-wins on a cache that keeps no timestamps (issue 17).

memcached stores bytes and a CAS number, nothing else, so walstream stores an operation's
version with the value, in a compact binary header (the item format:
:mod:`walstream.core.cache_item`).

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
from dataclasses import dataclass, replace
from enum import Enum

from walstream.core.cache_item import (
    FORMAT_VERSION,
    HEADER_BYTES,
    MAGIC,
    NO_VERSION,
    TOKEN_MAX_BYTES,
    WRITE_TIME_MAX_MS,
    Foreign,
    Kind,
    Stored,
    StoredItem,
    decode,
    encode,
)
from walstream.core.lww import Outcome as LwwOutcome
from walstream.core.lww import Version, should_apply

#: The item format's names (walstream.core.cache_item) are here too: the callers of the LWW
#: rules read items with them, in one vocabulary.
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
#: What a key sent as it is may not hold: spaces and control characters.
_BAD_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]")


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
    if not 0 <= write_ms <= WRITE_TIME_MAX_MS:
        return PoisonReason.VERSION_OUT_OF_RANGE
    if expires_at_ms(write_ms, op.ttl_s) > WRITE_TIME_MAX_MS:
        return PoisonReason.VERSION_OUT_OF_RANGE
    if token_bytes > TOKEN_MAX_BYTES:
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
            version=NO_VERSION, kind=Kind.TOUCHED, expires_at_ms=at, touch=op.version
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
