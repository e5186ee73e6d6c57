"""The local model is a setting (JEAN_MEMORY_LOCAL_MODEL): the multilingual models find a memory
from a question in another language, and switching models carries the stored memories over
through the background re-embedding, with the real models and a real database."""

from __future__ import annotations

import anyio
import numpy as np
import pytest
import sqlalchemy as sa
from bench.people import ensure_people

from jean_memory.app import build_embedder
from jean_memory.config import ConfigError, load_settings
from jean_memory.db.tables import memory_vectors
from jean_memory.memory.concat_embedder import ConcatEmbedder
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.jobs import Worker
from jean_memory.memory.service import MemoryService
from jean_memory.memory.use_embedder import USE_MODEL_NAME, UseMultilingualEmbedder

USER = "polyglot"
GERMAN = [
    "Meine Schwester Lena hat im März ihr zweites Kind bekommen, einen Jungen namens Felix.",
    "Ich bin allergisch gegen Haselnüsse, schon kleine Mengen lösen bei mir Atemnot aus.",
    "Unser Hund Bruno ist ein siebenjähriger Berner Sennenhund und frisst am liebsten Karotten.",
    "Seit Oktober arbeite ich als Projektleiterin bei einer Solarfirma in Freiburg.",
    "Die Steuererklärung für 2025 muss ich bis Ende Juli beim Finanzamt abgeben.",
    "Im Sommerurlaub waren wir zwei Wochen in Norwegen und sind mit dem Kajak durch die Fjorde gepaddelt.",
    "Mein Lieblingsessen ist die Kartoffelsuppe meiner Oma mit geräucherten Würstchen.",
    "Ich lerne seit einem Jahr Cello und nehme jeden Donnerstagabend Unterricht bei Frau Keller.",
    "Mein Vater hatte im Januar eine Knieoperation und geht jetzt zur Physiotherapie.",
    "Die WLAN-Zugangsdaten für die Ferienwohnung am Bodensee stehen auf dem Zettel im Küchenschrank.",
]
# English questions the English model ranks third (bench/multilingual.json has them all).
QUESTIONS = {"What breed is our dog?": GERMAN[2], "Where did we go on summer holiday?": GERMAN[5]}


@pytest.fixture
def engine(engine):
    ensure_people(engine, USER)
    return engine


def _env(**values: str) -> dict[str, str]:
    return {"JWT_SECRET_KEY": "x" * 64, **values}


def test_the_setting_chooses_the_model_and_refuses_an_unknown_one():
    assert isinstance(build_embedder(load_settings(env=_env())), LocalOnnxEmbedder)  # the default
    chosen = build_embedder(load_settings(env=_env(JEAN_MEMORY_LOCAL_MODEL="use-multilingual")))
    assert isinstance(chosen, UseMultilingualEmbedder)
    both = build_embedder(load_settings(env=_env(JEAN_MEMORY_LOCAL_MODEL="minilm+use")))
    assert isinstance(both, ConcatEmbedder)
    assert both.dimensions == 384 + 512
    with pytest.raises(ConfigError, match="JEAN_MEMORY_LOCAL_MODEL must be one of minilm, use-multilingual"):
        load_settings(env=_env(JEAN_MEMORY_LOCAL_MODEL="bert"))


def test_a_memory_in_german_is_found_by_an_english_question(engine):
    service = MemoryService(engine, UseMultilingualEmbedder())
    for text in GERMAN:
        service.add(USER, text)
    for question, answer in QUESTIONS.items():
        assert service.search(USER, question, limit=1)[0].text == answer


def test_a_vector_depends_on_its_text_alone_and_has_unit_length():
    embedder = UseMultilingualEmbedder()
    alone = embedder.embed([GERMAN[2]])[0]
    among = embedder.embed([*GERMAN])[2]
    assert np.allclose(alone, among, atol=1e-6)
    assert embedder.embed_query("What breed is our dog?").shape == (512,)
    assert abs(float(np.linalg.norm(alone)) - 1.0) < 1e-5
    assert embedder.embed([]).shape == (0, 512)
    assert embedder.embed([""]).shape == (1, 512)  # a blank text still gets a vector


def test_switching_to_the_multilingual_model_re_embeds_what_was_saved(engine):
    """Saved under the English model, then the server restarts with minilm+use: the background
    job gives every memory a vector of the new model, and the English question finds it."""
    before = MemoryService(engine, LocalOnnxEmbedder())
    for text in GERMAN:
        before.add(USER, text)

    embedder = build_embedder(load_settings(env=_env(JEAN_MEMORY_LOCAL_MODEL="minilm+use")))
    after = MemoryService(engine, embedder)
    assert Indexer(after).queue_reembedding() == len(GERMAN)
    anyio.run(Worker(engine, Indexer(after).job_handlers()).drain, 60)
    assert Indexer(after).queue_reembedding() == 0
    with engine.connect() as conn:
        models = conn.execute(sa.select(memory_vectors.c.model).distinct()).scalars().all()
    assert models == [embedder.model_name]
    assert USE_MODEL_NAME in embedder.model_name
    for question, answer in QUESTIONS.items():
        assert after.search(USER, question, limit=1)[0].text == answer
