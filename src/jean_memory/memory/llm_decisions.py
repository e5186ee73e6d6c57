"""With an LLM configured, the save step asks it what each new fact does to what is stored.

The third way into "the current fact first" (issue 15, item 4), as mem0 does it: the model gets
the candidate facts and the person's existing memories closest to them (with short numeric ids,
so it cannot invent a real one, and their dates) and answers, per fact, ADD (a new fact),
UPDATE (the same fact, corrected or refined: the memory is rewritten as `update_memory` does,
its history keeping the old text), SUPERSEDE (the situation changed: the new fact is saved and
the old one marked replaced, as the local detector does) or IGNORE (already known).

The model is an outside service and may be down, slow or wrong-shaped: any transport error, an
answer that is not the JSON asked for, an unknown event or an id it was not given, and the
whole batch is saved the way it is without a model (`MemoryService.add`, whose local detector
still marks what a fact replaces). A fact the answer leaves out is saved that way too, so a
model that skips one never loses it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from jean_memory.memory.extraction import MODEL_ERRORS, LlmExtractor
from jean_memory.memory.records import Memory, MemoryInputError, iso_time
from jean_memory.memory.service import MemoryService, rows_by_pk
from jean_memory.memory.superseding import mark_superseded

logger = logging.getLogger("jean_memory.extraction")

EVENTS = ("ADD", "UPDATE", "SUPERSEDE", "IGNORE")
#: Existing memories shown per fact: mem0 shows the 5 nearest whatever their similarity; a
#: changed fact can be far in meaning ("The user moved to Lisbon" vs "I live in Berlin": 0.28
#: with the local model), so only the plainly unrelated (below 0.2) are left out.
NEIGHBOURS = 5
MIN_COSINE = 0.2
MAX_SHOWN = 15
TAGS = ["auto"]

PROMPT = (
    "You keep a person's long-term memory up to date. You get NEW FACTS just learned about the "
    "person and EXISTING MEMORIES (each with an id and the date it was saved). For every new fact "
    "decide one event:\n"
    "- ADD: new information not in any existing memory.\n"
    "- UPDATE: the same fact as an existing memory, corrected or with more detail; give the "
    "memory's id and the full rewritten text.\n"
    "- SUPERSEDE: the person's situation changed and the fact replaces an existing memory that "
    "was true before (they moved, changed jobs, ended something); give the old memory's id.\n"
    "- IGNORE: already stated by an existing memory.\n"
    "Only use ids from EXISTING MEMORIES. Answer with JSON only: "
    '{"decisions": [{"fact": <index of the new fact>, "event": "ADD|UPDATE|SUPERSEDE|IGNORE", '
    '"id": "<existing id, for UPDATE and SUPERSEDE>", "text": "<for UPDATE>"}]}'
)


class Malformed(ValueError):
    """The model's decisions are not what was asked for: fall back for the whole batch."""


@dataclass(frozen=True)
class Decision:
    fact: int
    event: str
    target: Memory | None = None  # the existing memory, for UPDATE and SUPERSEDE
    text: str | None = None  # the rewritten text, for UPDATE


def neighbours(memory: MemoryService, user_id: str, facts: Sequence[str]) -> list[Memory]:
    """The person's current memories closest to any of the facts (no document passages, none
    already replaced), closest first, at most MAX_SHOWN."""
    embedder = memory.embedder
    if embedder is None:
        return []
    best: dict[int, float] = {}
    for vector in embedder.embed(list(facts)):
        for pk, cosine in memory.vectors.nearest(user_id, embedder.model_name, vector, NEIGHBOURS):
            if cosine >= MIN_COSINE:
                best[pk] = max(cosine, best.get(pk, -1.0))
    ranked = sorted(best, key=lambda pk: -best[pk])
    with memory.engine.connect() as conn:
        found = rows_by_pk(conn, user_id, ranked, kind="memory")
    return [found[pk] for pk in ranked if pk in found and found[pk].superseded_by is None][:MAX_SHOWN]


def request_text(facts: Sequence[str], existing: Sequence[Memory]) -> str:
    shown = [{"id": str(i), "text": m.text, "saved": iso_time(m.created_at)[:10]} for i, m in enumerate(existing)]
    new = [{"fact": i, "text": f} for i, f in enumerate(facts)]
    return json.dumps({"EXISTING MEMORIES": shown, "NEW FACTS": new}, ensure_ascii=False)


