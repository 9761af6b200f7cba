"""Versioned memcached items (issue 17): the item format, LWW decisions, poison checks."""

from __future__ import annotations

import itertools
import struct
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.cache_version import (
    FORMAT_VERSION,
    HEADER_BYTES,
    ITEM_OVERHEAD_BYTES,
    KEY_MAX_BYTES,
    MAGIC,
    RELATIVE_TTL_MAX_S,
    TTL_MAX_S,
    CacheOp,
    Foreign,
    Kind,
    OpKind,
    OpOutcome,
    PoisonReason,
    StoredItem,
    check_op,
    decode,
    encode,
    expired,
    expires_at_ms,
    exptime,
    fold,
    newer,
)
from walstream.core.lww import Version

T0 = 1_800_000_000_000  # ms since the epoch (January 2027): expiries are counted from it
V1 = Version(T0 + 1_000, "a")
V2 = Version(T0 + 2_000, "b")
V3 = Version(T0 + 3_000, "c")
TOMB_TTL = 3_600


def kept(version, ttl):
    """The exptime of a value written at ``version`` with ``ttl``: its expiry, as an absolute
    Unix time, plus the tombstone TTL."""
    return -(-(version.original_write_time_ms + ttl * 1_000) // 1_000) + TOMB_TTL


ONE_MIB = 1024 * 1024


def item(version, value=b"x", kind=Kind.VALUE):
    return StoredItem(version=version, kind=kind, value=value)


def written(result):
    """The item a fold writes (it writes one)."""
    assert result.write is not None
    stored = decode(result.write)
    assert isinstance(stored, StoredItem)
    return stored


def tomb(version):
    return StoredItem(version=version, kind=Kind.TOMBSTONE)


def op_set(version, value=b"v", ttl=60, key=b"k"):
    return CacheOp(kind=OpKind.SET, key=key, version=version, value=value, ttl_s=ttl)


def op_del(version, key=b"k"):
    return CacheOp(kind=OpKind.DELETE, key=key, version=version)


def op_touch(version, ttl=600, key=b"k"):
    return CacheOp(kind=OpKind.TOUCH, key=key, version=version, ttl_s=ttl)


# -- item format ----------------------------------------------------------------------------


def test_encode_layout_is_the_documented_header_then_the_exact_value():
    raw = encode(item(Version(0x0102030405060708, "tok"), b"\x00\r\nbin"))
    assert raw == (
        bytes([MAGIC, FORMAT_VERSION, 0, 0])
        + bytes.fromhex("0102030405060708")
        + bytes(8)  # expires at: never
        + bytes(8)  # no touch
        + b"\x00\x03\x00\x00tok\x00\r\nbin"
    )
    assert (FORMAT_VERSION, HEADER_BYTES) == (2, 32)


def test_encode_layout_with_an_expiry_and_a_touch():
    written = StoredItem(
        version=Version(0x0102, "ab"),
        kind=Kind.VALUE,
        value=b"v",
        expires_at_ms=0x0A0B,
        touch=Version(0x0C0D, "xyz"),
    )
    assert encode(written) == (
        bytes([MAGIC, 2, 0, 1])
        + (0x0102).to_bytes(8, "big")
        + (0x0A0B).to_bytes(8, "big")
        + (0x0C0D).to_bytes(8, "big")
        + b"\x00\x02\x00\x03abxyzv"
    )
    assert decode(encode(written)) == written


def test_the_previous_format_is_still_read():
    # format 1, as walstream wrote it before: magic, 1, kind, write time, token length, token
    v1_value = struct.pack(">BBBQH", MAGIC, 1, 0, 1_234, 3) + b"tok" + b"\x00value"
    v1_tomb = struct.pack(">BBBQH", MAGIC, 1, 1, 5_678, 1) + b"t"
    assert decode(v1_value) == item(Version(1_234, "tok"), b"\x00value")
    assert decode(v1_tomb) == tomb(Version(5_678, "t"))
    # and it takes part in LWW as before: an older set is stale, a newer one writes format 2
    assert fold(decode(v1_value), [op_set(Version(1_000, "z"))], tombstone_ttl_s=1).write is None
    result = fold(decode(v1_tomb), [op_set(V1, b"new", ttl=0)], tombstone_ttl_s=TOMB_TTL)
    assert result.write == encode(item(V1, b"new"))
    assert result.write[1] == FORMAT_VERSION


@given(
    time_ms=st.integers(0, 2**64 - 1),
    token=st.text(max_size=50),
    value=st.binary(max_size=300),
    kind=st.sampled_from(Kind),
    expires=st.integers(0, 2**64 - 1),
    touch=st.none() | st.builds(Version, st.integers(0, 2**64 - 1), st.text(max_size=20)),
)
def test_decode_reads_back_what_encode_wrote(time_ms, token, value, kind, expires, touch):
    written = StoredItem(
        version=Version(time_ms, token),
        kind=kind,
        value=value if kind is Kind.VALUE else b"",
        expires_at_ms=expires,
        touch=touch,
    )
    assert decode(encode(written)) == written


def test_an_empty_value_and_an_empty_token_round_trip():
    written = item(Version(5, ""), b"")
    assert len(encode(written)) == HEADER_BYTES
    assert decode(encode(written)) == written


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"plain value set by another client",
        b'{"json": 1}',
        bytes([MAGIC]) + b"short",  # magic, then too short for a header
        bytes([MAGIC, 1]),  # format 1, too short
        bytes([MAGIC, 2]) + bytes(29),  # format 2, too short
        struct.pack(">BBBQH", MAGIC, 3, 0, 1, 0) + bytes(20),  # a format this code does not know
        struct.pack(">BBBQH", MAGIC, 1, 7, 1, 0),  # an unknown kind
        struct.pack(">BBBQH", MAGIC, 1, 0, 1, 10) + b"abc",  # token longer than the item
        struct.pack(">BBBQH", MAGIC, 1, 0, 1, 2) + b"\xff\xfe",  # token not UTF-8
        struct.pack(">BBBQH", MAGIC, 1, 1, 1, 0) + b"tombstone with a value",
        struct.pack(">BBBBQQQHH", MAGIC, 2, 3, 0, 1, 0, 0, 0, 0),  # an unknown kind
        struct.pack(">BBBBQQQHH", MAGIC, 2, 0, 2, 1, 0, 0, 0, 0),  # an unknown flag
        struct.pack(">BBBBQQQHH", MAGIC, 2, 0, 0, 1, 0, 0, 2, 2) + b"abc",  # tokens too long
        struct.pack(">BBBBQQQHH", MAGIC, 2, 0, 0, 1, 0, 0, 1, 0) + b"\xff",  # token not UTF-8
        struct.pack(">BBBBQQQHH", MAGIC, 2, 0, 1, 1, 0, 0, 0, 1) + b"\xff",  # touch's token
        struct.pack(">BBBBQQQHH", MAGIC, 2, 1, 0, 1, 0, 0, 0, 0) + b"tombstone with a value",
        struct.pack(">BBBBQQQHH", MAGIC, 2, 2, 0, 1, 0, 0, 0, 0) + b"touched with a value",
    ],
)
def test_bytes_walstream_did_not_write_are_foreign_and_kept_as_they_are(raw):
    assert decode(raw) == Foreign(raw=raw)


