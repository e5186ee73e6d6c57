"""The memory service on a real database with the real local model: hybrid recall, dedupe,
documents, the vector cache across processes, and lexical-only mode."""

import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio
import numpy as np
import pytest
import sqlalchemy as sa
from bench.people import ensure_people

from jean_memory import clock
from jean_memory.db.tables import memories
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.fusion import best_first, z_fusion
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.jobs import Worker, pending_count
from jean_memory.memory.neighbours import SPREAD_FROM, neighbours, pass_to_neighbours
from jean_memory.memory.recency import _DATED_BY_PK
from jean_memory.memory.records import AddResult, MemoryInputError
from jean_memory.memory.retrieval import Retriever, SearchConfig
from jean_memory.memory.service import MemoryService, rows_by_pk
from jean_memory.memory.sqlite_direct import dated_rows, hit_rows
from jean_memory.memory.triage import facts_worth_keeping

USER = "u1"
DISTRACTORS = [
    "The quarterly tax report is due in April",
    "I prefer window seats on long flights",
    "My sister Ana lives in Lisbon",
    "I am learning to play the cello",
    "We bought a new sofa last weekend",
]


@pytest.fixture
def engine(engine):
    """The shared fixture's database, with accounts for the people these tests save for."""
    ensure_people(engine, USER, "alice", "bob")
    return engine


@pytest.fixture
def service(engine) -> MemoryService:
    return MemoryService(engine, LocalOnnxEmbedder())


def ranker(service: MemoryService) -> Retriever:
    """The ranking `service.search` uses, with its vector cache, for `mode` and raw scores."""
    return Retriever(service.engine, service.embedder, vectors=service.vectors)


def run_jobs(service: MemoryService, engine) -> None:
    anyio.run(Worker(engine, Indexer(service).job_handlers()).drain, 60)
    assert pending_count(engine) == 0


def test_paraphrase_is_found_by_meaning_where_bm25_finds_nothing(service):
    for text in DISTRACTORS:
        service.add(USER, text)
    dog = service.add(USER, "I adopted a beagle, Max").saved[0]
    query = "What's my dog called?"
    lexical = ranker(service).rank(USER, query, 10, mode="lexical")
    assert lexical == []  # no shared word: BM25 alone cannot find it
    assert service.search(USER, query, limit=3)[0].id == dog.id


def test_exact_duplicate_is_not_stored_twice(service):
    first = service.add(USER, "My favourite food is spicy Thai green curry.").saved[0]
    again = service.add(USER, "my favourite food is   SPICY thai green curry.", tags=["food"])
    assert again.saved == [] and again.similar[0].id == first.id and again.similar[0].tags == ["food"]
    assert service.count(USER) == 1


def test_near_duplicate_updates_the_existing_memory(service):
    first = service.add(USER, "My favourite food is spicy Thai green curry.").saved[0]
    updated = service.add(USER, "My favorite food is spicy Thai green curry.")  # cosine 0.99
    assert [m.id for m in updated.saved] == [first.id]
    assert service.get(USER, first.id).text == "My favorite food is spicy Thai green curry."
    assert service.count(USER) == 1


def test_related_memory_is_stored_and_the_similar_one_named(service):
    first = service.add(USER, "My favourite food is spicy Thai green curry.").saved[0]
    related = service.add(USER, "I really enjoy Thai food, especially green curry.")  # cosine 0.89
    assert related.saved and related.saved[0].id != first.id
    assert [m.id for m in related.similar] == [first.id]
    assert 0.80 <= related.similar[0].score < 0.95
    unrelated = service.add(USER, "My favourite drink is iced coffee.")  # cosine 0.43
    assert unrelated.similar == []
    assert service.count(USER) == 3


