"""Memories in other languages on the lexical side: no English stemming (migration 0010), and a
query drops only the function words of the language it is written in (stopwords.py)."""

import re

import pytest
import sqlalchemy as sa
from alembic import command
from bench.people import ensure_people

from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import alembic_config, upgrade
from jean_memory.memory.lexical import lexical_search, query_words
from jean_memory.memory.service import MemoryService
from jean_memory.memory.stopwords import guess_language

USER = "u1"


def _found(engine, query: str) -> list[str]:
    with engine.connect() as conn:
        pks = [pk for pk, _ in lexical_search(conn, USER, query, 10)]
        if not pks:
            return []
        rows = conn.execute(
            sa.text("SELECT pk, text FROM memories WHERE pk IN :pks").bindparams(sa.bindparam("pks", expanding=True)),
            {"pks": pks},
        ).all()
    text_of = dict(rows)
    return [text_of[pk] for pk in pks]


def test_words_of_other_languages_are_matched_as_written_not_by_english_stems(engine):
    """Porter cut Portuguese "ações" (shares) and "aço" (steel) to the same stem "aco", so a
    question about shares found the steel pan; English snowball on PostgreSQL likewise."""
    ensure_people(engine, USER)
    service = MemoryService(engine, None)
    steel = "A panela nova é de aço inox"
    shares = "Comprei ações da Petrobras em março"
    service.add(USER, steel)
    service.add(USER, shares)
    assert _found(engine, "ações") == [shares]
    assert _found(engine, "aço") == [steel]
    # Case and (on SQLite) diacritics still fold: a word is found however it is capitalised.
    assert _found(engine, "PETROBRAS") == [shares]


@pytest.mark.parametrize(
    ("query", "language", "english", "kept"),
    [
        ("What did Caroline do at the support group?", "en", True, ["caroline", "support", "group"]),
        # Another language keeps its function words (they measured better than dropping them).
        ("Wann hat Lena ihr Kind bekommen?", "de", False, ["wann", "hat", "lena", "ihr", "kind", "bekommen"]),
        ("¿Cuándo se casó mi hermano?", "es", False, ["cuándo", "se", "casó", "mi", "hermano"]),
        ("Quel est le code de la porte ?", "fr", False, ["quel", "est", "le", "code", "de", "la", "porte"]),
        ("Onde fica a senha do Wi-Fi?", "pt", False, ["onde", "fica", "a", "senha", "do", "wi", "fi"]),
        # No language shows: plain ASCII keywords are taken as English (as before 0010) ...
        ("favourite food", None, True, ["favourite", "food"]),
        # ... and anything with other letters is matched as written.
        ("ações", None, False, ["ações"]),
        # Only function words: they are all there is to match on, so they stay.
        ("what is that", "en", True, ["what", "is", "that"]),
    ],
)
def test_a_query_is_english_only_when_it_says_so(query, language, english, kept):
    words = [w.lower() for w in re.findall(r"\w+", query)]
    assert guess_language(words) == language
    assert query_words(query) == (kept, english)


def test_english_queries_keep_their_stemming(engine):
    """LoCoMo's questions are English and their words often differ in form from the turn's."""
    ensure_people(engine, USER)
    service = MemoryService(engine, None)
    painted = "Melanie painted a sunrise over the lake last summer"
    service.add(USER, painted)
    assert _found(engine, "What did Melanie paint?") == [painted]
    assert _found(engine, "paintings") == [painted]


def test_memories_saved_before_0010_are_found_after_it(database_url):
    """The migration rebuilds both full-text indexes from the stored memories."""
    engine = create_engine(database_url)
    config = alembic_config(engine)
    command.upgrade(config, "0009")
    ensure_people(engine, USER)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO memories (pk, id, user_id, text, content_hash, tags, created_at, updated_at, kind)"
                " VALUES (1, 'm1', :user_id, 'Unser Hund Bruno frisst am liebsten Karotten', 'h', '[]', 0, 0, 'memory')"
            ),
            {"user_id": USER},
        )
    upgrade(engine)
    assert _found(engine, "Karotten Bruno") == ["Unser Hund Bruno frisst am liebsten Karotten"]
    command.downgrade(config, "0009")
    assert _found(engine, "Karotten") == ["Unser Hund Bruno frisst am liebsten Karotten"]
    engine.dispose()
