"""What `jean_memory` hands the assistant on each message, and the text it reads.

`context_for` decides: a short profile at the start of a conversation, the memories relevant to
the message (without repeating the profile), and the facts to save after the answer (queued, so
the assistant never waits on embedding or an LLM). `Context.text` renders it as compact lines
within a size budget, each saying when the fact was saved (and changed), so the assistant can
tell an old fact from a newer one even when nothing marked the old one as replaced; one marked
replaced (superseding.py) is left out of the profile and shown as "earlier: ... (until <date>)",
after the current ones, among the relevant memories. One with a newer memory on the same
subject in the same context (recency.py: close vectors, saved later) is shown as "earlier"
too, without being hidden, since nothing decided it was replaced. The
assistant reads this on every message, so it must be short (Claude's tool results should stay
far below 25k tokens) and plain: no JSON, no ids it has to ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from jean_memory.memory.recency import earlier_marks
from jean_memory.memory.records import Memory, MemoryInputError, iso_time
from jean_memory.memory.service import MemoryService
from jean_memory.memory.triage import facts_worth_keeping

CONTEXT_BUDGET_CHARS = 4000
MAX_LINE_CHARS = 600
CONTEXT_LIMIT = 8
#: Shorter messages are not handed to the LLM extractor when triage found no fact in them.
MIN_LLM_MESSAGE_CHARS = 20
PROFILE_LIMIT = 12


@dataclass(frozen=True)
class Context:
    """What was found and queued for one message; None where it was not asked for."""

    profile: list[Memory] | None = None
    relevant: list[Memory] | None = None
    saving: list[str] = field(default_factory=list)
    checking: bool = False  # the message went to the LLM extractor instead
    # id -> a newer memory on the same subject in this context (recency.py): shown as "earlier"
    newer: dict[str, Memory] = field(default_factory=dict)

    def text(self) -> str:
        parts: list[str] = []
        if self.profile is not None:
            parts.append(format_memories(self.profile, "What you know about this person:", newer=self.newer))
        if self.relevant is not None:
            parts.append(format_memories(self.relevant, "Memories relevant to this message:", newer=self.newer))
        if self.saving:
            parts.append("Saving to memory: " + " | ".join(self.saving))
        elif self.checking:
            parts.append("Checking this message for anything worth remembering.")
        if not parts:
            return "No context requested and nothing new to save."
        return "\n\n".join(parts)


def context_for(
    memory: MemoryService,
    user_id: str,
    message: str,
    is_new_conversation: bool,
    needs_context: bool,
    client: str | None,
    save: bool = True,
) -> Context:
    """The profile (on a new conversation), the relevant memories (when `needs_context`) and the
    save queued for after the answer: the facts triage found, or the whole message for the LLM
    extractor when one is configured and the message is long enough to hold a fact. With `save`
    false (a read-only connection) nothing is saved or queued."""
    if not isinstance(message, str) or not message.strip():
        raise MemoryInputError("user_message is empty: pass the person's message")
    profile: list[Memory] | None = None
    relevant: list[Memory] | None = None
    shown: set[str] = set()
    if is_new_conversation:
        profile = memory.profile(user_id, PROFILE_LIMIT)
        shown = {m.id for m in profile}
    if needs_context:
        found = [m for m in memory.search(user_id, message, CONTEXT_LIMIT, None) if m.id not in shown]
        if found or not is_new_conversation:
            relevant = found
    newer = newer_in_context(memory, user_id, [*(profile or []), *(relevant or [])])
    found = Context(profile=profile, relevant=relevant, newer=newer)
    return with_save_queued(found, memory, user_id, message, client) if save else found


def with_save_queued(
    context: Context, memory: MemoryService, user_id: str, message: str, client: str | None
) -> Context:
    """`context` with what was queued for saving from `message`: the facts triage found, or the
    whole message for the LLM extractor. Separate from the reading, because it writes: the MCP
    tool runs it where a wait for the person's write lock holds no tool thread (tool_threads.py)."""
    facts = facts_worth_keeping(message)
    if facts:
        memory.enqueue_facts(user_id, facts, client, message)
        return replace(context, saving=facts)
    if memory.extracts_with_llm and len(message.strip()) >= MIN_LLM_MESSAGE_CHARS:
        memory.enqueue_facts(user_id, [], client, message)
        return replace(context, checking=True)
    return context


def newer_in_context(memory: MemoryService, user_id: str, shown: list[Memory]) -> dict[str, Memory]:
    """id -> the newer memory on the same subject shown in the same context (recency.py)."""
    if memory.embedder is None or len(shown) < 2:
        return {}
    with memory.engine.connect() as conn:
        return earlier_marks(conn, user_id, memory.embedder.model_name, shown)


def format_memories(
    memories: list[Memory], heading: str, budget: int = CONTEXT_BUDGET_CHARS, newer: dict[str, Memory] | None = None
) -> str:
    if not memories:
        return f"{heading}\n(nothing stored yet)"
    lines = [heading]
    used = len(heading)
    for memory in memories:
        text = " ".join(memory.text.split())
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + "…"
        source = f" (from “{memory.title}”)" if memory.title else ""
        line = f"- {text}{source} ({saved_when(memory)})"
        if memory.superseded_at is not None:  # replaced by a newer memory: history, not a current fact
            line = f"- earlier: {text}{source} ({saved_when(memory)}, until {iso_time(memory.superseded_at)[:10]})"
        elif newer and memory.id in newer:  # a newer memory on the same subject is in this context
            later = iso_time(newer[memory.id].created_at)[:10]
            line = f"- earlier: {text}{source} ({saved_when(memory)}; a newer memory on this subject, saved {later}, is shown too)"
        if used + len(line) + 1 > budget:
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def saved_when(memory: Memory) -> str:
    """ "saved 2026-03-14", or "saved 2026-03-14, updated 2026-05-02" for a fact changed since."""
    saved = f"saved {iso_time(memory.created_at)[:10]}"
    if memory.was_updated and memory.updated_at is not None:
        updated = iso_time(memory.updated_at)[:10]
        if updated != saved[-10:]:
            return f"{saved}, updated {updated}"
    return saved
