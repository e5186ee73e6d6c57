"""Deciding, without a language model, whether a new memory replaces an older one.

People's facts change ("I live in Berlin", then "We finally moved to Lisbon"), and an assistant
handed both as equal truths answers with the stale one half the time. The server marks the
older memory superseded when this detector says the new one is about the same subject with a
different value (issue 15, item 4). A wrong supersession hides a true fact, which is worse than
a missed one (the assistant still sees both, with their dates), so every rule here leans to
"no": a pair must be close in meaning, share a subject, and show a change (a changed place,
name, number or date, or an explicit change word), and must not look like a second fact of the
same kind ("also", another person).

Pure functions on text and unit vectors (embeddings.py's are normalised); nothing here reads
the database. bench/knowledge_updates.py measures precision and recall and chose the
thresholds in `SupersessionConfig` (see bench/README.md).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Candidate",
    "PairSignals",
    "Supersession",
    "SupersessionConfig",
    "best_superseded",
    "change_cues",
    "content_words",
    "decide",
    "find_superseded",
    "pair_signals",
    "statement",
    "values",
    "weak_cues",
]


@dataclass(frozen=True)
class SupersessionConfig:
    """The cosine a pair needs, by the kind of change it shows. Chosen by leave-one-out on the
    development set (bench/knowledge_updates.py): a change word ("moved", "no longer") is
    stronger evidence than changed values alone, so it needs less similarity."""

    with_cue: float = 0.50  # cosine needed when the new text says something changed
    with_values: float = 0.70  # cosine needed when only the places/names/numbers differ
    min_shared: int = 1  # content words (or topics) the two texts must share
    #: Longest memory (in words) the detector judges, old or new: a memory holding several facts
    #: must not vanish because one of them changed, and a long new one rarely states one value
    #: (the assistant still sees both, with their dates).
    max_words: int = 15
    #: Cosine needed when the new text says something changed, the values changed, and both
    #: name the same kind of fact (a topic such as @home: "I moved to Lisbon last month" /
    #: "I live in Berlin", 0.42): the shared topic stands in for the similarity the rewording
    #: lacks. Above 1, the rule is off.
    with_topic: float = 1.01


@dataclass(frozen=True)
class Candidate:
    """An older memory the new one might replace; `vector` is unit length."""

    id: Hashable
    text: str
    vector: np.ndarray
    created_at: float


@dataclass(frozen=True)
class Supersession:
    """The older memory `old_id` is replaced by the new one, and why."""

    old_id: Hashable
    cosine: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PairSignals:
    """What the detector sees in one (new, old) pair."""

    cosine: float
    shared: frozenset[str]  # content words and topics both texts have
    new_values: frozenset[str]  # places, names, numbers, dates only the new text has
    old_values: frozenset[str]  # ... only the old text has
    cues: frozenset[str]  # change words in the new text that the old one lacks
    weak_cues: frozenset[str]  # ... and words that mark a change only beside changed values
    words: int  # the longer text's length in words
    additive: bool  # the new text adds a fact of the same kind ("also", "another")
    other_subject: bool  # the two texts are about different people
    same_text: bool  # the same words, once case and punctuation are set aside

    @property
    def values_changed(self) -> bool:
        """A value went and another came: "Berlin" -> "Lisbon", "10 mg" -> "20 mg"."""
        return bool(self.new_values) and bool(self.old_values)


_TOKEN = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*|\d+(?:[.,:/-]\d+)*")
_SENTENCE_END = re.compile(r"[.!?;:]\s*$")

# Function words, pronouns, auxiliaries and fillers: never a subject, never a value.
_STOP = frozenset(
    """a about after again ago all also am an and any are as at be been before being both but by
    can could did do does doing don't during each else even ever every few for from get gets got
    had has have having he her here hers him his how i i'd i'll i'm i've if in into is it it's its
    just last let like lot me mine more most much my myself no nor not of off on once one only or
    other our ours out over own really same she should so some still such than that that's the
    their them then there these they this those though through to too under until up us very was
    we we're we've were what when where which while who whom why will with would yeah yes you
    you're your yours week weeks month months year years day days today yesterday tomorrow
    time times bit lots thing things way kind sort pretty quite think thought know""".split()
)

# Words saying the fact changed. Counted only when the new text has them and the old lacks them.
_CUE_WORDS = frozenset(
    """now anymore moved relocated switched changed quit left stopped replaced instead upgraded
    sold cancelled canceled dropped nowadays renewed raised lowered increased reduced
    rescheduled migrated closed ended retired divorced longer""".split()
)
# Words that often mark a change but as often do not ("a new chapter", "it started raining"):
# they count only beside changed values.
_WEAK_CUE_WORDS = frozenset(
    "new started start starting became becomes currently finally again turned change moving switch stop replace".split()
)
_CUE_PHRASES = (
    "no longer",
    "not anymore",
    "gave up",
    "given up",
    "broke up",
    "from now on",
    "these days",
    "instead of",
    "went up",
    "went down",
)

# The new text adds a fact beside the old one rather than replacing it.
_ADDITIVE = frozenset({"also", "too", "another", "second", "additionally", "besides", "both"})

# People a fact can be about; a pair about two different ones is two facts ("my sister lives in
# Madrid", "my brother lives in Barcelona"). The first person is "self".
_RELATIONS = {
    word: group
    for group, words in {
        "mother": "mother mom mum mama",
        "father": "father dad papa",
        "sister": "sister sisters",
        "brother": "brother brothers",
        "wife": "wife",
        "husband": "husband",
        "partner": "partner girlfriend boyfriend fiance fiancee spouse",
        "son": "son sons",
        "daughter": "daughter daughters",
        "child": "kid kids child children",
        "grandmother": "grandmother grandma granny nan",
        "grandfather": "grandfather grandpa granddad",
        "friend": "friend friends",
        "colleague": "colleague colleagues coworker",
        "parents": "parents",
        "cousin": "cousin",
        "aunt": "aunt",
        "uncle": "uncle",
        "neighbour": "neighbour neighbor",
    }.items()
    for word in words.split()
}
_FIRST_PERSON = frozenset({"i", "i'm", "i've", "i'd", "i'll", "my", "me", "mine", "myself", "we", "our", "us"})

# Words naming the same kind of fact in different words ("live" / "moved to"), so a pair about
# one's home, job, diet or studies shares a subject even when it shares no word.
_TOPICS = {
    word: topic
    for topic, words in {
        "@home": "live lives lived living moved move relocated flat apartment house home address rent renting",
        "@work": "work works worked working job jobs employer company hired joined role position office",
        "@diet": "eat eating ate diet vegetarian vegan meat food",
        "@study": "study studying studied major degree university college school",
        "@car": "car drive drives driving",
    }.items()
    for word in words.split()
}

_GREETINGS = frozenset(
    "hey hi hello thanks thank wow bye yeah yes sure congrats congratulations oh aw awww agreed ok okay dear".split()
)

_MONTHS_DAYS = frozenset(
    """january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday spring summer autumn fall winter""".split()
)


# Words that are never a fact's value, even capitalised.
_NOT_VALUES = _STOP | _CUE_WORDS | _WEAK_CUE_WORDS | frozenset(_RELATIONS)


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(token, starts a sentence) pairs, apostrophes normalised."""
    out: list[tuple[str, bool]] = []
    last_end = 0
    for match in _TOKEN.finditer(text):
        before = text[last_end : match.start()]
        starts = not out or bool(_SENTENCE_END.search(before)) or before.strip().startswith(("[", "("))
        out.append((match.group().replace("\u2019", "'"), starts))
        last_end = match.end()
    return out


