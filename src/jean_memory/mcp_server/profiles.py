"""Client profiles: which tools each kind of client sees, chosen by the token's `client` claim."""

from __future__ import annotations

MEMORY_TOOLS = (
    "jean_memory",
    "add_memories",
    "search_memory",
    "list_memories",
    "update_memory",
    "delete_memory",
    "store_document",
)
PROFILE_TOOLS: dict[str, tuple[str, ...]] = {
    "claude": MEMORY_TOOLS,
    "default": MEMORY_TOOLS,
    # ChatGPT's connectors call exactly `search` and `fetch`; other tools confuse its deep research.
    "chatgpt": ("search", "fetch"),
}


def profile_for(name: str | None) -> str:
    """A profile name from a token claim or a legacy URL segment; unknown names get `default`."""
    name = (name or "").lower()
    if name in PROFILE_TOOLS:
        return name
    if "claude" in name:
        return "claude"
    if "chatgpt" in name or "openai" in name:
        return "chatgpt"
    return "default"
