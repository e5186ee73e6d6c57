"""Full-text search that does not stem every language as if it were English

Revision ID: 0010
Revises: 0009

Until now SQLite's FTS5 index used the Porter stemmer and PostgreSQL built its tsvector with the
'english' configuration: both rewrite words by English rules ("Geburtstag" and "Geburtstage"
stay apart while "Katzen" and "news" are cut at random, and 'english' drops English stop words
in every language). Memories are written in any language, so both sides now only split on
Unicode word boundaries, fold case and (SQLite) diacritics: FTS5's `unicode61 remove_diacritics 2`
without `porter`, PostgreSQL's 'simple' configuration. Which function words a query drops is
decided per query (lexical.py), where its language can be guessed. The vectors carry the
variation of word forms (bench/README.md: LoCoMo and the multilingual set, before and after).

Both indexes are rebuilt from the memories in place; nothing else changes.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_SQLITE_TABLE = """CREATE VIRTUAL TABLE memories_fts USING fts5(
    text, owner, content='memories_fts_content', content_rowid='pk', tokenize='{tokenizer}')"""


def _sqlite(tokenizer: str) -> None:
    # The triggers (0003) name the table, not its definition, so they keep working on the new one.
    op.execute("DROP TABLE IF EXISTS memories_fts")
    op.execute(_SQLITE_TABLE.format(tokenizer=tokenizer))
    op.execute("INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')")


def _postgresql(configuration: str) -> None:
    # Dropping the generated column drops its GIN index (0004) with it.
    op.execute("ALTER TABLE memories DROP COLUMN text_search")
    op.execute(
        "ALTER TABLE memories ADD COLUMN text_search tsvector "
        f"GENERATED ALWAYS AS (to_tsvector('{configuration}', text)) STORED"
    )
    op.execute("CREATE INDEX ix_memories_user_text_search ON memories USING gin (user_id, text_search)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql("simple")
    else:
        _sqlite("unicode61 remove_diacritics 2")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql("english")
    else:
        _sqlite("porter unicode61 remove_diacritics 2")
