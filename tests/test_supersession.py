"""The local supersession detector (memory/supersession.py): pure functions, so no database.

Vectors are built by hand (unit vectors with a chosen cosine) so each test says which signal it
exercises; bench/knowledge_updates.py measures the detector with the real model.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jean_memory.memory.supersession import (
    Candidate,
    SupersessionConfig,
    change_cues,
    content_words,
    find_superseded,
    pair_signals,
    statement,
    values,
)

E1 = np.array([1.0, 0.0], dtype=np.float32)


def at_cosine(cosine: float) -> np.ndarray:
    """A unit vector whose cosine with E1 is `cosine`."""
    return np.array([cosine, math.sqrt(max(0.0, 1 - cosine * cosine))], dtype=np.float32)


def supersedes(new: str, old: str, cosine: float = 0.8) -> bool:
    found = find_superseded(new, E1, 2.0, [Candidate("old", old, at_cosine(cosine), 1.0)])
    return found is not None and found.old_id == "old"


def test_a_moved_home_supersedes_the_old_one() -> None:
    assert supersedes("We finally moved to Lisbon last month.", "I live in Berlin, in a flat in Kreuzberg.")


def test_changed_numbers_supersede_at_high_similarity_only() -> None:
    new, old = "My doctor raised my lisinopril dose to 20 mg.", "I take 10 mg of lisinopril every morning."
    assert supersedes(new, old, 0.8)
    assert not supersedes(new, old, 0.3)


def test_no_longer_supersedes_without_a_changed_value() -> None:
    assert supersedes("I started eating meat again, no longer vegetarian.", "I'm vegetarian.")


def test_another_person_is_not_a_replacement() -> None:
    assert not supersedes("My brother Pablo lives in Barcelona.", "My sister Julia lives in Madrid.", 0.9)


def test_an_added_fact_is_not_a_replacement() -> None:
    assert not supersedes("I'm also allergic to cats now.", "I'm allergic to peanuts.", 0.9)


def test_a_long_memory_is_never_hidden_by_one_change() -> None:
    old = (
        "I live in Berlin, work at Siemens as an engineer, play the cello on Sundays and have two cats, Miso and Tofu."
    )
    assert not supersedes("I moved to Lisbon.", old, 0.9)


def test_a_later_or_simultaneous_memory_is_never_superseded() -> None:
    new, old = "We finally moved to Lisbon.", "I live in Berlin."
    assert find_superseded(new, E1, 5.0, [Candidate("x", old, at_cosine(0.9), 5.0)]) is None
    assert find_superseded(new, E1, 5.0, [Candidate("x", old, at_cosine(0.9), 6.0)]) is None


def test_the_closest_accepted_candidate_wins() -> None:
    candidates = [
        Candidate("far", "I live in Hamburg.", at_cosine(0.6), 1.0),
        Candidate("near", "I live in Berlin.", at_cosine(0.9), 2.0),
    ]
    found = find_superseded("I moved to Lisbon now.", E1, 3.0, candidates)
    assert found is not None and found.old_id == "near" and found.reasons


def test_greetings_and_stamps_are_not_values() -> None:
    assert values("Thanks, Melanie! I moved to Lisbon with Anna.") == {"lisbon", "anna"}
    assert statement("[1:56 pm on 8 May, 2023] Caroline: hi") == "Caroline: hi"
    signals = pair_signals("[8 May, 2023] I live in Porto.", "[9 June, 2024] I live in Porto.", 0.99)
    assert signals.same_text and not signals.new_values


def test_signals() -> None:
    assert {"moved", "no longer"} <= change_cues("We moved and no longer rent")
    assert "@home" in content_words("I live in Berlin") & content_words("We moved to Lisbon")
    assert values("My salary went up to 71,000 dollars in March") == {"71000", "march"}


WORDS = st.lists(st.sampled_from("I my now moved live Berlin Lisbon 12 phone new job Anna no longer the a".split()))


@settings(max_examples=300, deadline=None)
@given(words=WORDS, cosine=st.floats(-1.0, 1.0))
def test_a_memory_never_supersedes_an_identical_one(words: list[str], cosine: float) -> None:
    text = " ".join(words)
    assert find_superseded(text, E1, 2.0, [Candidate(1, text, at_cosine(abs(cosine)), 1.0)]) is None
    # ... nor one that differs only in case and punctuation.
    assert find_superseded(text.upper() + "!", E1, 2.0, [Candidate(1, text, E1, 1.0)]) is None


@settings(max_examples=300, deadline=None)
@given(new=WORDS, old=WORDS)
def test_no_shared_content_word_no_supersession(new: list[str], old: list[str]) -> None:
    new_text, old_text = " ".join(new), " ".join(old)
    if content_words(new_text) & content_words(old_text):
        return
    # Even at cosine 1 and with every change word: the two are about different things.
    assert find_superseded(new_text, E1, 2.0, [Candidate(1, old_text, E1, 1.0)]) is None


@settings(max_examples=200, deadline=None)
@given(new=WORDS, old=WORDS, cosine=st.floats(0.0, 1.0))
def test_stricter_thresholds_never_supersede_more(new: list[str], old: list[str], cosine: float) -> None:
    candidate = [Candidate(1, " ".join(old), at_cosine(cosine), 1.0)]
    strict = SupersessionConfig(with_cue=0.9, with_values=0.95, min_shared=2, max_words=10)
    if find_superseded(" ".join(new), E1, 2.0, candidate, strict) is not None:
        assert find_superseded(" ".join(new), E1, 2.0, candidate) is not None
