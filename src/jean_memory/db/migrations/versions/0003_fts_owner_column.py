"""SQLite: the full-text index carries each memory's owner as an indexed column

Revision ID: 0003
Revises: 0002

Before, a lexical search matched every user's rows and then looked each match up in `memories`
to keep the user's own: 18 ms at 100,000 memories (bench/scale.py), 10 of it the lookups. With
the owner as an indexed FTS5 column the match itself is limited to the user (12 ms for one
person with 100,000 memories; 0.85 ms instead of 9.4 ms for one of 100 people with 1,000 each).

FTS5 has one tokenizer per table and the porter stemmer rewrites hex ids ("…0d5e" → "…0d5"), so
the owner is written as digits, which no tokenizer changes: each hex digit of the UTF-8 bytes
of `user_id` as two decimal digits. `jean_memory.memory.lexical.owner_token` is the same mapping
in Python (a test holds them together). The index reads its content through a view, so
FTS5's 'rebuild' command works. PostgreSQL is unchanged.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TRIGGERS = ("memories_fts_insert", "memories_fts_delete", "memories_fts_update")


def _owner_token(column: str) -> str:
    """SQL for the owner token: hex, then 0-9 -> 00-09 and A-F -> 10-15 (unambiguous pairs:
    the digits are rewritten before any pair that contains them is produced)."""
    expression = f"hex({column})"
    for digit in "0123456789":
        expression = f"replace({expression}, '{digit}', '0{digit}')"
    for value, letter in enumerate("ABCDEF", start=10):
        expression = f"replace({expression}, '{letter}', '{value}')"
    return expression


def _new_index() -> list[str]:
    return [
        f"CREATE VIEW memories_fts_content AS SELECT pk, text, {_owner_token('user_id')} AS owner FROM memories",  # noqa: S608 (constant SQL)
        """CREATE VIRTUAL TABLE memories_fts USING fts5(
            text, owner, content='memories_fts_content', content_rowid='pk',
            tokenize='porter unicode61 remove_diacritics 2')""",
        f"""CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
            INSERT INTO memories_fts(rowid, text, owner) VALUES (new.pk, new.text, {_owner_token("new.user_id")});
        END""",  # noqa: S608
        f"""CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
            INSERT INTO memories_fts(memories_fts, rowid, text, owner)
            VALUES ('delete', old.pk, old.text, {_owner_token("old.user_id")});
        END""",  # noqa: S608
        f"""CREATE TRIGGER memories_fts_update AFTER UPDATE OF text, user_id ON memories BEGIN
            INSERT INTO memories_fts(memories_fts, rowid, text, owner)
            VALUES ('delete', old.pk, old.text, {_owner_token("old.user_id")});
            INSERT INTO memories_fts(rowid, text, owner) VALUES (new.pk, new.text, {_owner_token("new.user_id")});
        END""",  # noqa: S608
        "INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')",
    ]


def _old_index() -> list[str]:
    """The index of revision 0001: user_id unindexed, content read from `memories` itself."""
    return [
        """CREATE VIRTUAL TABLE memories_fts USING fts5(
            text, user_id UNINDEXED, content='memories', content_rowid='pk',
            tokenize='porter unicode61 remove_diacritics 2')""",
        """CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
            INSERT INTO memories_fts(rowid, text, user_id) VALUES (new.pk, new.text, new.user_id);
        END""",
        """CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
            INSERT INTO memories_fts(memories_fts, rowid, text, user_id)
            VALUES ('delete', old.pk, old.text, old.user_id);
        END""",
        """CREATE TRIGGER memories_fts_update AFTER UPDATE OF text ON memories BEGIN
            INSERT INTO memories_fts(memories_fts, rowid, text, user_id)
            VALUES ('delete', old.pk, old.text, old.user_id);
            INSERT INTO memories_fts(rowid, text, user_id) VALUES (new.pk, new.text, new.user_id);
        END""",
        "INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')",
    ]


def _drop_index() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS memories_fts")
    op.execute("DROP VIEW IF EXISTS memories_fts_content")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _drop_index()
    for statement in _new_index():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _drop_index()
    for statement in _old_index():
        op.execute(statement)
