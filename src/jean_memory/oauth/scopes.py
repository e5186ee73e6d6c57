"""The scopes this server knows, and how a request's scope string becomes a granted one."""

from __future__ import annotations

MEMORY_SCOPE = "memory"
OFFLINE_ACCESS = "offline_access"
RESOURCE_SCOPES = (MEMORY_SCOPE,)
SUPPORTED_SCOPES = (MEMORY_SCOPE, OFFLINE_ACCESS)
SCOPE_DESCRIPTIONS = {
    MEMORY_SCOPE: "Read and save your memories and documents",
    OFFLINE_ACCESS: "Stay connected without asking you to sign in again",
}


def grantable_scope(requested: str | None) -> str:
    """Keep the scopes we know, drop the rest (Claude sends `claudeai`), and grant memory
    access when nothing known remains: refusing would break clients that guess scope names."""
    known = [s for s in dict.fromkeys((requested or "").split()) if s in SUPPORTED_SCOPES]
    if not any(s in RESOURCE_SCOPES for s in known):
        known.insert(0, MEMORY_SCOPE)
    return " ".join(known)


def is_subset(requested: str, granted: str) -> bool:
    return set(requested.split()) <= set(granted.split())