def _stem(word: str) -> str:
    """A crude stem so "lives", "lived" and "living" meet; consistency matters, not linguistics."""
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _lower_words(text: str) -> list[str]:
    return [token.lower() for token, _ in _tokens(text)]


_STAMP = re.compile(r"^\s*\[[^\]]{0,80}\]\s*")


def statement(text: str) -> str:
    """`text` without a leading bracketed stamp ("[1:56 pm on 8 May, 2023] ..."): the time a
    memory was said is its `created_at`, not a value of the fact, and every stamp differs."""
    return _STAMP.sub("", text, count=1)


def values(text: str) -> frozenset[str]:
    """Places, names, numbers and dates in `text`, lower-cased: the parts of a fact that change
    while its subject stays. Names are capitalised words that do not open a sentence (or have a
    capital inside, like "iPhone"); numbers lose their thousands separators."""
    found: set[str] = set()
    previous = ""
    for token, starts in _tokens(text):
        lower = token.lower()
        after, previous = previous, lower
        if token[0].isdigit():
            found.add(token.replace(",", ""))
        elif lower in _MONTHS_DAYS:
            found.add(lower)
        elif lower in _NOT_VALUES or after in _GREETINGS:  # after a greeting: whom one speaks to
            continue
        elif (token[0].isupper() and not starts) or any(c.isupper() for c in token[1:]):
            found.add(lower)
    return frozenset(found)


def change_cues(text: str) -> frozenset[str]:
    """The change words and phrases in `text` ("now", "no longer", "switched", ...)."""
    words = _lower_words(text)
    joined = " " + " ".join(words) + " "
    found = {w for w in words if w in _CUE_WORDS}
    found.update(p for p in _CUE_PHRASES if f" {p} " in joined)
    return frozenset(found)


def weak_cues(text: str) -> frozenset[str]:
    """The words in `text` that mark a change only beside changed values ("new", "started")."""
    return frozenset(w for w in _lower_words(text) if w in _WEAK_CUE_WORDS)


