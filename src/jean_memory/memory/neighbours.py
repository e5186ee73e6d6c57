"""Neighbours in time: the memory a person saved right before and right after another one.

Memories saved within minutes of each other are usually one conversation, and a question's
words very often match the turn that asked (or mentioned) something while the answer is the
turn saved next. So after fusion each of the best candidates passes a share of its score to its
neighbours. On LoCoMo (bench/locomo.py, 760 questions over five conversations) this lifts hybrid
hit@5 from 0.680 (z-score fusion alone) to 0.711, hit@10 from 0.754 to 0.792; choosing the
settings on four conversations and scoring on the fifth picks these same shares in every fold.

The memories saved two before and two after get a share too: an answer is often one turn
further on, and when a few clients save one conversation at once its turns arrive a little out
of order, so the true next turn may be stored second-next (issue 16 item 4; bench/README.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jean_memory.memory.fusion import best_first
from jean_memory.memory.owner import owner_column_sql
from jean_memory.memory.sqlite_direct import fetch

WINDOW_SECONDS = 3600.0  # saved more than an hour apart: not the same conversation
SPREAD_FROM = 20  # only the best candidates pass score on (one query, 80 index seeks)

# The outer query finds its rows by primary key and names the owner in the form that keeps
# SQLite on the rowid (owner.py); each subquery is one seek on the (user_id, created_at) index
# (ties in created_at, saves in the same instant, are ordered by key, so the answer is the same
# on every run and database)
# (a trashed memory is nobody's neighbour: the one beside it in time is).
_NEIGHBOURS_SQL = """
    SELECT c.pk AS pk,
      (SELECT p.pk FROM memories AS p
       WHERE p.user_id = c.user_id AND p.created_at < c.created_at AND p.created_at >= c.created_at - :window
         AND p.deleted_at IS NULL
       ORDER BY p.created_at DESC, p.pk DESC LIMIT 1) AS prev_pk,
      (SELECT p.pk FROM memories AS p
       WHERE p.user_id = c.user_id AND p.created_at < c.created_at AND p.created_at >= c.created_at - :window
         AND p.deleted_at IS NULL
       ORDER BY p.created_at DESC, p.pk DESC LIMIT 1 OFFSET 1) AS prev2_pk,
      (SELECT n.pk FROM memories AS n
       WHERE n.user_id = c.user_id AND n.created_at > c.created_at AND n.created_at <= c.created_at + :window
         AND n.deleted_at IS NULL
       ORDER BY n.created_at ASC, n.pk ASC LIMIT 1) AS next_pk,
      (SELECT n.pk FROM memories AS n
       WHERE n.user_id = c.user_id AND n.created_at > c.created_at AND n.created_at <= c.created_at + :window
         AND n.deleted_at IS NULL
       ORDER BY n.created_at ASC, n.pk ASC LIMIT 1 OFFSET 1) AS next2_pk
    FROM memories AS c
    WHERE c.pk IN :pks AND {owner} = :user_id AND c.superseded_by IS NULL
    """
# PostgreSQL: built once (a statement built per call costs SQLAlchemy time to compile and
# cache-key). SQLite: sent to the driver directly (sqlite_direct.py).
_NEIGHBOURS = sa.text(_NEIGHBOURS_SQL.format(owner=owner_column_sql("c.user_id", "postgresql"))).bindparams(
    sa.bindparam("pks", expanding=True)
)
SQLITE_NEIGHBOURS = _NEIGHBOURS_SQL.format(owner=owner_column_sql("c.user_id", "sqlite"))


Links = tuple[int | None, int | None, int | None, int | None]


def neighbours(conn: Connection, user_id: str, pks: Iterable[int]) -> dict[int, Links]:
    """pk -> (the pk the user saved just before it, the one just after, the one two before, the
    one two after), each None when there is none within WINDOW_SECONDS of it. Memories of other
    users are left out, and so never lead to anyone's neighbours; so is a memory another one has
    replaced (supersession.py): an outdated fact that matches the question well must not lift
    what was said around it above the current fact (it still can be a neighbour itself)."""
    wanted = list(dict.fromkeys(pks))
    if not wanted:
        return {}
    if conn.dialect.name == "sqlite":
        found = fetch(conn, SQLITE_NEIGHBOURS, {"window": WINDOW_SECONDS, "user_id": user_id}, wanted)
        return {pk: (prev_pk, next_pk, prev2_pk, next2_pk) for pk, prev_pk, prev2_pk, next_pk, next2_pk in found}
    rows = conn.execute(_NEIGHBOURS, {"pks": wanted, "window": WINDOW_SECONDS, "user_id": user_id})
    return {row.pk: (row.prev_pk, row.next_pk, row.prev2_pk, row.next2_pk) for row in rows}


def pass_to_neighbours(
    scores: dict[int, float],
    links: dict[int, Links],
    next_share: float,
    prev_share: float,
    next2_share: float = 0.0,
    prev2_share: float = 0.0,
) -> list[tuple[int, float]]:
    """The ranking after each of the SPREAD_FROM best of `scores` (all >= 0) passed `next_share`
    of its score to the memory saved right after it, `prev_share` to the one right before, and
    `next2_share` / `prev2_share` to the ones two after / two before.
    Only a neighbour that is itself a candidate (in `scores`) gains: one with nothing in common
    with the question is more often noise than the answer."""
    final = dict(scores)
    for pk, score in best_first(scores)[:SPREAD_FROM]:
        prev_pk, next_pk, prev2_pk, next2_pk = links.get(pk, (None, None, None, None))
        shares = ((next_pk, next_share), (prev_pk, prev_share), (next2_pk, next2_share), (prev2_pk, prev2_share))
        for other, share in shares:
            if other is not None and share and other in scores:
                final[other] += share * score
    return best_first(final)