def test_encode_refuses_what_the_header_cannot_hold():
    with pytest.raises(ValueError, match="token"):
        encode(item(Version(1, "t" * 65_536)))
    with pytest.raises(ValueError, match="write time"):
        encode(item(Version(-1, "t")))
    with pytest.raises(ValueError, match="write time"):
        encode(item(Version(2**64, "t")))
    with pytest.raises(ValueError, match="token"):
        encode(StoredItem(version=V1, kind=Kind.TOMBSTONE, touch=Version(1, "t" * 65_536)))
    with pytest.raises(ValueError, match="expiry"):
        encode(StoredItem(version=V1, kind=Kind.VALUE, expires_at_ms=2**64))
    with pytest.raises(ValueError, match="tombstone"):
        encode(StoredItem(version=V1, kind=Kind.TOMBSTONE, value=b"x"))
    with pytest.raises(ValueError, match="touched"):
        encode(StoredItem(version=V1, kind=Kind.TOUCHED, value=b"x"))


# -- versions -------------------------------------------------------------------------------


def test_nothing_and_foreign_bytes_are_older_than_any_version():
    assert newer(Version(0, ""), None)
    assert newer(Version(0, ""), Foreign(raw=b"plain"))
    assert newer(Version(0, ""), StoredItem(version=V3, kind=Kind.TOUCHED, touch=V3))


