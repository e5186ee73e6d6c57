"""Full-text search for memories in any language: an unstemmed index beside the English one

Revision ID: 0010
Revises: 0009

SQLite's FTS5 index stems with Porter and PostgreSQL's tsvector with the 'english'
configuration: both rewrite words by English rules (Portuguese "ações", shares, and "aço",
steel, both become "aco"), and 'english' drops English stop words in every language. Memories
are written in any language, but English stemming is worth keeping for English: without it
LoCoMo's hybrid hit@5 falls from 0.709 to 0.686 (bench/README.md).

So each database gets a second index that only splits on Unicode word boundaries and folds case
(SQLite also diacritics): FTS5 `memories_fts_plain` with `unicode61 remove_diacritics 2`,
PostgreSQL `text_search_simple` with the 'simple' configuration. A query plainly written in
English is matched on the stemmed index, any other on the plain one (lexical.py). The existing
index is untouched; the new one is built from the stored memories, and the triggers keep both.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TRIGGERS = ("memories_fts_insert", "memories_fts_delete", "memories_fts_update")
TABLES = ("memories_fts", "memories_fts_plain")


def _owner_token(column: str) -> str:
    """Migration 0003's owner token (hex digits as decimal pairs), repeated: a migration must
    not import another one's code, which may change."""
    expression = f"hex({column})"
    for digit in "0123456789":
        expression = f"replace({expression}, '{digit}', '0{digit}')"
    for value, letter in enumerate("ABCDEF", start=10):
        expression = f"replace({expression}, '{letter}', '{value}')"
    return expression


def _triggers(tables: tuple[str, ...]) -> list[str]:
    new_owner, old_owner = _owner_token("new.user_id"), _owner_token("old.user_id")
    insert = "".join(
        f"INSERT INTO {t}(rowid, text, owner) VALUES (new.pk, new.text, {new_owner});\n"  # noqa: S608 (constant SQL)
        for t in tables
    )
    delete = "".join(
        f"INSERT INTO {t}({t}, rowid, text, owner) VALUES ('delete', old.pk, old.text, {old_owner});\n"  # noqa: S608
        for t in tables
    )
    return [
        f"CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN\n{insert}END",
        f"CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN\n{delete}END",
        f"CREATE TRIGGER memories_fts_update AFTER UPDATE OF text, user_id ON memories BEGIN\n{delete}{insert}END",
    ]


def _replace_triggers(tables: tuple[str, ...]) -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for statement in _triggers(tables):
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE memories ADD COLUMN text_search_simple tsvector "
            "GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED"
        )
        op.execute(
            "CREATE INDEX ix_memories_user_text_search_simple ON memories USING gin (user_id, text_search_simple)"
        )
        return
    op.execute(
        """CREATE VIRTUAL TABLE memories_fts_plain USING fts5(
            text, owner, content='memories_fts_content', content_rowid='pk',
            tokenize='unicode61 remove_diacritics 2')"""
    )
    _replace_triggers(TABLES)
    op.execute("INSERT INTO memories_fts_plain(memories_fts_plain) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE memories DROP COLUMN text_search_simple")  # drops its index too
        return
    _replace_triggers(("memories_fts",))
    op.execute("DROP TABLE IF EXISTS memories_fts_plain")
