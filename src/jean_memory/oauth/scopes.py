"""The scopes this server knows, and how a request's scope string becomes a granted one.

`memory:read` and `memory:write` (CONTRACT "Scopes"); `memory` means both and is what a client
gets when it asks for nothing we know. A grant without a writing scope is read-only: its tool
list shows only the tools that read, and `jean_memory` never saves (mcp_server/endpoint.py).
"""

from __future__ import annotations

from collections.abc import Iterable

MEMORY_SCOPE = "memory"
MEMORY_READ = "memory:read"
MEMORY_WRITE = "memory:write"
OFFLINE_ACCESS = "offline_access"
RESOURCE_SCOPES = (MEMORY_SCOPE, MEMORY_READ, MEMORY_WRITE)
SUPPORTED_SCOPES = (*RESOURCE_SCOPES, OFFLINE_ACCESS)
#: The scopes that let a token save, change or delete memories.
WRITE_SCOPES = frozenset({MEMORY_SCOPE, MEMORY_WRITE})
SCOPE_DESCRIPTIONS = {
    MEMORY_SCOPE: "Read and save your memories and documents",
    MEMORY_READ: "Read your memories and documents",
    MEMORY_WRITE: "Save and change your memories and documents",
    OFFLINE_ACCESS: "Stay connected without asking you to sign in again",
}


def grantable_scope(requested: str | None) -> str:
    """Keep the scopes we know, drop the rest (Claude sends `claudeai`), and grant memory
    access when nothing known remains: refusing would break clients that guess scope names."""
    known = [s for s in dict.fromkeys((requested or "").split()) if s in SUPPORTED_SCOPES]
    if not any(s in RESOURCE_SCOPES for s in known):
        known.insert(0, MEMORY_SCOPE)
    return " ".join(known)


def expanded(scope: str) -> set[str]:
    """The scope as a set with `memory` spelled out as read and write, so `memory:read` counts as
    part of `memory` when a scope is narrowed (refresh) or a remembered consent is compared."""
    scopes = set(scope.split())
    if MEMORY_SCOPE in scopes:
        scopes |= {MEMORY_READ, MEMORY_WRITE}
        scopes.discard(MEMORY_SCOPE)
    return scopes


def is_subset(requested: str, granted: str) -> bool:
    return expanded(requested) <= expanded(granted)


def can_write(scopes: Iterable[str]) -> bool:
    """Whether a token with these scopes may save, change or delete memories."""
    return not WRITE_SCOPES.isdisjoint(scopes)


def has_memory_access(scopes: Iterable[str]) -> bool:
    """Any memory scope lets a token in; which tools it gets follows `can_write`."""
    return not set(RESOURCE_SCOPES).isdisjoint(scopes)


def read_only(scope: str) -> str:
    """The scope with its writing part taken away (the consent's `allow_write` unchecked):
    `memory:read` where the memory scopes were, the others (offline_access) kept."""
    parts = [s for s in scope.split() if s not in RESOURCE_SCOPES]
    return " ".join([MEMORY_READ, *parts])


def within_consent(requested: str, consented: str) -> str | None:
    """The scope to grant without a page when the person approved `consented` before: the
    request when it asks for no more; the request made read-only when the person chose
    read-only for this app; None (ask again) when it asks for more than that."""
    if is_subset(requested, consented):
        return requested
    narrowed = read_only(requested)
    if not can_write(consented.split()) and is_subset(narrowed, consented):
        return narrowed
    return None


def describe(scope: str) -> list[str]:
    """What the consent page lists the app as able to do; writing is the page's checkbox."""
    scopes = scope.split()
    lines = [SCOPE_DESCRIPTIONS[MEMORY_READ]] if has_memory_access(scopes) else []
    return lines + [SCOPE_DESCRIPTIONS.get(s, s) for s in scopes if s not in RESOURCE_SCOPES]
