"""Deciding, without an LLM, what in a person's message is worth remembering.

The assistant calls `jean_memory` with every message. Most messages are questions, greetings or
instructions; what is worth keeping are statements about the person: who they are, what they
like, what they plan, the people and things in their life. This keeps those sentences verbatim
and skips the rest. It errs towards skipping: a missed fact can be saved later with
`add_memories`, while noise in memory degrades every future answer.
"""

from __future__ import annotations

import re

MIN_CHARS = 12
MAX_CHARS = 500
MAX_FACTS_PER_MESSAGE = 3

SENTENCE = re.compile(r"(?<=[.!?\n])\s+")
FIRST_PERSON = re.compile(r"\b(i|i'm|im|i've|i'd|i'll|my|mine|me|we|we're|our|us)\b", re.IGNORECASE)
FACT_WORDS = re.compile(
    r"\b(am|was|were|have|has|had|live[sd]?|living|moved|work(?:s|ed|ing)?|job|like[sd]?|love[sd]?|hate[sd]?|"
    r"prefer(?:s|red)?|enjoy(?:s|ed)?|favou?rite|want(?:s|ed)?|plan(?:s|ned|ning)?|going to|will|need(?:s|ed)?|"
    r"started|born|married|divorced|engaged|allergic|vegan|vegetarian|birthday|name is|called|named|"
    r"daughter|son|wife|husband|partner|mother|father|mom|dad|sister|brother|friend|dog|cat|pet|"
    r"studying|study|learning|speak|usually|always|never|use|using|own|bought|adopted|diagnosed|"
    r"remember|goal|trying to|working on|building|project)\b",
    re.IGNORECASE,
)
REMEMBER_REQUEST = re.compile(r"^\s*(please\s+)?(remember|note|keep in mind|don't forget)\s+(that\s+)?", re.I)
QUESTION_START = re.compile(
    r"^\s*(what|who|whom|whose|where|when|why|how|which|can|could|would|should|shall|is|are|am|do|does|did|"
    r"will|may|might|have|has)\b",
    re.IGNORECASE,
)
SMALL_TALK = re.compile(
    r"^\s*(hi|hello|hey|thanks|thank you|ok|okay|sure|yes|no|yep|nope|bye|good (morning|evening|night)|"
    r"cool|great|nice|lol|haha)\b[\s!.,]*$",
    re.IGNORECASE,
)
INSTRUCTION_START = re.compile(
    r"^\s*(please\s+)?(write|draft|make|create|give|show|tell|explain|summari[sz]e|translate|fix|help|list|"
    r"find|generate|rewrite|check|review|suggest)\b",
    re.IGNORECASE,
)


def _is_fact(sentence: str) -> bool:
    if not MIN_CHARS <= len(sentence) <= MAX_CHARS:
        return False
    if sentence.endswith("?") or SMALL_TALK.match(sentence):
        return False
    if QUESTION_START.match(sentence) or INSTRUCTION_START.match(sentence):
        return False
    return bool(FIRST_PERSON.search(sentence) and FACT_WORDS.search(sentence))


def facts_worth_keeping(message: str) -> list[str]:
    """The sentences of `message` to save as memories (at most a few), verbatim."""
    if not message or not message.strip():
        return []
    message = message.replace("\x00", " ")  # never storable (PostgreSQL); the words around it are
    kept: list[str] = []
    for raw in SENTENCE.split(message.strip()):
        sentence = " ".join(raw.split())
        explicit = REMEMBER_REQUEST.match(sentence)
        if explicit:
            sentence = sentence[explicit.end() :].strip()
            sentence = sentence[:1].upper() + sentence[1:]
            if MIN_CHARS <= len(sentence) <= MAX_CHARS:
                kept.append(sentence)
        elif _is_fact(sentence):
            kept.append(sentence)
        if len(kept) >= MAX_FACTS_PER_MESSAGE:
            break
    return kept


IMPORTANT = re.compile(
    r"\b(name is|called|born|birthday|live[sd]?|moved|work(?:s|ed)? (?:as|at|for)|job|married|wife|husband|"
    r"partner|daughter|son|children|kids|allergic|diagnosed|vegan|vegetarian|prefer|favou?rite|always|never)\b",
    re.IGNORECASE,
)


def importance(text: str) -> int:
    """Rough weight of a memory for a person's profile: identity and lasting preferences first."""
    return len(IMPORTANT.findall(text))
