"""The `jean-memory` command: run the server and manage accounts, clients and keys.

Every command reads the same settings as `serve`, so it works on the database a running server
uses (SQLite in WAL mode lets both write).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import uvicorn
from sqlalchemy.engine import Engine

from jean_memory.config import (
    ConfigError,
    Settings,
    ensure_secret_key,
    is_loopback_host,
    load_settings,
    private_directory,
)
from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import MissingExtensionError, check_extensions, current_and_head, upgrade
from jean_memory.observability.log_setup import configure_logging


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        issuer=getattr(args, "issuer", None),
        database_url=getattr(args, "database", None),
    )


def _engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    engine = create_engine(_settings(args).database_url)
    upgrade(engine)
    return engine


def first_run_link(settings: Settings, engine: Engine) -> str | None:
    """While no account exists, a new one-time setup link (24 h) whose page makes the first
    account, an administrator; else None. Called once per start by the process that prints the
    "ready" message, before any server process starts (with several workers: the parent)."""
    from jean_memory.accounts.invites import create_setup_link

    upgrade(engine)
    token = create_setup_link(engine)
    return f"{settings.issuer}/setup?token={token}" if token else None


def ready_message(settings: Settings, setup_link: str | None) -> str:
    message = (
        f'\nJean Memory is ready. Paste this URL into Claude\'s "Add custom connector":\n\n    {settings.resource}\n'
    )
    if setup_link:
        message += (
            "\nNo account exists yet. Open this one-time link to create yours (the administrator); it works\n"
            f"once, for 24 hours, and a new one is printed on each start until an account exists:\n\n    {setup_link}\n"
        )
    return message


def cmd_serve(args: argparse.Namespace) -> int:
    """Prepare once in this process (key, settings, migrations, what to print), then serve: in
    this process (`--workers 1`) or in N worker processes on one port (`serving.py`)."""
    from jean_memory.serving import WORKERS_ENV, default_workers, parse_workers

    settings = ensure_secret_key(_settings(args))  # the key file is made here, once, before any worker
    if settings.data_dir.exists():  # one made by an older version may be 0755 (issue 12 finding 8)
        private_directory(settings.data_dir)
    configure_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("jean_memory")
    if settings.jwt_secret_key_source != "env":
        log.info("JWT_SECRET_KEY is not set; using the key stored in %s", settings.jwt_secret_key_source)
    if not settings.issuer_is_https and (not settings.issuer_is_loopback or settings.trusted_proxies):
        log.warning(
            "!!! The issuer %s is not https. Claude and ChatGPT only connect over https: put the server behind "
            "a TLS proxy and set --issuer https://your-host (JEAN_MEMORY_ISSUER).",
            settings.issuer,
        )
    if settings.issuer_is_loopback and not is_loopback_host(settings.host):
        log.warning(
            "!!! Listening on %s, but the issuer is %s, which only this machine can reach. Set "
            "JEAN_MEMORY_ISSUER (or --issuer) to the public https URL clients use.",
            settings.host,
            settings.issuer,
        )
    workers = parse_workers(args.workers if args.workers is not None else os.environ.get(WORKERS_ENV))
    if workers is None:
        workers = default_workers(local_model=settings.embeddings == "local")
    engine = create_engine(settings.database_url)
    # --- before the workers: anything printed or prepared once for the whole server goes here ---
    setup_link = first_run_link(settings, engine)  # migrates first: once, before any worker starts
    announcement = ready_message(settings, setup_link)
    if workers > 1:
        from jean_memory.serving import serve_workers

        engine.dispose()  # the workers open their own connections
        environment = {
            "JEAN_MEMORY_HOST": settings.host,
            "JEAN_MEMORY_PORT": str(settings.port),
            "JEAN_MEMORY_ISSUER": settings.issuer,
            "DATABASE_URL": settings.database_url,
        }
        return serve_workers(
            workers, settings.host, settings.port, settings.shutdown_grace_seconds, announcement, environment
        )
    return serve_one_process(settings, engine, announcement)


def serve_one_process(settings: Settings, engine, announcement: str) -> int:  # type: ignore[no-untyped-def]
    """The server in this process (`--workers 1`): what `serve` always did."""
    from jean_memory.app import build_app, build_embedder
    from jean_memory.memory.embedder import EmbeddingError

    log = logging.getLogger("jean_memory")
    try:
        embedder = build_embedder(settings)
    except EmbeddingError as exc:
        print(f"error: the embedding model could not be loaded: {exc}", file=sys.stderr)
        return 2
    if embedder is None:
        log.info("embeddings are off (JEAN_MEMORY_EMBEDDINGS=none): search is lexical only")
    else:
        log.info("embeddings: %s", embedder.model_name)
    app = build_app(settings, engine, migrate=False, embedder=embedder)
    configure_logging(settings.log_level, settings.log_format)  # the MCP SDK configured logging; ours wins
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            proxy_headers=False,  # forwarded headers are trusted only from JEAN_MEMORY_TRUSTED_PROXIES (app.py)
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        )
    )

    async def announce_when_ready() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        print(announcement, flush=True)

    async def run() -> None:
        announcer = asyncio.create_task(announce_when_ready())
        await server.serve()
        announcer.cancel()

    asyncio.run(run())
    return 0


def cmd_client_add(args: argparse.Namespace) -> int:
    from jean_memory.oauth.clients import ClientMetadataError, register_client

    engine = _engine(args)
    body = {
        "client_name": args.name,
        "redirect_uris": args.redirect_uri,
        "token_endpoint_auth_method": "client_secret_basic" if args.secret else "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
    try:
        registration = register_client(engine, body, source="static")
    except ClientMetadataError as exc:
        print(f"error: {exc.description}", file=sys.stderr)
        return 1
    print(f"client_id: {registration.client.client_id}")
    if registration.client_secret:
        print(f"client_secret: {registration.client_secret}")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Embed every memory lacking a vector from the configured model (after a model change)."""
    from jean_memory.app import build_embedder
    from jean_memory.memory.embedder import EmbeddingError
    from jean_memory.memory.indexing import Indexer
    from jean_memory.memory.service import MemoryService

    settings = _settings(args)
    try:
        embedder = build_embedder(settings)
    except EmbeddingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if embedder is None:
        print("embeddings are off (JEAN_MEMORY_EMBEDDINGS=none): nothing to do")
        return 0
    service = MemoryService(_engine(args), embedder)

    count = Indexer(service).reindex(lambda done, total: _progress_bar("embedding", done, total))
    print(f"re-embedded {count} memories with {embedder.model_name}")
    return 0


