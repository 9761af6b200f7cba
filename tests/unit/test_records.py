"""The record wire format round-trips, and anything else is a PoisonRecordError with a reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.errors import PoisonRecordError
from walstream.records import AttemptError, Envelope, Lifecycle, decode_envelope, encode_envelope

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def envelope(**changes):
    base: dict[str, Any] = {
        "id": "0190",
        "namespace": "ns",
        "key": "k",
        "payload": {"a": [1, 2]},
        "payload_encoding": "json",
        "target": {"type": "kafka", "topic": "t"},
        "lifecycle": Lifecycle(deliver_at_ms=5, original_write_time_ms=3, delay_ms=2),
        "idempotency_token": "tok",
        "created_at_ms": 3,
        "attempt": 2,
        "history": (AttemptError(at_ms=4, attempt=1, error_class="E", message="boom"),),
        "not_before_ms": 9,
    }
    base.update(changes)
    return Envelope(**base)


@given(payload=json_values, key=st.none() | st.text(min_size=1))
def test_round_trip(payload, key):
    env = envelope(payload=payload, key=key)
    assert decode_envelope(encode_envelope(env)) == env


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"\xff\xfe", "undecodable"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 2}', "unknown wire version 2"),
        (b'{"v": 1, "payload_encoding": "rot13"}', "payload_encoding"),
    ],
)
def test_poison_records_carry_a_reason(raw, reason):
    with pytest.raises(PoisonRecordError) as info:
        decode_envelope(raw)
    assert reason in info.value.reason


def test_missing_or_mistyped_fields_are_poison():
    good = orjson.loads(encode_envelope(envelope()))
    for field in ("id", "namespace", "target", "lifecycle", "idempotency_token"):
        broken = dict(good)
        del broken[field]
        with pytest.raises(PoisonRecordError):
            decode_envelope(orjson.dumps(broken))
    for field, wrong in (("attempt", "2"), ("key", 7), ("history", {})):
        with pytest.raises(PoisonRecordError):
            decode_envelope(orjson.dumps({**good, field: wrong}))
    with pytest.raises(PoisonRecordError, match="history"):
        decode_envelope(orjson.dumps({**good, "history": [{"at_ms": 1}]}))
    with pytest.raises(PoisonRecordError, match="base64"):
        decode_envelope(orjson.dumps({**good, "payload_encoding": "base64", "payload": "%%"}))


def test_defaults_stay_off_the_wire_and_read_back_as_defaults():
    fresh = envelope(
        key=None,
        attempt=0,
        history=(),
        not_before_ms=0,
        lifecycle=Lifecycle(deliver_at_ms=3, original_write_time_ms=3),
    )
    wire = orjson.loads(encode_envelope(fresh))
    assert not {"key", "payload_encoding", "attempt", "history", "not_before_ms"} & set(wire)
    assert "delay_ms" not in wire["lifecycle"]
    assert decode_envelope(encode_envelope(fresh)) == fresh


@pytest.mark.parametrize("payload", ["aGVsbG8=é", "ü"])
def test_base64_with_non_ascii_characters_is_a_poison_record(payload):
    """Not a ValueError escaping the stage (issue 15 item 5): a record from any producer."""
    raw = encode_envelope(envelope(payload=payload, payload_encoding="base64"))
    with pytest.raises(PoisonRecordError, match="base64"):
        decode_envelope(raw)
