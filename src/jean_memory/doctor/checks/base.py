"""What a check is, how one is declared, and the helpers the checks share.

Each check judges one thing Claude (or a browser client such as the MCP Inspector) relies on,
names the clause that makes it a requirement, and on failure says what to change.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from jean_memory.doctor.context import Context
from jean_memory.doctor.fetcher import Exchange
from jean_memory.doctor.results import Severity, Verdict

CheckFunction = Callable[[Context], Verdict]


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    severity: Severity
    run: CheckFunction


def check(name: str, title: str, severity: Severity = Severity.REQUIRED) -> Callable[[CheckFunction], Check]:
    """Declare a check; `checks.CHECKS` lists them in the order they run and print in."""

    def declare(function: CheckFunction) -> Check:
        return Check(name, title, severity, function)

    return declare


def error_summary(exchange: Exchange) -> str:
    """`error: error_description` of an OAuth error body, else the page's text, shortened."""
    doc = exchange.json_object()
    if doc and "error" in doc:
        description = doc.get("error_description")
        return f"{doc['error']}: {description}" if description else str(doc["error"])
    text = html.unescape(re.sub(r"<[^>]+>", " ", exchange.text()))
    text = " ".join(text.split())
    return text[:160] + ("…" if len(text) > 160 else "")


def status_line(exchange: Exchange) -> str:
    summary = error_summary(exchange)
    return f"{exchange.describe()} ({summary})" if summary else exchange.describe()


PUBLIC_METADATA_FIX = (
    "Serve /.well-known/* without authentication: exclude it from the auth middleware. "
    "Clients fetch metadata before they have any token (RFC 9728 §3, RFC 8414 §3)."
)
