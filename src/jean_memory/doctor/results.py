"""What a check concludes, and how each conclusion counts towards the exit code.

A check either passes, fails, warns (an informational check that did not pass, or a finding that
is worth knowing but does not stop Claude) or is skipped because something it needs failed
earlier. Exit code 0 means every required check passed: a skipped required check did not pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


class Severity(StrEnum):
    """`required` checks decide the exit code; `info` ones only ever warn."""

    REQUIRED = "required"
    INFO = "info"


@dataclass(frozen=True)
class Verdict:
    """What one check function returns: the finding, and on failure what to change."""

    ok: bool
    detail: str
    fix: str = ""
    ms: float | None = None
    warning: bool = False  # not ok, but a warning even for a required check


class Skip(Exception):
    """A check cannot judge: something it needs failed earlier (and is reported there)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Failed(Exception):
    """A helper found a failure that the current check must report."""

    def __init__(self, detail: str, fix: str, ms: float | None = None) -> None:
        super().__init__(detail)
        self.verdict = Verdict(ok=False, detail=detail, fix=fix, ms=ms)


@dataclass(frozen=True)
class CheckResult:
    """One printed line: `name` is stable for machines, `title` is for people."""

    name: str
    title: str
    status: Status
    severity: Severity
    detail: str
    fix: str = ""
    ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.PASS

    @property
    def blocks(self) -> bool:
        """True when this result alone makes the exit code non-zero."""
        return self.severity is Severity.REQUIRED and self.status in (Status.FAIL, Status.SKIP)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "fix": self.fix,
            "ms": None if self.ms is None else round(self.ms, 1),
            "status": self.status.value,
            "severity": self.severity.value,
            "title": self.title,
        }
