"""Moving a person between backends: `jean-memory export` then `jean-memory import`, nothing lost."""

import json

import pytest
import sqlalchemy as sa

from jean_memory.accounts.users import create_user
from jean_memory.db.engine import create_engine
from jean_memory.db.tables import documents, jobs, memories
from jean_memory.memory.service import MemoryService
from jean_memory.memory.transfer import ImportFormatError, import_user
from tests.support.databases import fresh_postgresql_database
from tests.support.oauth import PASSWORD
from tests.support.servers import cli_env, run_cli

EMAIL = "mover@example.com"
TABLES = (memories, documents, jobs)


@pytest.fixture
def target_url(backend, request, tmp_path):
    """The other backend: SQLite data moves to PostgreSQL and PostgreSQL data to SQLite."""
    if backend == "postgresql":
        yield f"sqlite:///{tmp_path / 'target.db'}"
        return
    with fresh_postgresql_database(request.getfixturevalue("postgresql_server")) as url:
        yield url


def comparable(export: dict) -> dict:
    return {
        "memories": [{k: m[k] for k in ("id", "text", "tags", "client", "created_at")} for m in export["memories"]],
        "documents": [
            {k: d[k] for k in ("title", "document_type", "source_url", "content", "created_at")}
            for d in export["documents"]
        ],
    }


def test_export_import_round_trip_across_backends(database_url, target_url, tmp_path):
    source = cli_env(database_url, tmp_path / "a")
    target = cli_env(target_url, tmp_path / "b")
    for env in (source, target):
        assert run_cli(["user", "add", EMAIL, "--password-stdin"], env, stdin=PASSWORD + "\n").returncode == 0
    user_id = run_user_id(database_url)
    engine = create_engine(database_url)
    service = MemoryService(engine, None)
    service.add(user_id, "I adopted a beagle, Max", ["pets"], "claude")
    service.add(user_id, "Prefers window seats", ["travel", "preferences"], "chatgpt")
    service.store_document(user_id, "Recipes", "# Soup\n\nOnions, stock, thyme.", "markdown", "https://example.com/r")
    engine.dispose()

    exported = run_cli(["export", EMAIL], source)
    assert exported.returncode == 0, exported.stderr
    path = tmp_path / "export.json"
    path.write_text(exported.stdout)
    imported = run_cli(["import", str(path)], target)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 memories and 1 documents" in imported.stdout
    assert "embedding" in imported.stderr  # progress was shown

    again = run_cli(["import", str(path)], target)  # idempotent
    assert "imported 0 memories and 0 documents" in again.stdout
    round_trip = json.loads(run_cli(["export", EMAIL], target).stdout)
    assert comparable(round_trip) == comparable(json.loads(exported.stdout))

    found = MemoryService(create_engine(target_url), None).search(run_user_id(target_url), "thyme soup", limit=3)
    assert found and found[0].title == "Recipes"  # the document was chunked and indexed on import


def run_user_id(url: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(sa.text("select id from users")).scalar_one()
    engine.dispose()
    return value


def test_import_refuses_a_file_that_is_not_an_export(database_url, tmp_path):
    env = cli_env(database_url, tmp_path / "a")
    run_cli(["user", "add", EMAIL, "--password-stdin"], env, stdin=PASSWORD + "\n")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"memories": []}))
    result = run_cli(["import", str(bad), "--email", EMAIL], env)
    assert result.returncode == 1
    assert "not a jean-memory export" in result.stderr


def export_file(tmp_path, memories: list[dict], documents: list[dict]):
    path = tmp_path / "export.json"
    path.write_text(
        json.dumps({"format": "jean-memory-export", "version": 1, "memories": memories, "documents": documents})
    )
    return path


def stored_rows(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in TABLES}
    engine.dispose()
    return counts


