"""walstream.core.exact: which JSON numbers the log's codec (orjson) would change, and the cheap
look at the raw bytes that decides whether to check at all (it must never miss one)."""

from __future__ import annotations

import math
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstream.core.exact import (
    Unkept,
    decode_exact,
    first_unkept,
    may_hold_unkept,
    unkept_in_value,
)
from walstream.core.validate import parse_payload_text
from walstream.errors import BadRequestError


def _orjson_keeps(text: str) -> bool:
    """Whether orjson decodes the number ``text`` to the same value (and an integer to an int)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    if isinstance(value, int):
        return value == int(text)
    is_int_literal = all(c in "-0123456789" for c in text)
    if is_int_literal:
        return False  # an integer literal decoded to a float
    return math.isfinite(value) and Decimal(repr(value)) == Decimal(text)


_digits = st.text("0123456789", min_size=1, max_size=40)
_number_text = st.builds(
    lambda sign, whole, frac, exp: (
        sign
        + (whole.lstrip("0") or "0")
        + (f".{frac}" if frac else "")
        + (f"e{exp}" if exp is not None else "")
    ),
    st.sampled_from(["", "-"]),
    _digits,
    st.one_of(st.just(""), _digits),
    st.one_of(st.none(), st.integers(-420, 420)),
)


@given(_number_text, st.sampled_from(["{}", "[{}]", '{{"a": {}}}', "[1, {}]", "[\n{}]"]))
def test_the_look_at_the_bytes_misses_no_number_orjson_changes(number, shape):
    raw = shape.format(number).encode()
    if not _orjson_keeps(number):
        assert may_hold_unkept(raw), raw
        found = first_unkept(decode_exact(raw))
        assert found is not None, raw
        assert found[1].text == number
    else:
        assert first_unkept(decode_exact(raw)) is None, raw


@given(st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False))
def test_what_orjson_writes_it_keeps(value):
    raw = orjson.dumps({"payload": value})
    assert first_unkept(decode_exact(raw)) is None
    assert unkept_in_value(value) is None


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"123456789012345678901234567890", "123456789012345678901234567890"),
        (b"18446744073709551616", "18446744073709551616"),
        (b"-9223372036854775809", "-9223372036854775809"),
        (b"1" * 5000, "1" * 5000),  # beyond Python's int() digit limit: no ValueError
        (b"1.0000000000000000001", "1.0000000000000000001"),
        (b"1e-400", "1e-400"),
        (b"1e400", "1e400"),
        # exponents beyond what decimal holds (a 500 before: InvalidOperation)
        (b"1e-99999999999999999999999", "1e-99999999999999999999999"),
        (b"-1E-999999999999999999999", "-1E-999999999999999999999"),
        (b"1.5e-999999999999999999", "1.5e-999999999999999999"),
        (b"1E+99999999999999999999", "1E+99999999999999999999"),
        (b"1" * 5000 + b"e-99999999999999999999999", "1" * 5000 + "e-99999999999999999999999"),
        (b"NaN", "NaN"),
        (b"-Infinity", "-Infinity"),
    ],
)
def test_numbers_orjson_changes(raw, text):
    # NaN and Infinity are no JSON: orjson refuses the body, and the API looks then
    assert may_hold_unkept(b"[" + raw + b"]") or raw.lstrip(b"-") in {b"NaN", b"Infinity"}
    found = first_unkept(decode_exact(b'{"a":[0,' + raw + b"]}"))
    assert found is not None
    path, number = found
    assert path == ("a", 1)
    assert number.text == text


def test_no_second_decoding_without_a_long_number():
    assert not may_hold_unkept(b'{"payload":{"price":9.99,"n":-12345,"id":"123e4567-e89b"}}')


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2**64, str(2**64)),
        (-(2**63) - 1, str(-(2**63) - 1)),
        (math.nan, "nan"),
        (-math.inf, "-inf"),
    ],
)
def test_python_values_the_encoder_would_change(value, text):
    number = unkept_in_value({"a": [1, value]})
    assert isinstance(number, Unkept)
    assert number.text == text


def test_the_cli_payload_text_follows_the_api_rules():
    assert parse_payload_text(b'{"n": 18446744073709551615}') == {"n": 2**64 - 1}
    for text in (
        b"123456789012345678901234567890",
        b"[1e400]",
        b'{"a": NaN}',
        b"1e-99999999999999999999999",
        b"[-1E+99999999999999999999]",
    ):
        with pytest.raises(BadRequestError) as refused:
            parse_payload_text(text)
        assert refused.value.field == "payload"
    with pytest.raises(BadRequestError) as refused:
        parse_payload_text(b"{nope")
    assert refused.value.reason.startswith("invalid JSON")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v": "1.2.3.4.5.6.7.8.9.10"}',
        b'{"v": "x 12345678901234567890123"}',
        b'{"v": "x 1..2e400"}',
        b'{"v": [0.30000000000000004, 123456789.12345679, 1.7976931348623157e308]}',
        # zero with an exponent beyond what decimal holds: zero all the same
        b'{"v": [0e-99999999999999999999999, -0.000E+99999999999999999999]}',
    ],
)
def test_long_digits_that_the_codec_keeps_or_that_are_in_strings(raw):
    """A look may say "maybe" for digits in a string; the exact decoding then finds none."""
    may_hold_unkept(raw)  # never raises
    assert first_unkept(decode_exact(raw)) is None


def test_floats_in_shortest_form_need_no_second_decoding():
    raw = orjson.dumps({"payload": [i / 7 for i in range(1, 1000)]})
    assert not may_hold_unkept(raw)
