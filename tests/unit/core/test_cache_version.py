"""Versioned memcached items (issue 17): the item format, LWW decisions, poison checks."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.cache_version import (
    HEADER_BYTES,
    ITEM_OVERHEAD_BYTES,
    KEY_MAX_BYTES,
    MAGIC,
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
    fold,
    newer,
)
from walstream.core.lww import Version

V1 = Version(1_000, "a")
V2 = Version(2_000, "b")
V3 = Version(3_000, "c")
TOMB_TTL = 3_600
ONE_MIB = 1024 * 1024


def item(version, value=b"x", kind=Kind.VALUE):
    return StoredItem(version=version, kind=kind, value=value)


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
    assert (
        raw == bytes([MAGIC, 1, 0]) + bytes.fromhex("0102030405060708") + b"\x00\x03tok\x00\r\nbin"
    )
    assert HEADER_BYTES == 13


@given(
    time_ms=st.integers(0, 2**64 - 1),
    token=st.text(max_size=50),
    value=st.binary(max_size=300),
    tombstone=st.booleans(),
)
def test_decode_reads_back_what_encode_wrote(time_ms, token, value, tombstone):
    written = tomb(Version(time_ms, token)) if tombstone else item(Version(time_ms, token), value)
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
        struct.pack(">BBBQH", MAGIC, 2, 0, 1, 0),  # a format version this code does not know
        struct.pack(">BBBQH", MAGIC, 1, 7, 1, 0),  # an unknown kind
        struct.pack(">BBBQH", MAGIC, 1, 0, 1, 10) + b"abc",  # token longer than the item
        struct.pack(">BBBQH", MAGIC, 1, 0, 1, 2) + b"\xff\xfe",  # token not UTF-8
        struct.pack(">BBBQH", MAGIC, 1, 1, 1, 0) + b"tombstone with a value",
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
    with pytest.raises(ValueError, match="tombstone"):
        encode(StoredItem(version=V1, kind=Kind.TOMBSTONE, value=b"x"))


# -- versions -------------------------------------------------------------------------------


def test_nothing_and_foreign_bytes_are_older_than_any_version():
    assert newer(Version(0, ""), None)
    assert newer(Version(0, ""), Foreign(raw=b"plain"))


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
    ops = [op_set(Version(t, tok + str(t)), value=f"{t}{tok}".encode()) for t, tok in versions]
    highest = max(ops, key=lambda op: op.version)
    result = fold(None, ops, tombstone_ttl_s=TOMB_TTL)
    assert result.write is not None
    assert decode(result.write) == item(highest.version, highest.value)
    assert fold(None, list(reversed(ops)), tombstone_ttl_s=TOMB_TTL).write == result.write


# -- fold: one key's operations over what it holds -------------------------------------------


def test_a_set_on_nothing_is_written_with_its_ttl():
    result = fold(None, [op_set(V1, b"one", ttl=60)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.APPLIED,)
    assert result.write == encode(item(V1, b"one"))
    assert result.ttl_s == 60


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


def test_a_redelivered_operation_is_a_duplicate():
    assert fold(item(V1), [op_set(V1)], tombstone_ttl_s=TOMB_TTL).outcomes == (OpOutcome.DUPLICATE,)
    assert fold(tomb(V1), [op_del(V1)], tombstone_ttl_s=TOMB_TTL).outcomes == (OpOutcome.DUPLICATE,)


def test_a_versioned_set_replaces_a_foreign_value():
    result = fold(Foreign(raw=b"plain"), [op_set(V1, b"mine")], tombstone_ttl_s=TOMB_TTL)
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
    assert result.write == encode(item(V3, b"three"))
    assert result.ttl_s == 30


def test_a_touch_sets_the_ttl_of_the_value_and_keeps_its_version():
    result = fold(item(V1, b"val"), [op_touch(V2, ttl=900)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.APPLIED,)
    assert result.write == encode(item(V1, b"val"))
    assert result.ttl_s == 900


def test_a_touch_then_an_older_set_newer_than_the_value_still_wins():
    # origin: set V1, set V2, touch V3. Here V2 arrives after the touch: V2 must win.
    result = fold(item(V1, b"one"), [op_touch(V3), op_set(V2, b"two", ttl=20)], tombstone_ttl_s=1)
    assert result.outcomes == (OpOutcome.APPLIED, OpOutcome.APPLIED)
    assert result.write == encode(item(V2, b"two"))
    assert result.ttl_s == 20


def test_a_touch_older_than_the_value_is_stale():
    result = fold(item(V2), [op_touch(V1)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.STALE,)
    assert result.write is None


def test_a_touch_of_nothing_or_of_a_tombstone_is_absent():
    for stored in (None, tomb(V1)):
        result = fold(stored, [op_touch(V2)], tombstone_ttl_s=TOMB_TTL)
        assert result.outcomes == (OpOutcome.ABSENT,)
        assert result.write is None


def test_a_touch_of_a_foreign_value_keeps_its_bytes():
    result = fold(Foreign(raw=b"plain"), [op_touch(V1, ttl=5)], tombstone_ttl_s=TOMB_TTL)
    assert result.outcomes == (OpOutcome.APPLIED,)
    assert result.write == b"plain"
    assert result.ttl_s == 5


def test_a_touch_after_a_set_in_the_same_batch_sets_the_ttl_of_the_new_value():
    result = fold(None, [op_set(V1, b"one", ttl=10), op_touch(V2, ttl=99)], tombstone_ttl_s=1)
    assert result.write == encode(item(V1, b"one"))
    assert result.ttl_s == 99


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
