"""Database access: the engine, the schema and its migrations."""
