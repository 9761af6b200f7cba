"""The memcached item walstream writes (issue 17): a version header, then the value's exact bytes.

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
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from walstream.core.lww import Version

__all__ = [
    "FORMAT_VERSION",
    "HAS_TOUCH",
    "HEADER_BYTES",
    "MAGIC",
    "NO_VERSION",
    "TOKEN_MAX_BYTES",
    "WRITE_TIME_MAX_MS",
    "Foreign",
    "Kind",
    "Stored",
    "StoredItem",
    "decode",
    "encode",
]

MAGIC = 0xC1
FORMAT_VERSION = 2
_HEADER = struct.Struct(">BBBBQQQHH")
_HEADER_V1 = struct.Struct(">BBBQH")
#: Bytes of the header before the tokens.
HEADER_BYTES = _HEADER.size
#: The longest idempotency token a header holds (its length is 2 bytes), and the largest write
#: time or expiry (8 bytes).
TOKEN_MAX_BYTES = 2**16 - 1
WRITE_TIME_MAX_MS = 2**64 - 1
#: The flag of a recorded touch.
HAS_TOUCH = 0x01
#: The version of nothing (a TOUCHED item's; a touch field left unset).
NO_VERSION = Version(0, "")


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
    touch = item.touch or NO_VERSION
    touch_token = touch.idempotency_token.encode()
    if len(token) > TOKEN_MAX_BYTES or len(touch_token) > TOKEN_MAX_BYTES:
        raise ValueError("idempotency token over 65535 bytes")
    if item.kind is not Kind.VALUE and item.value:
        raise ValueError(f"a {item.kind.name.lower()} item has no value")
    try:
        header = _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            _CODES[item.kind],
            HAS_TOUCH if item.touch is not None else 0,
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
    if kind > 2 or flags & ~HAS_TOUCH or len(raw) < end:
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