def test_document_is_chunked_and_found_by_a_phrase_from_its_middle(service, engine):
    sections = [
        f"## Part {i}\n\n" + " ".join(f"Filler sentence {i}.{j} about routine matters." for j in range(40))
        for i in range(6)
    ]
    sections[3] += "\n\nThe spare key is hidden under the blue flowerpot by the garage."
    document_id = service.store_document(USER, "House notes", "# House\n\n" + "\n\n".join(sections))
    assert service.document_status(USER, document_id) == ("pending", 0)
    run_jobs(service, engine)
    status, chunks = service.document_status(USER, document_id)
    assert status == "ready" and chunks > 3
    hit = service.search(USER, "where is the spare key hidden", limit=3)[0]
    assert "blue flowerpot" in hit.text and hit.title == "House notes" and hit.kind == "chunk"
    assert service.list(USER, 100)[0] == []  # chunks are not listed as facts


def test_indexing_a_document_twice_leaves_one_set_of_chunks(service, engine):
    document_id = service.store_document(USER, "Notes", "Alpha paragraph.\n\n" * 300)
    run_jobs(service, engine)
    before = service.count(USER)
    Indexer(service).index_document_job(USER, {"document_id": document_id})  # a retried job after a crash
    assert service.count(USER) == before


def test_headings_are_read_in_linear_time():
    """A heading line with a long run of spaces took the old pattern cubic time (3 KB: 30 s,
    holding the GIL, so the whole server stopped answering). Run in a child process: a stuck
    regex cannot be interrupted from another thread."""
    from jean_memory.memory.chunking import chunk_text

    script = "from jean_memory.memory.chunking import chunk_text; chunk_text('# a' + ' ' * 20000 + 'b')"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert chunk_text("## Plans ##\nMove in May.\n\n#hashtag is not a heading\n### Costs\nTwo.") == [
        "Plans: Move in May. #hashtag is not a heading",
        "Costs: Two.",
    ]


