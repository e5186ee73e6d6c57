"""Dates on the person's pages: one readable form, in UTC (the server knows no time zone of the
reader), with the machine-readable value for a `<time datetime>` attribute."""

from __future__ import annotations

from datetime import UTC, datetime

from jean_memory import clock
from jean_memory.memory.records import iso_time as iso  # noqa: F401 - the `datetime` value, as the tools give it


def shown(timestamp: float | None, never: str = "never") -> str:
    """`3 Dec 2026, 12:41 UTC`; "just now" within a minute; `never` for None."""
    if timestamp is None:
        return never
    if 0 <= clock.now() - timestamp < 60:
        return "just now"
    moment = datetime.fromtimestamp(timestamp, UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"
