"""Print results for people (one line per check, ✓/✗ and the fix) or for machines (JSON)."""

from __future__ import annotations

import json
import textwrap
from collections import Counter

from jean_memory.doctor.results import CheckResult, Status

MARKS = {Status.PASS: "✓", Status.FAIL: "✗", Status.WARN: "!", Status.SKIP: "-"}
ASCII_MARKS = {Status.PASS: "OK", Status.FAIL: "XX", Status.WARN: "!!", Status.SKIP: "--"}
WIDTH = 100


def can_print_marks(encoding: str | None) -> bool:
    """Whether the output stream can carry ✓ and ✗ (a Windows console in cp1252 cannot)."""
    try:
        "✓✗".encode(encoding or "ascii")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


def _ms(result: CheckResult) -> str:
    return "     -   " if result.ms is None else f"{result.ms:6.0f} ms"


def render_text(url: str, results: list[CheckResult], *, unicode: bool = True) -> str:
    marks = MARKS if unicode else ASCII_MARKS
    title_width = max(len(r.title) for r in results)
    lines = [f"jean-memory doctor: {url}", ""]
    for result in results:
        lines.append(f"{marks[result.status]} {result.title:<{title_width}}  {_ms(result)}  {result.detail}")
        if result.fix and result.status in (Status.FAIL, Status.WARN):
            label = "    fix: " if result.status is Status.FAIL else "    hint: "
            lines.append(textwrap.fill(result.fix, WIDTH, initial_indent=label, subsequent_indent=" " * len(label)))
    counts = Counter(r.status for r in results)
    warnings = "warning" if counts[Status.WARN] == 1 else "warnings"
    summary = (
        f"{counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, "
        f"{counts[Status.WARN]} {warnings}, {counts[Status.SKIP]} skipped"
    )
    blocking = [r for r in results if r.blocks]
    verdict = (
        "Claude should be able to connect." if not blocking else "Fix the ✗ lines first; skipped checks depend on them."
    )
    if not unicode:
        verdict = verdict.replace("✗", "XX")
    lines += ["", f"{summary}. {verdict}"]
    return "\n".join(lines) + "\n"


def render_json(results: list[CheckResult]) -> str:
    return json.dumps([result.to_json() for result in results], indent=2, ensure_ascii=False) + "\n"
