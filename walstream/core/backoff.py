"""Retry backoff: when the next attempt of a failed record may run.

delay = min(cap, base * multiplier**attempt), then spread by +/- jitter (a fraction of it) and
kept within [0, cap]. ``attempt`` is the 0-based number of the attempt that just failed, so the
first retry waits about ``base``.
"""

from __future__ import annotations

import math

from walstream.namespaces.config import BackoffPolicy

__all__ = ["next_delay_ms"]


def next_delay_ms(policy: BackoffPolicy, attempt: int, rand: float) -> int:
    """Milliseconds to wait before retrying after failed attempt number ``attempt`` (0-based).

    Args:
        policy: the namespace's backoff.
        attempt: the 0-based attempt that failed (>= 0).
        rand: a number in [0, 1); 0.5 means no jitter.

    Raises:
        ValueError: a negative attempt or rand outside [0, 1).
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if not 0.0 <= rand < 1.0:
        raise ValueError("rand must be in [0, 1)")
    # Compare in log space: multiplier**attempt overflows a float long before attempts run out.
    growth_needed = math.log(policy.cap_ms / policy.base_ms)
    if policy.multiplier > 1.0 and attempt * math.log(policy.multiplier) >= growth_needed:
        raw = float(policy.cap_ms)
    else:
        raw = min(float(policy.cap_ms), policy.base_ms * policy.multiplier**attempt)
    spread = raw * policy.jitter * (2.0 * rand - 1.0)
    return int(min(float(policy.cap_ms), max(0.0, raw + spread)))
