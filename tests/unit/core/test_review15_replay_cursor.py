"""Review of issue 15 item 9 (the OpenAPI document says what the server checks): a replay's
``resume_from`` is documented as ``^[0-9]+:[0-9]+(?:,[0-9]+:[0-9]+)*$``, but the cursor parser
takes any Unicode digit (``str.isdigit``; ``int()`` reads ARABIC-INDIC DIGIT ONE as 1), so
``"\u0661:1"`` starts a replay (202) that resumes partition 1: the bug 217c41c fixed for the DLQ
listing's ``limit``/``after``, left in the replay cursor (HTTP and ``walstream replay
--resume-from``)."""

from __future__ import annotations

import pytest

from walstream.core.replay_request import parse_replay_request
from walstream.errors import BadRequestError

NOW_MS = 1_800_000_000_000


@pytest.mark.parametrize("cursor", ["\u0661:1", "0:\u0661", "\u0967:5", "\uff11:2"])
def test_a_cursor_with_non_ascii_digits_is_refused(cursor):
    with pytest.raises(BadRequestError) as refused:
        parse_replay_request({"from": 0, "to": 1, "resume_from": cursor}, NOW_MS)
    assert refused.value.field == "resume_from"