def _progress_bar(label: str, done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    print(
        f"\r{label:>10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True
    )


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from jean_memory.accounts.users import find_user_by_email
    from jean_memory.memory.transfer import export_user

    engine = _engine(args)
    user = find_user_by_email(engine, args.email)
    if user is None:
        print(f"error: no account for {args.email}", file=sys.stderr)
        return 1
    data = export_user(engine, user.id, user.email)
    json.dump(data, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    print(f"exported {len(data['memories'])} memories and {len(data['documents'])} documents", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import an export file into an existing account, then embed and index what arrived."""
    import json

    import anyio

    from jean_memory.accounts.users import find_user_by_email
    from jean_memory.app import build_embedder
    from jean_memory.memory.embedder import EmbeddingError
    from jean_memory.memory.indexing import Indexer
    from jean_memory.memory.jobs import Worker
    from jean_memory.memory.service import MemoryService
    from jean_memory.memory.transfer import ImportFormatError, import_user

    try:
        with open(args.file, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or absurdly deep
        print(
            f"error: {args.file} is not a jean-memory export (UTF-8 JSON from `jean-memory export`): {exc}",
            file=sys.stderr,
        )
        return 1
    if not isinstance(data, dict) or not isinstance(data.get("memories", []), list):
        print(f"error: {args.file} is not a jean-memory export (expected a JSON object with memories)", file=sys.stderr)
        return 1
    owner = data.get("user") if isinstance(data, dict) else None
    email = args.email or (owner.get("email", "") if isinstance(owner, dict) else "")
    settings = _settings(args)
    engine = _engine(args)
    user = find_user_by_email(engine, email or "")
    if user is None:
        print(f"error: no account for {email!r}; create it first: jean-memory user add {email}", file=sys.stderr)
        return 1
    try:
        service = MemoryService(engine, build_embedder(settings))
        added, docs = import_user(service, engine, user.id, data, _progress_bar)
    except (ImportFormatError, EmbeddingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    indexer = Indexer(service)
    indexer.reindex(lambda done, total: _progress_bar("embedding", done, total))
    anyio.run(Worker(engine, indexer.job_handlers()).drain, 3600)
    print(f"imported {added} memories and {docs} documents into {user.email}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    engine = create_engine(_settings(args).database_url)
    upgrade(engine)
    current, _ = current_and_head(engine)
    print(f"database schema at revision {current}")
    return 0


def cmd_db_check(args: argparse.Namespace) -> int:
    engine = create_engine(_settings(args).database_url)
    try:
        check_extensions(engine)
    except MissingExtensionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    current, head = current_and_head(engine)
    if current != head:
        print(f"database schema at {current}, code expects {head}: run jean-memory db upgrade", file=sys.stderr)
        return 1
    extra = " (pgvector present)" if engine.dialect.name == "postgresql" else ""
    print(f"database schema current ({head}){extra}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jean-memory", description="Self-hosted memory for AI assistants.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", help="database URL (default: env DATABASE_URL, else SQLite in the data dir)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server", parents=[common])
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--issuer", help="public base URL, e.g. https://memory.example.com (env JEAN_MEMORY_ISSUER)")
    serve.add_argument(
        "--workers",
        help="server processes on the one port (env JEAN_MEMORY_WORKERS; default: every core memory allows)",
    )
    serve.set_defaults(handler=cmd_serve)

    from jean_memory.cli_accounts import add_commands as add_account_commands

    add_account_commands(commands, common)

    client = commands.add_parser("client", help="manage OAuth clients").add_subparsers(dest="action", required=True)
    client_add = client.add_parser("add", help="pre-register a static OAuth client", parents=[common])
    client_add.add_argument("--name", required=True)
    client_add.add_argument("--redirect-uri", action="append", required=True)
    client_add.add_argument("--secret", action="store_true", help="make a confidential client with a secret")
    client_add.set_defaults(handler=cmd_client_add)

    from jean_memory.doctor import add_arguments as add_doctor_arguments
    from jean_memory.doctor import run_from_args as run_doctor

    doctor = commands.add_parser("doctor", help="check any deployed connector URL the way Claude will use it")
    add_doctor_arguments(doctor)
    doctor.set_defaults(handler=run_doctor)

    export = commands.add_parser("export", help="write a person's memories and documents as JSON", parents=[common])
    export.add_argument("email")
    export.set_defaults(handler=cmd_export)
    import_ = commands.add_parser("import", help="import an export file into an existing account", parents=[common])
    import_.add_argument("file")
    import_.add_argument("--email", help="the account to import into (default: the one in the file)")
    import_.set_defaults(handler=cmd_import)

    reindex = commands.add_parser("reindex", help="re-embed memories after an embedding model change", parents=[common])
    reindex.set_defaults(handler=cmd_reindex)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply migrations", parents=[common]).set_defaults(handler=cmd_db_upgrade)
    db.add_parser("check", help="exit non-zero unless migrations are current", parents=[common]).set_defaults(
        handler=cmd_db_check
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, MissingExtensionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # setup mistakes get one line, not a traceback; bugs still raise
        message = setup_problem(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def setup_problem(exc: Exception) -> str | None:
    """What an operator should know about a failure that comes from the setup (database URL,
    database server, files, schema) rather than from a bug; None for anything else."""
    import sqlalchemy.exc
    from alembic.util.exc import CommandError

    from jean_memory.memory.embedder import EmbeddingError

    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError)):
        return (
            f"DATABASE_URL is not a database URL this server can use ({first_line}); "
            "use sqlite:////path/to/file.db or postgresql://user:password@host:5432/name"
        )
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return f"the database cannot be opened or reached: {first_line}. Check DATABASE_URL and that the server runs"
    if isinstance(exc, CommandError):
        return (
            f"the database schema is at a revision this version does not know ({first_line}): a newer version "
            "of Jean Memory ran on it. Run that version again, or restore the database from before the upgrade"
        )
    if isinstance(exc, EmbeddingError):
        return f"{exc}. What was saved is kept; run `jean-memory reindex` once the embedding service answers"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}. Check JEAN_MEMORY_DATA_DIR and the file permissions"
    return None


if __name__ == "__main__":
    sys.exit(main())
