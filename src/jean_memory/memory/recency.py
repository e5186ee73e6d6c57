"""The newer of two memories on the same subject comes first (issue 15, item 4, at read time).

The supersession detector (supersession.py) marks an older memory replaced only when it is
sure, because a mark hides a true fact from the profile. Many real updates share too little
wording for it ("Where do I work?" finds "I'm a software engineer at Spotify" before "I switched
jobs, I'm at Stripe now"), and then both reach the assistant as equal truths. This rule hides
nothing, so it can fire far more often at little cost when wrong: among the best candidates of
a search, when two are close (cosine at least `NEWER_FIRST_COSINE`, below the near-duplicate
cosine at which a save merges instead) and the older ranks above the newer, the newer moves
directly above the older; everything else keeps its order. In `jean_memory`'s context an older
memory with such a newer neighbour in the same context is shown as "earlier: ...", still there.

The threshold is chosen by leave-one-scenario-out on bench/knowledge_updates.json (updates
against near misses: bench/recency_threshold.py); LoCoMo measures what it costs elsewhere
(bench/README.md, "recency").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jean_memory.db.tables import memories, memory_vectors
from jean_memory.memory.owner import owned_by
from jean_memory.memory.records import Memory
from jean_memory.memory.sqlite_direct import dated_rows
from jean_memory.memory.supersession import SupersessionConfig

#: Chosen by leave-one-out on the development set (bench/recency_threshold.py).
NEWER_FIRST_COSINE = 0.525
#: At and above this a save merges into the existing memory (service.NEAR_DUPLICATE): not a pair.
NEAR_DUPLICATE = 0.95
#: The newer must be saved at least a day later: turns of one conversation are not updates of
#: each other (LoCoMo, bench/README.md "recency": without the restrictions the rule reorders most
#: of a chat's results).
MIN_GAP_SECONDS = 86400.0
#: Only short statements take part, as in the detector (SupersessionConfig.max_words, chosen
#: there): a long memory holds several facts or is conversation, and a question states none.
MAX_WORDS = SupersessionConfig().max_words
#: Only the best this many of a ranking are reordered (one small query for their vectors).
WINDOW = 10

Dated = tuple[float, np.ndarray]  # created_at, unit vector


def takes_part(text: str) -> bool:
    """A short statement: at most MAX_WORDS words, not a question."""
    return len(text.split()) <= MAX_WORDS and not text.rstrip().endswith("?")


def is_close(a: np.ndarray, b: np.ndarray, threshold: float = NEWER_FIRST_COSINE) -> bool:
    return threshold <= float(np.dot(a, b)) < NEAR_DUPLICATE


def is_newer(later: float, earlier: float, gap: float = MIN_GAP_SECONDS) -> bool:
    return later > earlier and later - earlier >= gap


def newer_first(
    order: Sequence[int], dated: dict[int, Dated], threshold: float = NEWER_FIRST_COSINE, gap: float = MIN_GAP_SECONDS
) -> list[int]:
    """`order` (keys, best first) with each key moved directly above the best-ranked older key
    it is close to; keys without a vector stay where they are. One pass in rank order, so a
    chain of three versions ends newest first."""
    result: list[int] = []
    for key in order:
        mine = dated.get(key)
        place = None
        if mine is not None:
            for index, other in enumerate(result):
                theirs = dated.get(other)
                if theirs is not None and is_newer(mine[0], theirs[0], gap) and is_close(mine[1], theirs[1], threshold):
                    place = index
                    break
        if place is None:
            result.append(key)
        else:
            result.insert(place, key)
    return result


def newer_of(
    keys: Iterable[str], dated: dict[str, Dated], threshold: float = NEWER_FIRST_COSINE, gap: float = MIN_GAP_SECONDS
) -> dict[str, str]:
    """older key -> the newest key close to it among `keys` (for the "earlier" mark)."""
    present = [k for k in dict.fromkeys(keys) if k in dated]
    found: dict[str, str] = {}
    for old in present:
        newer = [
            k
            for k in present
            if is_newer(dated[k][0], dated[old][0], gap) and is_close(dated[k][1], dated[old][1], threshold)
        ]
        if newer:
            found[old] = max(newer, key=lambda k: dated[k][0])
    return found


# Built once: run on every search, and a statement built per call costs SQLAlchemy a compile and
# a cache key each time.
_DATED_BY_PK = (
    sa.select(memories.c.pk, memories.c.text, memories.c.created_at, memory_vectors.c.vector)
    .join(memory_vectors, memory_vectors.c.memory_pk == memories.c.pk)
    .where(
        owned_by(memories.c.user_id, sa.bindparam("user_id")),
        memories.c.pk.in_(sa.bindparam("pks", expanding=True)),
        memory_vectors.c.model == sa.bindparam("model"),
    )
)


def dated_by_pk(conn: Connection, user_id: str, model: str, pks: Sequence[int]) -> dict[int, Dated]:
    """pk -> (created_at, vector) of the person's memories among `pks` that have a vector."""
    if not pks:
        return {}
    if conn.dialect.name == "sqlite":  # the same statement, straight to the driver (sqlite_direct.py)
        rows = dated_rows(conn, user_id, model, pks)
    else:
        rows = conn.execute(_DATED_BY_PK, {"user_id": user_id, "pks": list(pks), "model": model}).all()
    return {
        pk: (created, np.asarray(vector, dtype=np.float32)) for pk, text, created, vector in rows if takes_part(text)
    }


def earlier_marks(conn: Connection, user_id: str, model: str, shown: Sequence[Memory]) -> dict[str, Memory]:
    """memory id -> the newer memory shown in the same context on the same subject, for each
    shown memory that has one (and is not already marked replaced)."""
    by_id = {m.id: m for m in shown if takes_part(m.text)}
    if len(by_id) < 2:
        return {}
    rows = conn.execute(
        sa.select(memories.c.id, memories.c.created_at, memory_vectors.c.vector)
        .join(memory_vectors, memory_vectors.c.memory_pk == memories.c.pk)
        .where(owned_by(memories.c.user_id, user_id), memories.c.id.in_(list(by_id)), memory_vectors.c.model == model)
    ).all()
    dated = {row.id: (row.created_at, np.asarray(row.vector, dtype=np.float32)) for row in rows}
    pairs = newer_of(by_id, dated)
    return {old: by_id[new] for old, new in pairs.items() if by_id[old].superseded_by is None}
