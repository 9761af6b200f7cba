"""One kv key rule (walstream.core.targets.kv_key_problem) for a kv target's key written with
WriteToLog, a mutation's id and the kv target itself: 1..1024 characters, no NUL (PostgreSQL's
text cannot hold one; SQLite could, so the one rule keeps a namespace portable)."""

from __future__ import annotations

import re

import pytest

from walstream.core.mutations import wire
from walstream.core.targets import (
    KV_KEY_MAX_CHARS,
    KV_KEY_PATTERN,
    kv_key_problem,
    parse_target,
)
from walstream.errors import BadRequestError


def _kv(key: object) -> dict[str, object]:
    return {"type": "kv", "table": "items", "key": key}


@pytest.mark.parametrize("key", ["k", "é ✓ \n\x01", "'); DROP TABLE t; --", "k" * KV_KEY_MAX_CHARS])
def test_a_kv_key_without_nul_is_taken_everywhere(key: str) -> None:
    assert kv_key_problem(key) is None
    assert parse_target(_kv(key)).wire["key"] == key
    assert re.fullmatch(KV_KEY_PATTERN, key)


@pytest.mark.parametrize("key", ["k\x00", "\x00", "a\x00b"])
def test_a_kv_key_holding_nul_is_a_400_naming_target_key(key: str) -> None:
    assert kv_key_problem(key) is not None
    with pytest.raises(BadRequestError) as info:
        parse_target(_kv(key))
    assert info.value.field == "target.key"
    assert "NUL" in info.value.reason
    assert not re.fullmatch(KV_KEY_PATTERN, key)


@pytest.mark.parametrize("key", ["", "k" * (KV_KEY_MAX_CHARS + 1), 5, None])
def test_a_kv_key_of_the_wrong_type_or_length_is_refused(key: object) -> None:
    assert kv_key_problem(key) is not None
    with pytest.raises(BadRequestError) as info:
        parse_target(_kv(key))
    assert info.value.field == "target.key"


def test_the_mutation_records_use_the_same_rule() -> None:
    assert wire.kv_key_problem is kv_key_problem
    assert wire.KV_KEY_PATTERN == KV_KEY_PATTERN
    assert wire.KEY_MAX_CHARS == KV_KEY_MAX_CHARS
