"""JSON integers as the OpenAPI document (JSON Schema) defines them.

JSON Schema's ``integer`` is a number with a zero fractional part, whatever its spelling, so
``262145.0`` and ``1.7e12`` are integers to a client that validates against the document. The
API's integer fields (delays, times, timeouts) take them as the integers they are; a number
with a fraction (``1.5``), a boolean or anything else is not one.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["as_integer"]


def as_integer(value: Any) -> int | None:
    """``value`` as an int when it is a JSON integer (``5``, ``5.0``, ``5e3``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None
