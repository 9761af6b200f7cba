"""core.limits.check_record_size: the one record-size refusal of WriteToLog and the replicating
client (a record's encoded key and value against ``max_record_bytes``)."""

from __future__ import annotations

import pytest

from walstream.core.limits import check_record_size, record_too_large
from walstream.errors import PayloadTooLargeError


def test_a_record_up_to_the_limit_passes_counting_key_and_value():
    check_record_size(b"kk", b"v" * 8, 10)
    check_record_size(None, b"v" * 10, 10)
    check_record_size(b"k" * 10, None, 10)
    check_record_size(None, None, 0)


@pytest.mark.parametrize(
    ("key", "value", "size"),
    [(b"kk", b"v" * 9, 11), (None, b"v" * 11, 11), (b"k" * 11, None, 11)],
)
def test_one_byte_over_is_refused_naming_payload_with_writetologs_message(key, value, size):
    with pytest.raises(PayloadTooLargeError) as info:
        check_record_size(key, value, 10)
    assert info.value.status == 413
    assert info.value.field == "payload"
    assert str(info.value) == str(PayloadTooLargeError("payload", record_too_large(size, 10)))
    assert "the record is 11 bytes encoded, over the limit of 10" in str(info.value)


def test_the_caller_names_its_field_and_message():
    with pytest.raises(PayloadTooLargeError) as info:
        check_record_size(
            b"k", b"vv", 2, field="value", message=lambda size, limit: f"{size} > {limit}!"
        )
    assert info.value.field == "value"
    assert "3 > 2!" in str(info.value)