def test_cache_sees_a_write_from_another_process(service, database_url):
    service.add(USER, "I play tennis on Tuesdays")
    assert service.search(USER, "hobby sport", limit=5)  # the matrix is now cached in this process
    script = textwrap.dedent(f"""
        from jean_memory.db.engine import create_engine
        from jean_memory.memory.embeddings import LocalOnnxEmbedder
        from jean_memory.memory.service import MemoryService
        MemoryService(create_engine({database_url!r}), LocalOnnxEmbedder()).add({USER!r}, "I adopted a beagle, Max")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    hits = service.search(USER, "What's my dog called?", limit=1)
    assert hits[0].text == "I adopted a beagle, Max"


def test_lexical_only_mode_works_without_a_model(engine):
    service = MemoryService(engine, None)
    service.add(USER, "I adopted a beagle, Max")
    service.add(USER, "The quarterly tax report is due in April")
    assert [m.text for m in service.search(USER, "beagle", limit=5)] == ["I adopted a beagle, Max"]
    assert service.search(USER, "What's my dog called?", limit=5) == []
    assert Indexer(service).reindex() == 0


def test_reindex_embeds_what_was_saved_without_a_model(engine):
    MemoryService(engine, None).add(USER, "I adopted a beagle, Max")
    seen: list[tuple[int, int]] = []
    service = MemoryService(engine, LocalOnnxEmbedder())
    assert Indexer(service).reindex(lambda done, total: seen.append((done, total))) == 1
    assert seen[-1] == (1, 1)
    assert service.search(USER, "What's my dog called?", limit=1)[0].text == "I adopted a beagle, Max"
    assert Indexer(service).reindex() == 0


def test_users_never_see_each_others_vectors_or_documents(service, engine):
    service.add("alice", "I adopted a beagle, Max")
    service.store_document("alice", "Diary", "The spare key is under the flowerpot.")
    run_jobs(service, engine)
    assert service.search("bob", "What's my dog called?", limit=10) == []
    assert service.search("bob", "spare key flowerpot", limit=10) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.store_document(USER, "", "text"), "title is empty"),
        (lambda s: s.store_document(USER, "T", "  "), "content is empty"),
        (lambda s: s.store_document(USER, "T", "x" * (5 * 1024 * 1024 + 1)), "at most 5 MB"),
        (lambda s: s.store_document(USER, "T", "x", document_type="exe"), "document_type must be one of"),
        (lambda s: s.add(USER, "x" * 1_000_000), "store_document"),
        (lambda s: s.search(USER, "x", limit=10_000), "limit must be"),
        # PostgreSQL cannot store NUL and the column holds 2,048 characters: these were database
        # errors there ("Error executing tool") and silently stored on SQLite.
        (lambda s: s.add(USER, "I like\x00 tea"), "NUL character"),
        (lambda s: s.store_document(USER, "T", "body\x00"), "content contains a NUL"),
        (lambda s: s.store_document(USER, "T\x00", "body"), "title contains a NUL"),
        (lambda s: s.store_document(USER, "T", "body", source_url="https://a.example/" + "x" * 2048), "source_url"),
    ],
)
def test_bad_input_says_what_to_change(service, engine, call, message):
    with pytest.raises(MemoryInputError, match=message):
        call(service)
    with engine.connect() as conn:  # and nothing was written
        assert conn.execute(sa.select(sa.func.count()).select_from(memories)).scalar_one() == 0


def test_a_nul_in_a_message_does_not_stop_its_facts_being_saved():
    assert facts_worth_keeping("I just moved to Berlin\x00 and I work as a data engineer.") == [
        "I just moved to Berlin and I work as a data engineer."
    ]


def test_identical_saves_at_the_same_moment_are_stored_once(service):
    """The exact-duplicate check used to run before the write transaction: of 8 identical
    add_memories at once, 2 were stored."""
    start = threading.Barrier(8)

    def save(_: int) -> AddResult:
        start.wait()
        return service.add(USER, "I keep bees on the roof", ["hobby"])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(save, range(8)))
    assert service.count(USER) == 1
    saved = [r.saved[0].id for r in results if r.saved]
    merged = [r.similar[0].id for r in results if not r.saved]
    assert len(saved) == 1 and set(merged) == set(saved)


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        ("I just moved to Berlin and I work as a data engineer.", 1),
        ("Hi!", 0),
        ("What's the weather like tomorrow?", 0),
        ("Can you write a poem about autumn?", 0),
        ("Remember that my daughter's birthday is on 3 May.", 1),
        ("Thanks. My wife is allergic to shellfish. Please suggest a dinner recipe.", 1),
    ],
)
def test_triage_keeps_statements_about_the_person_only(message, kept):
    assert len(facts_worth_keeping(message)) == kept


def test_texts_whose_numbers_differ_are_never_merged(service):
    first = service.add(USER, "The dentist appointment is on 12 March at 3 pm.").saved[0]
    second = service.add(USER, "The dentist appointment is on 14 March at 5 pm.")
    assert second.saved and second.saved[0].id != first.id
    assert [m.id for m in second.similar] == [first.id]  # named, so the assistant can fix or delete
    assert service.count(USER) == 2


def test_patched_cache_answers_like_a_fresh_load(service, engine):
    """Own writes patch the cached matrix in place (appends, rewordings, deletes): the answers must
    equal those of a cache loaded from the database."""
    from jean_memory.memory.vectors import VectorCache

    ids = [service.add(USER, f"{word} is something I care about a lot").saved[0].id for word in DISTRACTORS]
    query = service.embedder.embed_query("what do I care about")
    model = service.embedder.model_name
    service.search(USER, "care", limit=3)  # cache loaded
    for i in range(20):  # appends past the first capacity
        service.add(USER, f"Fact {i}: {' '.join(DISTRACTORS[i % 5].split()[::-1])} in year {2000 + i}")
    service.add(USER, "My sister Ana lives in Lisbon, Portugal")  # rewording of a distractor: same row
    service.delete(USER, ids[0])
    patched = service.vectors.nearest(USER, model, query, 50)
    fresh = VectorCache(engine).nearest(USER, model, query, 50)
    assert [pk for pk, _ in patched] == [pk for pk, _ in fresh]
    assert [round(s, 5) for _, s in patched] == [round(s, 5) for _, s in fresh]


def test_a_users_first_writes_on_two_connections_at_once(engine):
    """Two instances saving a user's first memories at the same moment: the version counter
    must count both (it once raised a unique violation on PostgreSQL and lost the save)."""
    import threading

    from jean_memory.memory.vectors import bump_version, read_version
    from tests.support.locks import signal_statements, wait_until_blocked

    first_inside, second_started = threading.Event(), threading.Event()
    versions: list[int] = []

    def first() -> None:
        with engine.begin() as conn:
            versions.append(bump_version(conn, "newcomer"))
            first_inside.set()
            wait_until_blocked(engine, second_started)  # hold the transaction open until then

    def second() -> None:
        first_inside.wait(10)
        with engine.begin() as conn:
            signal_statements(conn, second_started)
            versions.append(bump_version(conn, "newcomer"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(versions) == [1, 2]
    with engine.connect() as conn:
        assert read_version(conn, "newcomer") == 2


def insert_filler_memories(engine, model: str, count: int, seed: int) -> None:
    """`count` memories of USER with random unit vectors, written in bulk (saving them one by one
    through the service would embed each): what makes a person "large" for the search paths."""
    import numpy as np

    from jean_memory.db.tables import memory_vectors
    from jean_memory.memory.vectors import bump_version

    filler = np.random.default_rng(seed).standard_normal((count, 384)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    with engine.begin() as conn:
        conn.execute(
            memories.insert(),
            [
                dict(pk=pk, id=f"f{pk}", user_id=USER, text=f"filler note {pk} about nothing", content_hash=f"h{pk}",
                     tags=[], created_at=0.0, updated_at=0.0, kind="memory")
                for pk in range(1, count + 1)
            ],
        )  # fmt: skip
        conn.execute(
            memory_vectors.insert(),
            [dict(memory_pk=pk, user_id=USER, model=model, vector=v) for pk, v in enumerate(filler, start=1)],
        )
        if engine.dialect.name == "postgresql":  # rows inserted with explicit keys: move the sequence on
            conn.execute(sa.text("SELECT setval('memories_pk_seq', (SELECT max(pk) FROM memories))"))
        bump_version(conn, USER)


def test_a_user_with_many_memories_is_searched_with_bm25_beside_the_vector_scan(service, engine):
    """Above LARGE_USER_VECTORS BM25 runs in another thread while the vectors are scanned: both
    rankings must still reach the result, and the answer must equal the one-thread ranking."""
    from jean_memory.memory.lexical import lexical_search
    from jean_memory.memory.vectors import LARGE_USER_VECTORS

    model = service.embedder.model_name
    insert_filler_memories(engine, model, LARGE_USER_VECTORS + 500, seed=7)
    dog = service.add(USER, "I adopted a beagle, Max").saved[0]
    cello = service.add(USER, "I am learning to play the cello").saved[0]

    service.search(USER, "warm the cache", limit=1)
    assert engine.dialect.name == "postgresql" or service.vectors.is_large(USER)
    assert service.search(USER, "What's my dog called?", limit=3)[0].id == dog.id  # by meaning
    assert service.search(USER, "cello", limit=3)[0].id == cello.id  # by word

    question = "the beagle I adopted"
    with engine.connect() as conn:
        lexical = lexical_search(conn, USER, question, 50)
    vector = service.vectors.nearest(USER, model, service.embedder.embed_query(question), 50)
    settings = SearchConfig()
    fused = z_fusion(lexical, vector, settings.lexical_weight)
    with engine.connect() as conn:
        links = neighbours(conn, USER, [pk for pk, _ in best_first(fused)[:SPREAD_FROM]])
    one_thread = pass_to_neighbours(fused, links, settings.next_share, settings.prev_share)
    assert ranker(service).rank(USER, question, 50) == one_thread


def test_fusion_keeps_a_clear_lead_that_rank_fusion_would_flatten():
    """BM25's best is barely ahead of the rest (one common word); cosine's best is far ahead of
    everything. Reciprocal rank fusion (k=10) sees only ranks: "weak" is 1st lexically and 3rd
    by cosine, "strong" 1st by cosine and 5th lexically, so 1/11 + 1/13 beats 1/11 + 1/15 and
    the weak match wins. Score fusion keeps the size of each lead and puts the strong one first."""
    weak, strong, others = 1, 2, list(range(10, 18))
    lexical = [(weak, 5.2), (others[0], 5.1), (others[1], 5.0), (others[2], 4.9), (strong, 4.8)]
    lexical += [(pk, 4.7 - 0.1 * i) for i, pk in enumerate(others[3:])]
    vector = [(strong, 0.82), (others[0], 0.31), (weak, 0.30)] + [
        (pk, 0.29 - 0.01 * i) for i, pk in enumerate(others[1:])
    ]
    ranked = best_first(z_fusion(lexical, vector, 0.5))
    assert ranked[0][0] == strong
    assert min(score for _, score in ranked) == 0.0  # shifted: the neighbours' shares need scores >= 0


def test_fusion_of_one_list_is_that_list():
    lexical = [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert [pk for pk, _ in best_first(z_fusion(lexical, [], 0.5))] == [1, 2, 3]
    assert [pk for pk, _ in best_first(z_fusion([], lexical, 0.5))] == [1, 2, 3]
    assert z_fusion([], [], 0.5) == {}


def at(seconds: float) -> None:
    """Set the server clock `seconds` from now (so `created_at` is when the memory was said)."""
    clock.reset()
    clock.advance(seconds)


def pk_of(engine, memory_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(memories.c.pk).where(memories.c.id == memory_id)).scalar_one()


PUPPY_QUESTION = "What is the name of Melanie's puppy?"
EARLIER = [
    "Caroline: I went hiking in the hills on Saturday",
    "Caroline: my neighbour's dog barks all night long",
    "Caroline: the vet said the cat needs a new diet",
    "Caroline: I painted the garden fence green",
    "Caroline: we adopted two goldfish for the kids",
    "Caroline: Melanie's puppy chewed my new shoes",
    "Caroline: Melanie said her puppy sleeps all day",
    "Caroline: the new puppy food is expensive",
]
LATER = [
    "Caroline: my sister called from Lisbon yesterday",
    "Caroline: the puppy classes at the park start in June",
    "Caroline: I should buy a bigger car for the dog crate",
]


def test_the_answer_saved_right_after_the_best_match_is_found(service, engine):
    """The question's words match the turn that asked it; the answer, saved 30 s later, shares
    none of them and ranks 7th on fusion alone. Its neighbour passes it enough to rise."""
    for i, text in enumerate(EARLIER):  # hours apart: not the same conversation
        at(-7200 * (len(EARLIER) - i))
        service.add(USER, text)
    at(0)
    asked = service.add(USER, "Caroline: Melanie, what name did you give your new puppy?").saved[0]
    at(30)
    answer = service.add(USER, "Biscuit! My daughter picked it.").saved[0]
    for i, text in enumerate(LATER):
        at(7200 * (i + 1))
        service.add(USER, text)
    clock.reset()

    with engine.connect() as conn:
        assert neighbours(conn, USER, [pk_of(engine, asked.id)]) == {
            pk_of(engine, asked.id): (None, pk_of(engine, answer.id), None, None)
        }
    assert answer.id in [m.id for m in service.search(USER, PUPPY_QUESTION, limit=3)]
    alone = MemoryService(engine, service.embedder, NO_NEIGHBOURS)
    assert answer.id not in [m.id for m in alone.search(USER, PUPPY_QUESTION, limit=5)]


NO_NEIGHBOURS = SearchConfig(next_share=0.0, prev_share=0.0, next2_share=0.0, prev2_share=0.0)


def test_the_answer_saved_two_after_the_best_match_is_found(service, engine):
    """A remark saved between the question and its answer (or the answer arriving one place
    late, from a second client): the turn two after the best match gets its share too."""
    for i, text in enumerate(EARLIER):
        at(-7200 * (len(EARLIER) - i))
        service.add(USER, text)
    at(0)
    asked = service.add(USER, "Caroline: Melanie, what name did you give your new puppy?").saved[0]
    at(30)
    between = service.add(USER, "Melanie: Hold on, the kettle is boiling over.").saved[0]
    at(60)
    answer = service.add(USER, "Biscuit! My daughter picked it.").saved[0]
    for i, text in enumerate(LATER):
        at(7200 * (i + 1))
        service.add(USER, text)
    clock.reset()

    asked_pk, between_pk, answer_pk = (pk_of(engine, m.id) for m in (asked, between, answer))
    with engine.connect() as conn:
        assert neighbours(conn, USER, [asked_pk]) == {asked_pk: (None, between_pk, None, answer_pk)}
    # The best match passes a quarter of its score to the turn two after it, which then ranks
    # above a memory that matched the question a little better on its own.
    fused = {asked_pk: 10.0, between_pk: 0.5, answer_pk: 1.0, 999: 2.0}
    links = {asked_pk: (None, between_pk, None, answer_pk)}
    ranked = [pk for pk, _ in pass_to_neighbours(fused, links, 0.5, 0.25, 0.25, 0.25)]
    assert ranked.index(answer_pk) < ranked.index(999)
    ranked = [pk for pk, _ in pass_to_neighbours(fused, links, 0.5, 0.25)]  # nearest only: as before
    assert ranked.index(answer_pk) > ranked.index(999)
    assert SearchConfig().next2_share > 0


def test_another_users_memory_is_never_a_neighbour(service, engine):
    """Bob saves something between Alice's question and her answer: Alice's neighbour is still
    her own answer, Bob's memory never reaches her results, and asking for the neighbours of
    Bob's memory as Alice gives nothing."""
    at(0)
    asked = service.add("alice", "Caroline: Melanie, what name did you give your new puppy?").saved[0]
    at(10)
    bobs = service.add("bob", "Biscuit! My daughter picked it.").saved[0]
    at(20)
    answer = service.add("alice", "Pepper, because of the black spot on her nose.").saved[0]
    at(40)
    service.add("bob", "My puppy Rex is called after my grandfather.")
    clock.reset()

    asked_pk, answer_pk, bobs_pk = (pk_of(engine, m.id) for m in (asked, answer, bobs))
    with engine.connect() as conn:
        assert neighbours(conn, "alice", [asked_pk, answer_pk]) == {
            asked_pk: (None, answer_pk, None, None),
            answer_pk: (asked_pk, None, None, None),
        }
        assert neighbours(conn, "alice", [bobs_pk]) == {}
    found = service.search("alice", PUPPY_QUESTION, limit=10)
    assert {m.id for m in found} == {asked.id, answer.id}
    assert bobs_pk not in {pk for pk, _ in ranker(service).rank("alice", PUPPY_QUESTION, 50)}


def test_postgresql_builds_the_vector_index_outside_requests(service, engine, monkeypatch):
    """A search never builds the HNSW index (a plain CREATE INDEX blocked every insert for
    minutes at 100k vectors); until the maintenance task has built it, a person past the
    exact-search limit is searched exactly, and afterwards through the index, finding the same.
    The limit is lowered to 300 here: the paths are the same, and 20,200 rows took 16 s."""
    from jean_memory.memory import pg_vectors

    model = service.embedder.model_name
    if engine.dialect.name != "postgresql":
        assert Indexer(service).build_vector_index() is False  # SQLite: the in-process matrix, nothing to build
        return
    monkeypatch.setattr(pg_vectors, "EXACT_SEARCH_MAX_VECTORS", 300)
    insert_filler_memories(engine, model, pg_vectors.EXACT_SEARCH_MAX_VECTORS + 200, seed=11)
    dog = service.add(USER, "I adopted a beagle, Max").saved[0]

    def index_exists() -> bool:
        with engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM pg_indexes WHERE indexname = :n")
            return conn.execute(query, {"n": pg_vectors.hnsw_index_name(model)}).scalar_one() == 1

    assert service.search(USER, "What's my dog called?", limit=3)[0].id == dog.id
    assert not index_exists()  # the search did not build it
    assert Indexer(service).build_vector_index() is True
    assert index_exists() and Indexer(service).build_vector_index() is False  # built once
    sent: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "<=>" in statement:
            sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        assert service.search(USER, "What's my dog called?", limit=3)[0].id == dog.id
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    # At 501 vectors the planner rightly scans; with scans and sorts ruled out, the statement
    # the search sent can be served by the HNSW index (its predicate and cast expression match).
    statement, parameters = sent[-1]
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE memory_vectors")
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql("SET LOCAL enable_sort = off")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert pg_vectors.hnsw_index_name(model) in plan, plan


def test_lookups_by_primary_key_name_the_owner_in_the_query(service, engine):
    """DESIGN.md (Isolation): every memory query names `user_id` in its WHERE, a lookup by
    primary key too. Alice's keys asked for as Bob find nothing: neither her rows nor her
    neighbours, whatever the caller does with the result."""
    at(0)
    first = service.add("alice", "I keep bees on the roof").saved[0]
    at(10)
    second = service.add("alice", "The honey harvest is in August").saved[0]
    clock.reset()
    pks = [pk_of(engine, first.id), pk_of(engine, second.id)]
    with engine.connect() as conn:
        assert rows_by_pk(conn, "bob", pks) == {}
        assert neighbours(conn, "bob", pks) == {}
        assert set(rows_by_pk(conn, "alice", pks)) == set(pks)
        assert neighbours(conn, "alice", pks) == {
            pks[0]: (None, pks[1], None, None),
            pks[1]: (pks[0], None, None, None),
        }


def test_sqlite_direct_statements_read_what_sqlalchemy_reads(service, engine):
    """On SQLite a search's statements go to the driver directly (sqlite_direct.py); they read
    the same rows, values converted the same way, as the SQLAlchemy statements they replace
    (which PostgreSQL still uses): tags, a document chunk's title, a changed and a trashed memory."""
    if engine.dialect.name != "sqlite":
        return
    document_id = service.store_document(USER, "Garden notes", "The roses need pruning in March.\n\n" * 3)
    run_jobs(service, engine)
    kept = service.add(USER, "I grow tomatoes on the balcony", ["garden", "food"]).saved[0]
    changed = service.add(USER, "My sister lives in Lisbon").saved[0]
    service.update(USER, changed.id, "My sister lives in Porto now")
    trashed = service.add(USER, "I used to keep bees").saved[0]
    service.delete(USER, trashed.id)
    model = service.embedder.model_name
    with engine.connect() as conn:
        pks = [row.pk for row in conn.execute(sa.select(memories.c.pk).where(memories.c.user_id == USER))]
        assert len(pks) >= 4 and document_id
        direct = hit_rows(conn, USER, pks)
        assert direct == rows_by_pk(conn, USER, pks)
        assert {m.id for m in direct.values()} >= {kept.id, changed.id} and trashed.id not in {
            m.id for m in direct.values()
        }
        assert any(m.title == "Garden notes" for m in direct.values())
        assert direct[pk_of(engine, kept.id)].tags == ["garden", "food"]
        reference = conn.execute(_DATED_BY_PK, {"user_id": USER, "pks": pks, "model": model}).all()
        rows = dated_rows(conn, USER, model, pks)
        assert [(pk, text, at) for pk, text, at, _ in rows] == [(r.pk, r.text, r.created_at) for r in reference]
        assert all(np.array_equal(v, r.vector) for (*_, v), r in zip(rows, reference, strict=True))
        assert hit_rows(conn, "someone-else", pks) == {} and hit_rows(conn, USER, []) == {}
