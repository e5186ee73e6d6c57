"""Rate-limit windows are fixed (aligned to multiples of their length): a test that counts must
start at a fresh one, or it may cross into the next window mid-test and see its count restart."""

from __future__ import annotations

from jean_memory import clock
from jean_memory.db import rate_limits


def to_window_start(limit: rate_limits.Limit) -> None:
    """Move the clock to the start of a fresh fixed window, so counting up to the limit (hundreds
    of writes, slow on a loaded machine) cannot cross into the next window and start over."""
    clock.advance(limit.window_seconds - clock.now() % limit.window_seconds + 0.01)
