"""What `jean_memory` hands the assistant: compact dated lines within a size budget.

The assistant reads this on every message, so it must be short (Claude's tool results should stay
far below 25k tokens) and plain: no JSON, no ids it has to ignore.
"""

from __future__ import annotations

from jean_memory.memory.records import Memory, iso_time

CONTEXT_BUDGET_CHARS = 4000
MAX_LINE_CHARS = 600


def format_memories(memories: list[Memory], heading: str, budget: int = CONTEXT_BUDGET_CHARS) -> str:
    if not memories:
        return f"{heading}\n(nothing stored yet)"
    lines = [heading]
    used = len(heading)
    for memory in memories:
        text = " ".join(memory.text.split())
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + "…"
        source = f" (from “{memory.title}”)" if memory.title else ""
        line = f"- [{iso_time(memory.created_at)[:10]}] {text}{source}"
        if used + len(line) + 1 > budget:
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)