def test_a_bad_last_document_leaves_nothing_imported(database_url, tmp_path):
    """Found by review: the memories were committed before the documents were checked, so a file
    whose last document was bad left a half-imported account behind."""
    env = cli_env(database_url, tmp_path / "a")
    run_cli(["user", "add", EMAIL, "--password-stdin"], env, stdin=PASSWORD + "\n")
    path = export_file(
        tmp_path,
        [{"id": "m1", "text": "I like tea", "tags": []}, {"text": "I live in Porto", "tags": ["home"]}],
        [
            {"title": "ok", "content": "first document", "document_type": "markdown"},
            {"title": "bad", "content": "second document", "document_type": "pdf"},
        ],
    )
    result = run_cli(["import", str(path), "--email", EMAIL], env)
    assert result.returncode == 1
    assert "document 2" in result.stderr and "document_type must be one of" in result.stderr
    assert stored_rows(database_url) == {"memories": 0, "documents": 0, "jobs": 0}


def test_an_over_long_memory_is_refused_like_add_memories_refuses_it(database_url, tmp_path):
    """Found by review: imported texts skipped the limit add_memories applies (500,000 characters
    went in as one memory)."""
    env = cli_env(database_url, tmp_path / "a")
    run_cli(["user", "add", EMAIL, "--password-stdin"], env, stdin=PASSWORD + "\n")
    path = export_file(tmp_path, [{"text": "I like tea"}, {"text": "x" * 500_000}], [])
    result = run_cli(["import", str(path), "--email", EMAIL], env)
    assert result.returncode == 1
    assert "memory 2" in result.stderr and "at most 20,000" in result.stderr
    assert stored_rows(database_url)["memories"] == 0


@pytest.mark.parametrize(
    ("created_at", "hint"),
    [(1_700_000_000_000, "looks like milliseconds"), (-1, "seconds since 1970"), (253_402_300_800, "year 9999")],
)
def test_a_date_outside_years_1970_to_9999_is_refused(engine, created_at, hint):
    """Found by review: a date in milliseconds (as many tools export) was imported, and then every
    list, search and jean_memory call for that person failed with "year 55840 is out of range"."""
    user = create_user(engine, EMAIL, PASSWORD)
    data = {
        "format": "jean-memory-export",
        "version": 1,
        "memories": [{"text": "I like tea"}, {"text": "I like sailing", "created_at": created_at}],
    }
    with pytest.raises(ImportFormatError, match="memory 2 created_at") as refused:
        import_user(MemoryService(engine, None), engine, user.id, data)
    assert hint in str(refused.value)
    assert stored_rows(engine.url.render_as_string(hide_password=False))["memories"] == 0


def test_the_first_and_last_second_of_the_range_are_accepted(engine):
    user = create_user(engine, EMAIL, PASSWORD)
    data = {
        "format": "jean-memory-export",
        "version": 1,
        "memories": [{"text": "the start", "created_at": 0.5}, {"text": "the end", "created_at": 253_402_300_799}],
    }
    assert import_user(MemoryService(engine, None), engine, user.id, data) == (2, 0)
    listed, _ = MemoryService(engine, None).list(user.id, limit=10)
    assert sorted(m.as_dict()["created_at"] for m in listed) == ["1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]


def test_a_file_of_70_000_memories_imports_into_postgresql(postgresql_server, postgresql_template):
    """Found by review: the ids already taken were looked up with one bound parameter per id, and
    PostgreSQL takes at most 65,535 parameters in a statement, so a file of 70,000 memories failed.
    PostgreSQL only (the limit is its protocol's; it takes about 30 s)."""
    with fresh_postgresql_database(postgresql_server, postgresql_template) as url:
        engine = create_engine(url)
        service, count, last_id = MemoryService(engine, None), 70_000, f"{69_999:032x}"
        other = create_user(engine, "other@example.com", PASSWORD)
        earlier = {"format": "jean-memory-export", "version": 1, "memories": [{"id": last_id, "text": "not yours"}]}
        assert import_user(service, engine, other.id, earlier) == (1, 0)
        user = create_user(engine, EMAIL, PASSWORD)
        data = {
            "format": "jean-memory-export",
            "version": 1,
            "memories": [{"id": f"{i:032x}", "text": f"fact {i}", "created_at": 1.7e9 + i} for i in range(count)],
        }
        assert import_user(service, engine, user.id, data) == (count, 0)
        with engine.connect() as conn:
            mine = conn.execute(sa.select(memories.c.id).where(memories.c.user_id == user.id)).scalars().all()
        assert len(mine) == count and last_id not in mine  # the id taken in the last slice was seen
        engine.dispose()