def parse_decisions(answer: dict, facts: Sequence[str], existing: Sequence[Memory]) -> list[Decision]:
    """The model's answer as decisions, one per fact at most; Malformed for anything else."""
    items = answer.get("decisions")
    if not isinstance(items, list):
        raise Malformed("no list of decisions")
    decided: dict[int, Decision] = {}
    for item in items:
        if not isinstance(item, dict):
            raise Malformed("a decision is not an object")
        fact, event = item.get("fact"), str(item.get("event", "")).upper()
        if isinstance(fact, str) and fact.isdigit():
            fact = int(fact)
        if not isinstance(fact, int) or isinstance(fact, bool) or not 0 <= fact < len(facts) or fact in decided:
            raise Malformed(f"unknown or repeated fact {fact!r}")
        if event not in EVENTS:
            raise Malformed(f"unknown event {event!r}")
        target = None
        if event in ("UPDATE", "SUPERSEDE"):
            key = str(item.get("id", ""))
            if not key.isdigit() or int(key) >= len(existing):
                raise Malformed(f"{event} names an id it was not given: {key!r}")
            target = existing[int(key)]
        text = item.get("text")
        if event == "UPDATE" and (not isinstance(text, str) or not text.strip()):
            raise Malformed("UPDATE without the rewritten text")
        decided[fact] = Decision(fact, event, target, text.strip() if event == "UPDATE" else None)
    return [decided[i] for i in sorted(decided)]


def decide(extractor: LlmExtractor, facts: Sequence[str], existing: Sequence[Memory]) -> list[Decision] | None:
    """The model's decisions, or None (logged) when it failed or answered out of shape."""
    try:
        return parse_decisions(extractor.chat_json(PROMPT, request_text(facts, existing)), facts, existing)
    except (Malformed, *MODEL_ERRORS) as exc:
        logger.warning("LLM memory decisions failed (%s); saving with the local detector", type(exc).__name__)
        return None


def save_facts(
    memory: MemoryService, extractor: LlmExtractor, user_id: str, facts: Sequence[str], client: str | None
) -> list[Decision] | None:
    """Save `facts` as the model decides against the person's closest memories; without a
    usable answer, each is saved as without a model. The decisions applied, or None."""
    facts = [f for f in facts if f.strip()]
    if not facts:
        return []
    existing = neighbours(memory, user_id, facts)
    if not existing:  # nothing to update or replace: no question for the model
        for fact in facts:
            _add(memory, user_id, fact, client)
        return [Decision(i, "ADD") for i in range(len(facts))]
    decisions = decide(extractor, facts, existing)
    if decisions is None:
        for fact in facts:
            _add(memory, user_id, fact, client)
        return None
    decided = {d.fact for d in decisions}
    for decision in decisions:
        apply(memory, user_id, facts[decision.fact], decision, client)
    for i, fact in enumerate(facts):
        if i not in decided:
            _add(memory, user_id, fact, client)
    return decisions


def apply(memory: MemoryService, user_id: str, fact: str, decision: Decision, client: str | None) -> None:
    try:
        if decision.event == "ADD":
            _add(memory, user_id, fact, client)
        elif decision.event == "UPDATE" and decision.target is not None and decision.text is not None:
            # The same path as the update_memory tool: re-embedded, the old text in the history.
            if memory.update(user_id, decision.target.id, decision.text, None, client) is None:
                _add(memory, user_id, fact, client)  # deleted meanwhile: keep the fact
        elif decision.event == "SUPERSEDE" and decision.target is not None:
            result = memory.add(user_id, fact, TAGS, client)
            new = result.saved[0] if result.saved else (result.similar[0] if result.similar else None)
            if new is not None and new.id != decision.target.id:
                with memory.engine.begin() as conn:
                    mark_superseded(conn, user_id, decision.target.id, new.id, client)
    except MemoryInputError:
        return


def _add(memory: MemoryService, user_id: str, fact: str, client: str | None) -> None:
    try:
        memory.add(user_id, fact, TAGS, client)
    except MemoryInputError:
        return