def test_newer_orders_by_write_time_then_token_and_a_duplicate_is_not_newer():
    assert newer(V2, item(V1))
    assert not newer(V1, item(V2))
    assert newer(Version(1_000, "b"), item(Version(1_000, "a")))
    assert not newer(Version(1_000, "a"), item(Version(1_000, "b")))
    assert not newer(V1, item(V1))
    assert not newer(Version(9_999, "a"), item(Version(1, "a")))  # same token: a redelivery
    assert newer(V2, tomb(V1))
    assert not newer(V1, tomb(V2))


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from("abc")), min_size=1, max_size=8))
def test_any_order_of_sets_ends_at_the_highest_version(versions):
    ops = [
        op_set(Version(t, tok + str(t)), value=f"{t}{tok}".encode(), ttl=0) for t, tok in versions
    ]
    highest = max(ops, key=lambda op: op.version)
    result = fold(None, ops, tombstone_ttl_s=TOMB_TTL)
    assert result.write is not None
    assert written(result) == item(highest.version, highest.value)
    assert fold(None, list(reversed(ops)), tombstone_ttl_s=TOMB_TTL).write == result.write


# -- fold: one key's operations over what it holds -------------------------------------------


def test_a_set_on_nothing_is_written_with_its_expiry_from_its_write_time():
    result = fold(None, [op_set(V1, b"one", ttl=60)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.APPLIED,)
    expires = V1.original_write_time_ms + 60_000
    assert result.write == encode(
        StoredItem(version=V1, kind=Kind.VALUE, value=b"one", expires_at_ms=expires)
    )
    # kept past its expiry for the tombstone TTL (an absolute Unix time: the same everywhere)
    assert result.ttl_s == kept(V1, 60) == (T0 + 61_000) // 1_000 + TOMB_TTL


def test_a_set_without_a_ttl_never_expires():
    result = fold(None, [op_set(V1, b"one", ttl=0)], tombstone_ttl_s=TOMB_TTL)
    assert result.write == encode(item(V1, b"one"))
    assert result.ttl_s == 0


def test_a_ttl_over_30_days_is_an_absolute_unix_time():
    at_s = T0 // 1_000 + 86_400 * 40
    result = fold(None, [op_set(V1, b"one", ttl=at_s)], tombstone_ttl_s=TOMB_TTL)
    assert written(result).expires_at_ms == at_s * 1_000
    assert result.ttl_s == at_s + TOMB_TTL
    assert expires_at_ms(V1.original_write_time_ms, RELATIVE_TTL_MAX_S) == (
        V1.original_write_time_ms + RELATIVE_TTL_MAX_S * 1_000
    )


def test_exptime_stays_within_memcacheds_rules():
    def value(at_ms):
        return StoredItem(version=V1, kind=Kind.VALUE, expires_at_ms=at_ms)

    # a fraction of a second rounds up
    assert exptime(value(T0 + 1), tombstone_ttl_s=10) == T0 // 1_000 + 1 + 10
    # long gone (a 1970 expiry would read as relative seconds): an absolute time in the past
    assert exptime(value(1_000), tombstone_ttl_s=10) == RELATIVE_TTL_MAX_S + 1
    # past 2038: memcached's signed 32-bit limit
    assert exptime(value(2**40 * 1_000), tombstone_ttl_s=10) == TTL_MAX_S
    assert exptime(Foreign(raw=b"x", expires_at_ms=T0), tombstone_ttl_s=10) == T0 // 1_000
    assert exptime(Foreign(raw=b"x", expires_at_ms=0), tombstone_ttl_s=10) == 0
    touched = StoredItem(version=Version(0, ""), kind=Kind.TOUCHED, expires_at_ms=T0, touch=V1)
    assert exptime(touched, tombstone_ttl_s=10) == 10


def test_expired_is_the_header_expiry_against_now():
    value = StoredItem(version=V1, kind=Kind.VALUE, expires_at_ms=T0)
    assert not expired(value, T0 - 1)
    assert expired(value, T0)
    assert not expired(item(V1), 2**63)  # never


def test_an_older_set_after_a_newer_value_expired_is_stale():
    # the newer value's marker outlives its expiry: it still holds its version
    newer_value = StoredItem(version=V2, kind=Kind.VALUE, value=b"new", expires_at_ms=T0 + 2_001)
    result = fold(newer_value, [op_set(V1, b"old", ttl=0)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.STALE,)
    assert result.write is None


def test_an_older_set_after_a_newer_set_is_stale_and_nothing_is_written():
    result = fold(item(V2), [op_set(V1)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.STALE,)
    assert result.write is None


def test_an_older_set_after_a_newer_delete_stays_deleted():
    result = fold(tomb(V2), [op_set(V1)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.STALE,)
    assert result.write is None


def test_an_older_delete_after_a_newer_set_leaves_the_value():
    result = fold(item(V2), [op_del(V1)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.STALE,)
    assert result.write is None


def test_a_delete_writes_a_versioned_tombstone_for_the_tombstone_ttl_even_on_nothing():
    for stored in (None, item(V1), Foreign(raw=b"plain")):
        result = fold(stored, [op_del(V2)], tombstone_ttl_s=TOMB_TTL)
        assert result.outcomes == (OpOutcome.APPLIED,)
        assert result.write == encode(tomb(V2))
        assert result.ttl_s == TOMB_TTL
    touched = StoredItem(version=Version(0, ""), kind=Kind.TOUCHED, expires_at_ms=5, touch=V1)
    assert fold(touched, [op_del(V2)], tombstone_ttl_s=TOMB_TTL).write == encode(tomb(V2))


def test_a_redelivered_operation_is_a_duplicate():
    assert fold(item(V1), [op_set(V1)], tombstone_ttl_s=TOMB_TTL).outcomes == (OpOutcome.DUPLICATE,)
    assert fold(tomb(V1), [op_del(V1)], tombstone_ttl_s=TOMB_TTL).outcomes == (OpOutcome.DUPLICATE,)


def test_a_versioned_set_replaces_a_foreign_value():
    result = fold(Foreign(raw=b"plain"), [op_set(V1, b"mine", ttl=0)], tombstone_ttl_s=TOMB_TTL)
    assert result.write == encode(item(V1, b"mine"))


def test_a_key_s_operations_run_in_order_and_the_last_state_is_written():
    ops = [op_set(V1, b"one", ttl=10), op_del(V2), op_set(V3, b"three", ttl=30), op_set(V2)]
    result = fold(None, ops, tombstone_ttl_s=TOMB_TTL)
    # the last set (V2) is older than V3's value and not its redelivery: stale
    assert result.outcomes == (
        OpOutcome.APPLIED,
        OpOutcome.APPLIED,
        OpOutcome.APPLIED,
        OpOutcome.STALE,
    )
    assert written(result) == StoredItem(
        version=V3,
        kind=Kind.VALUE,
        value=b"three",
        expires_at_ms=V3.original_write_time_ms + 30_000,
    )
    assert result.ttl_s == kept(V3, 30)


def test_a_touch_sets_the_expiry_of_the_value_keeps_its_version_and_records_its_own():
    result = fold(item(V1, b"val"), [op_touch(V2, ttl=900)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.APPLIED,)
    assert written(result) == StoredItem(
        version=V1,
        kind=Kind.VALUE,
        value=b"val",
        expires_at_ms=V2.original_write_time_ms + 900_000,
        touch=V2,
    )
    assert result.ttl_s == kept(V2, 900)
    # a touch with no TTL: never expires
    result = fold(written(result), [op_touch(V3, ttl=0)], tombstone_ttl_s=TOMB_TTL)
    assert written(result) == StoredItem(version=V1, kind=Kind.VALUE, value=b"val", touch=V3)
    assert result.ttl_s == 0


def test_a_touch_then_an_older_set_newer_than_the_value_still_wins_with_the_touchs_expiry():
    # origin: set V1, set V2, touch V3. Here V2 arrives after the touch: V2 must win, touched.
    result = fold(item(V1, b"one"), [op_touch(V3), op_set(V2, b"two", ttl=20)], tombstone_ttl_s=1)
    assert result.outcomes == (OpOutcome.APPLIED, OpOutcome.APPLIED)
    expires = V3.original_write_time_ms + 600_000
    assert written(result) == StoredItem(
        version=V2, kind=Kind.VALUE, value=b"two", expires_at_ms=expires, touch=V3
    )


def test_a_set_newer_than_the_touch_drops_it():
    touched = StoredItem(version=V1, kind=Kind.VALUE, value=b"one", expires_at_ms=9, touch=V2)
    result = fold(touched, [op_set(V3, b"three", ttl=0)], tombstone_ttl_s=TOMB_TTL)
    assert result.write == encode(item(V3, b"three"))


def test_a_touch_older_than_the_recorded_touch_is_stale_and_its_redelivery_a_duplicate():
    touched = fold(item(V1), [op_touch(V3)], tombstone_ttl_s=TOMB_TTL).write
    assert touched is not None
    result = fold(decode(touched), [op_touch(V2), op_touch(V3)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.STALE, OpOutcome.DUPLICATE)
    assert result.write is None


def test_a_touch_older_than_the_value_is_stale():
    result = fold(item(V2), [op_touch(V1)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.STALE,)
    assert result.write is None


def test_a_touch_of_nothing_or_of_a_tombstone_is_absent_but_recorded_for_a_late_older_set():
    expires = V2.original_write_time_ms + 600_000
    for stored, recorded in (
        (None, StoredItem(version=Version(0, ""), kind=Kind.TOUCHED, touch=V2)),
        (tomb(V1), StoredItem(version=V1, kind=Kind.TOMBSTONE, touch=V2)),
    ):
        result = fold(stored, [op_touch(V2)], tombstone_ttl_s=TOMB_TTL)
        assert result.outcomes == (OpOutcome.ABSENT,)
        assert written(result) == replace(recorded, expires_at_ms=expires)
        assert result.ttl_s == TOMB_TTL
        # the set it touched arrives later (older than the touch): it takes the touch's expiry
        late = fold(written(result), [op_set(V1, b"v", ttl=1)], tombstone_ttl_s=TOMB_TTL)
        if stored is None:
            assert written(late) == StoredItem(
                version=V1, kind=Kind.VALUE, value=b"v", expires_at_ms=expires, touch=V2
            )
        else:  # as old as the tombstone: stale
            assert late.write is None


def test_a_touch_of_a_tombstone_kept_by_a_delete_newer_than_the_tombstone():
    touched_tomb = StoredItem(version=V1, kind=Kind.TOMBSTONE, expires_at_ms=77, touch=V3)
    result = fold(touched_tomb, [op_del(V2)], tombstone_ttl_s=TOMB_TTL)
    assert written(result) == replace(touched_tomb, version=V2)


def test_a_touch_not_newer_than_a_tombstone_or_than_its_recorded_touch_changes_nothing():
    for stored, touch in (
        (tomb(V2), V1),
        (StoredItem(version=V1, kind=Kind.TOMBSTONE, touch=V3), V2),
        (StoredItem(version=Version(0, ""), kind=Kind.TOUCHED, touch=V3), V3),
    ):
        result = fold(stored, [op_touch(touch)], tombstone_ttl_s=TOMB_TTL)
        assert result.outcomes == (OpOutcome.ABSENT,)
        assert result.write is None


def test_a_touch_of_a_foreign_value_keeps_its_bytes_and_expires_from_its_write_time():
    result = fold(Foreign(raw=b"plain"), [op_touch(V1, ttl=5)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.APPLIED,)
    assert result.write == b"plain"
    assert result.ttl_s == (V1.original_write_time_ms + 5_000) // 1_000


def test_a_touch_after_a_set_in_the_same_batch_sets_the_expiry_of_the_new_value():
    result = fold(None, [op_set(V1, b"one", ttl=10), op_touch(V2, ttl=99)], tombstone_ttl_s=1)
    assert written(result).expires_at_ms == V2.original_write_time_ms + 99_000
    assert result.ttl_s == kept(V2, 99) - TOMB_TTL + 1


# -- poison ---------------------------------------------------------------------------------


def test_a_well_formed_op_is_not_poison():
    assert check_op(op_set(V1, b"v", key=b"user:42/\xc3\xa9"), item_size_max=ONE_MIB) is None
    assert check_op(op_del(V1, key=b"k" * KEY_MAX_BYTES), item_size_max=ONE_MIB) is None
    assert check_op(op_touch(V1, ttl=TTL_MAX_S), item_size_max=ONE_MIB) is None


@pytest.mark.parametrize(
    ("op", "reason"),
    [
        (op_set(V1, key=b""), PoisonReason.KEY_EMPTY),
        (op_set(V1, key=b"k" * (KEY_MAX_BYTES + 1)), PoisonReason.KEY_TOO_LONG),
        (op_set(V1, key=b"has space"), PoisonReason.KEY_BAD_CHAR),
        (op_set(V1, key=b"new\nline"), PoisonReason.KEY_BAD_CHAR),
        (op_set(V1, key=b"nul\x00"), PoisonReason.KEY_BAD_CHAR),
        (op_set(V1, key=b"del\x7f"), PoisonReason.KEY_BAD_CHAR),
        (op_set(V1, ttl=-1), PoisonReason.TTL_OUT_OF_RANGE),
        (op_touch(V1, ttl=TTL_MAX_S + 1), PoisonReason.TTL_OUT_OF_RANGE),
        (op_set(Version(-5, "t")), PoisonReason.VERSION_OUT_OF_RANGE),
        (op_set(Version(2**64, "t")), PoisonReason.VERSION_OUT_OF_RANGE),
        (op_set(Version(1, "t" * 65_536)), PoisonReason.VERSION_OUT_OF_RANGE),
        (op_set(Version(2**64 - 1, "t"), ttl=1), PoisonReason.VERSION_OUT_OF_RANGE),
        (
            CacheOp(kind=OpKind.DELETE, key=b"k", version=V1, value=b"x"),
            PoisonReason.VALUE_ON_NON_SET,
        ),
    ],
)
def test_poison_ops_have_a_typed_reason(op, reason):
    assert check_op(op, item_size_max=ONE_MIB) is reason


def test_the_value_size_limit_is_the_server_item_size_less_header_key_and_overhead():
    key = b"k" * 10
    token = "tok"
    largest = ONE_MIB - ITEM_OVERHEAD_BYTES - len(key) - HEADER_BYTES - len(token)
    fits = op_set(Version(1, token), b"x" * largest, key=key)
    over = op_set(Version(1, token), b"x" * (largest + 1), key=key)
    assert check_op(fits, item_size_max=ONE_MIB) is None
    assert check_op(over, item_size_max=ONE_MIB) is PoisonReason.VALUE_TOO_LARGE


@given(token=st.text(max_size=40), value=st.binary(max_size=200))
def test_the_size_check_counts_exactly_the_encoded_item(token, value):
    op = op_set(Version(7, token), value, key=b"key")
    exact = len(encode(item(op.version, value))) + len(b"key") + ITEM_OVERHEAD_BYTES
    assert check_op(op, item_size_max=exact) is None
    assert check_op(op, item_size_max=exact - 1) is PoisonReason.VALUE_TOO_LARGE


# -- order independence: the same operations, in any order, in any batches -------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(OpKind),
        st.integers(0, 4),  # write time: equal times are common (the token decides)
        st.sampled_from([0, 5, 100, RELATIVE_TTL_MAX_S + 1]),
    ),
    min_size=1,
    max_size=7,
)


def _ops(specs):
    """Distinct operations (each its own token) on one key, times counted from T0."""
    ops = []
    for n, (kind, t, ttl) in enumerate(specs):
        version = Version(T0 + t * 1_000, f"{n:02d}")
        if kind is OpKind.SET:
            ops.append(op_set(version, f"v{n}".encode(), ttl=ttl))
        elif kind is OpKind.DELETE:
            ops.append(op_del(version))
        else:
            ops.append(op_touch(version, ttl=ttl))
    return ops


def _arrive(stored, ops, cuts):
    """What a region ends with (item bytes, exptime) when ``ops`` arrive in this order, in
    batches split at ``cuts``, each batch folded over the last batch's write."""
    raw, ttl = None, None
    state = stored
    bounds = sorted({0, len(ops), *(c % (len(ops) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        result = fold(state, ops[start:end], tombstone_ttl_s=TOMB_TTL)
        if result.write is not None:
            raw, ttl = result.write, result.ttl_s
            state = decode(raw)
    return raw, ttl


@given(specs=_OPS, data=st.data())
def test_any_order_and_batching_of_the_same_operations_ends_in_the_same_state_and_expiry(
    specs, data
):
    ops = _ops(specs)
    stored = data.draw(st.sampled_from([None, item(Version(T0 - 1, "old"), b"old")]))
    in_order = _arrive(stored, sorted(ops, key=lambda op: op.version), [])
    shuffled = data.draw(st.permutations(ops))
    cuts = data.draw(st.lists(st.integers(0, 8), max_size=4))
    # a redelivery of any of them changes nothing either
    again = data.draw(st.lists(st.sampled_from(ops), max_size=2))
    assert _arrive(stored, [*shuffled, *again], cuts) == in_order


@given(specs=_OPS)
def test_the_state_is_the_highest_set_or_delete_with_the_highest_touch_newer_than_it(specs):
    ops = _ops(specs)
    raw, ttl = _arrive(None, ops, [])
    assert raw is not None
    writes = [op for op in ops if op.kind is not OpKind.TOUCH]
    touches = [op for op in ops if op.kind is OpKind.TOUCH]
    won = max(writes, key=lambda op: op.version, default=None)
    touch = max(touches, key=lambda op: op.version, default=None)
    if touch is not None and won is not None and touch.version <= won.version:
        touch = None
    ttl_op = touch or won
    assert ttl_op is not None
    expires = expires_at_ms(ttl_op.version.original_write_time_ms, ttl_op.ttl_s)
    if won is None:
        assert touch is not None
        want = StoredItem(
            version=Version(0, ""), kind=Kind.TOUCHED, expires_at_ms=expires, touch=touch.version
        )
    elif won.kind is OpKind.SET:
        want = StoredItem(
            version=won.version,
            kind=Kind.VALUE,
            value=won.value,
            expires_at_ms=expires,
            touch=touch.version if touch else None,
        )
    else:
        want = StoredItem(
            version=won.version,
            kind=Kind.TOMBSTONE,
            expires_at_ms=expires if touch else 0,
            touch=touch.version if touch else None,
        )
    assert decode(raw) == want
    if want.kind is Kind.VALUE:
        assert ttl == exptime(want, tombstone_ttl_s=TOMB_TTL)
        assert ttl == (0 if expires == 0 else -(-expires // 1_000) + TOMB_TTL)
    else:
        assert ttl == TOMB_TTL
