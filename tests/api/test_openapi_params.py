"""The DLQ listing's query parameters, as the OpenAPI document describes them (ASCII digits): a
value outside that format is a 400 naming the parameter, never a 500. ``str.isdigit`` takes
"²" (and ``int()`` does not), so ``limit=²`` and ``after=1.2.²`` were 500s."""

from __future__ import annotations

import pytest

from walstream.core.dlq import DlqCursor
from walstream.core.times import parse_time_ms
from walstream.errors import BadRequestError

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=%C2%B2", "limit"), ("after=1.2.%C2%B2", "after"), ("since=%C2%B2", "since")],
)
async def test_a_non_ascii_digit_in_a_dlq_query_is_a_400_naming_it(client, query, field):
    response = await client.get(f"/v1/namespaces/orders/dlq?{query}")
    assert response.status == 400, await response.text()
    assert (await response.json())["field"] == field


def test_a_cursor_or_a_time_takes_ascii_digits_only():
    assert DlqCursor.parse("1.-2.3") == DlqCursor(1, -2, 3)
    with pytest.raises(BadRequestError):
        DlqCursor.parse("1.2.\u00b2")
    assert parse_time_ms("1700000000000", NOW) == 1_700_000_000_000
    for text in ("\u00b2", "\u0661\u0662"):  # superscript two; Arabic-Indic digits
        with pytest.raises(ValueError, match="expected ms since the epoch"):
            parse_time_ms(text, NOW)
