"""What a benchmark report says about the code it measured, shared by every script in bench/."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> tuple[str, bool]:
    """The commit measured, and whether the work tree's src/ differed from it: numbers from
    uncommitted code must say so."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return head, bool(dirty)


def code_label() -> str:
    head, dirty = code_version()
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"