def content_words(text: str) -> frozenset[str]:
    """Stems of the words that carry meaning (no function or change words), plus the topics
    (`@home`, `@work`, ...) the words name. Two texts with none in common are about different
    things, whatever their cosine."""
    out: set[str] = set()
    for word in _lower_words(text):
        if word in _STOP or word in _CUE_WORDS or word in _WEAK_CUE_WORDS or word in _ADDITIVE:
            if word in _TOPICS:
                out.add(_TOPICS[word])
            continue
        out.add(_stem(word.removesuffix("'s")))
        if word in _TOPICS:
            out.add(_TOPICS[word])
    return frozenset(out)


def _subjects(words: Iterable[str]) -> frozenset[str]:
    """Whom the text is about: the relations it names, else "self" if it speaks in the first
    person, else nobody in particular (a name alone: "Leo started at Ridgeway")."""
    words = list(words)
    relations = {_RELATIONS[w.removesuffix("'s")] for w in words if w.removesuffix("'s") in _RELATIONS}
    if relations:
        return frozenset(relations)
    return frozenset({"self"}) if any(w in _FIRST_PERSON for w in words) else frozenset()


def _normalised(words: Sequence[str]) -> str:
    return " ".join(words)


def pair_signals(new_text: str, old_text: str, cosine: float) -> PairSignals:
    """Everything the decision looks at for one pair, from the two texts and their cosine."""
    new_text, old_text = statement(new_text), statement(old_text)
    new_words, old_words = _lower_words(new_text), _lower_words(old_text)
    new_values, old_values = values(new_text), values(old_text)
    new_subjects, old_subjects = _subjects(new_words), _subjects(old_words)
    return PairSignals(
        cosine=float(cosine),
        shared=content_words(new_text) & content_words(old_text),
        new_values=new_values - old_values,
        old_values=old_values - new_values,
        cues=change_cues(new_text) - change_cues(old_text),
        weak_cues=weak_cues(new_text) - weak_cues(old_text),
        words=max(len(new_words), len(old_words)),
        additive=any(w in _ADDITIVE for w in new_words),
        other_subject=bool(new_subjects) and bool(old_subjects) and not (new_subjects & old_subjects),
        same_text=_normalised(new_words) == _normalised(old_words),
    )


def decide(signals: PairSignals, config: SupersessionConfig) -> tuple[str, ...] | None:
    """The reasons the new memory replaces the old one, or None when it does not."""
    if signals.same_text or signals.additive or signals.other_subject:
        return None
    if len(signals.shared) < config.min_shared or signals.words > config.max_words:
        return None
    reasons: list[str] = []
    cues = signals.cues | (signals.weak_cues if signals.values_changed else frozenset())
    if cues and signals.cosine >= config.with_cue:
        reasons.append("says it changed: " + ", ".join(sorted(cues)))
    topics = sorted(w for w in signals.shared if w.startswith("@"))
    if signals.cues and signals.values_changed and topics and signals.cosine >= config.with_topic:
        reasons.append(f"same {topics[0][1:]}, says it changed: " + ", ".join(sorted(signals.cues)))
    if signals.values_changed and signals.cosine >= config.with_values:
        reasons.append(f"{', '.join(sorted(signals.old_values))} -> {', '.join(sorted(signals.new_values))}")
    return tuple(reasons) or None


def find_superseded(
    new_text: str,
    new_vector: np.ndarray,
    new_created_at: float,
    candidates: Iterable[Candidate],
    config: SupersessionConfig | None = None,
) -> Supersession | None:
    """The older memory among `candidates` that the new one replaces, if any: of those the
    rules accept, the closest in meaning. One at most, because a new fact states one value; a
    candidate saved at the same time or later is never replaced (it may be the newer fact)."""
    new = np.asarray(new_vector, dtype=np.float32)
    scored = (
        (c.id, c.text, float(np.dot(new, np.asarray(c.vector, dtype=np.float32))), c.created_at) for c in candidates
    )
    return best_superseded(new_text, new_created_at, scored, config)


def best_superseded(
    new_text: str,
    new_created_at: float,
    scored: Iterable[tuple[Hashable, str, float, float]],
    config: SupersessionConfig | None = None,
) -> Supersession | None:
    """`find_superseded` for candidates whose cosine is already known, as (id, text, cosine,
    created_at): the service's nearest-neighbour search hands them so, without their vectors."""
    config = config or SupersessionConfig()
    best: Supersession | None = None
    for candidate_id, text, cosine, created_at in scored:
        if created_at >= new_created_at:
            continue
        reasons = decide(pair_signals(new_text, text, cosine), config)
        if reasons is not None and (best is None or cosine > best.cosine):
            best = Supersession(candidate_id, cosine, reasons)
    return best
