"""Synthetic memories and queries, reproducible from a seed, shared by the load script and the
bare SDK server (so both answer `search_memory` with results of the same shape and size)."""

from __future__ import annotations

import random

PEOPLE = [
    "My sister Anna", "My brother Tom", "My partner Sam", "My colleague Priya", "My manager Luis",
    "My friend Kenji", "My daughter Mia", "My son Leo", "My neighbour Olga", "My mentor Grace",
    "My dentist", "My landlord", "I", "My grandmother", "My cousin Rafael",
]  # fmt: skip
VERBS = [
    "loves", "dislikes", "is learning", "recommended", "always orders", "is allergic to",
    "wants to try", "gave me", "collects", "writes about", "is saving up for", "forgot about",
]  # fmt: skip
THINGS = [
    "green tea", "espresso", "sourdough bread", "Thai curry", "the piano", "Spanish lessons",
    "mountain biking", "trail running", "oil painting", "board games", "jazz records", "sci-fi novels",
    "a sailing course", "a vintage camera", "peanuts", "shellfish", "gluten", "oat milk",
    "rock climbing", "chess openings", "Rust programming", "gardening tools", "a road bike",
    "Japanese pottery", "the violin", "yoga classes", "birdwatching", "a tiny house",
]  # fmt: skip
WHEN = [
    "on weekends", "every morning", "since last spring", "after work", "during the holidays",
    "when travelling to Lisbon", "at the office", "in winter", "before big meetings", "most Fridays",
    "since moving to Berlin", "with the kids", "on long flights", "at the lake house",
]  # fmt: skip
TAGS = ["family", "food", "health", "work", "hobby", "travel", "music", "sport", "learning", "home"]


def make_memories(count: int, seed: int) -> list[tuple[str, list[str]]]:
    """`count` distinct sentences (text, tags); the same seed gives the same list."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, list[str]]] = []
    capacity = len(PEOPLE) * len(VERBS) * len(THINGS) * len(WHEN)
    if count > capacity:
        raise ValueError(f"at most {capacity} distinct memories can be generated")
    while len(out) < count:
        text = f"{rng.choice(PEOPLE)} {rng.choice(VERBS)} {rng.choice(THINGS)} {rng.choice(WHEN)}."
        if text in seen:
            continue
        seen.add(text)
        out.append((text, rng.sample(TAGS, rng.randint(0, 2))))
    return out


def vocabulary() -> list[str]:
    words: set[str] = set()
    for phrase in [*PEOPLE, *VERBS, *THINGS, *WHEN]:
        words.update(w.strip(".,").lower() for w in phrase.split() if len(w) > 3)
    words -= {"with", "when", "about", "after", "before", "since", "always", "every", "during", "most"}
    return sorted(words)


def make_queries(count: int, seed: int) -> list[str]:
    """`count` distinct queries of 1-4 content words drawn from the memories' vocabulary.

    Distinct, so a server-side cache of query results or query embeddings cannot make the
    benchmark look better than real traffic (where exact repeats are rare)."""
    rng = random.Random(seed + 1)
    words = vocabulary()
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        query = " ".join(rng.sample(words, rng.randint(1, 4)))
        if query not in seen:
            seen.add(query)
            out.append(query)
    return out
