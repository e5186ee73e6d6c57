"""Running `jean-memory serve` as several worker processes on one port (`--workers N`).

One Python process uses one core for everything that holds the GIL (the SDK's request
handling, SQLAlchemy, JSON), so on a machine with more cores the server runs N processes on
one port (on Linux each with a listening socket of its own, `listening_twin`) sharing the
database. uvicorn's own supervisor (`Multiprocess`) does the rest: it starts the workers,
replaces one that dies or stops answering its health ping, and on SIGTERM/SIGINT sends each
worker SIGTERM and waits, so every worker drains its requests and queued saves (the app's
lifespan) before the parent exits.

Everything a worker keeps for itself is safe with several: rate limits count in the database;
the revocation cache answers from memory for at most `JEAN_MEMORY_REVOCATION_CACHE_SECONDS`
(a grant revoked through another worker is refused within it, as with several instances);
background jobs are leased through the database (`memory/jobs.py`), so each runs once; the
maintenance loops only delete what has expired and queue idempotent jobs, so running them in
every worker does no harm. The parent does what must happen once, before any worker starts:
the JWT key file, the migrations, and whatever else `cli.cmd_serve` prints first.

Workers are spawned (not forked): each loads the app and its own copy of the embedding model,
which is why the default worker count is bounded by memory as well as by cores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

from jean_memory.config import ConfigError
from jean_memory.cores import WORKERS_ENV, read_small_file, usable_cores

logger = logging.getLogger("jean_memory")

#: Memory one worker may come to use, in bytes. Measured (bench/README.md, issue 17): one worker
#: with the local ONNX model is ~230 MB resident when ready and reached ~430 MB under 200
#: clients on SQLite (issue 18's soak); without a local model it is ~110 MB when ready.
WORKER_BUDGET_LOCAL_MODEL = 512 * 1024 * 1024
WORKER_BUDGET_NO_MODEL = 256 * 1024 * 1024
#: Memory left alone for the database, the page cache and everything else on the machine: the
#: larger of 1 GiB and a quarter of what is available.
MIN_HEADROOM = 1024 * 1024 * 1024
HEADROOM_SHARE = 0.25


def available_memory() -> int | None:
    """Bytes this process may still use: the kernel's MemAvailable, capped by a cgroup limit."""
    available: int | None = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        return None
    # A container's limit (cgroup v2, else v1); /proc/meminfo shows the whole host's memory.
    for limit_file, used_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, used = read_small_file(limit_file), read_small_file(used_file)
        if limit is None or used is None:
            continue
        if limit.isdigit() and used.isdigit() and available is not None and int(limit) < 2**60:
            available = min(available, int(limit) - int(used))
        break
    return available


def default_workers(local_model: bool, cores: int | None = None, available: int | None = None) -> int:
    """Every core, as far as memory allows: each worker holds its own copy of the embedding
    model, so the count is also capped at (available memory - headroom) / budget per worker.
    At least one; unknown memory (no /proc) leaves the core count."""
    cores = usable_cores() if cores is None else cores
    available = available_memory() if available is None else available
    if available is None:
        return max(1, cores)
    budget = WORKER_BUDGET_LOCAL_MODEL if local_model else WORKER_BUDGET_NO_MODEL
    headroom = max(MIN_HEADROOM, int(available * HEADROOM_SHARE))
    return max(1, min(cores, (available - headroom) // budget))


def parse_workers(raw: str | int | None) -> int | None:
    """`--workers` / JEAN_MEMORY_WORKERS: a positive whole number, or `auto` / empty (None: the default)."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "auto")):
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{WORKERS_ENV} (--workers) must be a whole number or auto, got {raw!r}") from exc
    if value < 1:
        raise ConfigError(f"{WORKERS_ENV} (--workers) must be at least 1, got {value}")
    return value


#: Linux hands each new connection to one of the listening sockets bound to a port with
#: SO_REUSEPORT, by a hash of the connection's addresses and ports; elsewhere the option does not
#: spread connections, and the workers accept from the one shared socket.
OWN_SOCKET_PER_WORKER = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_twin(shared: socket.socket) -> socket.socket:
    """A socket of this worker's own, bound with SO_REUSEPORT to the shared socket's address.

    A keep-alive connection stays with the worker that accepted it. From one shared socket the
    worker that happened to be awake took the connections, even one at a time: the benchmark's
    16 clients were held 16/0 by two workers in a third of its windows, and the other worker
    idled (bench/README.md, issue 17). With a socket each, the kernel picks the worker when the
    connection arrives, by a hash of its addresses and ports, not by which worker is awake.
    The trade: it does not look at load either, so a worker that hangs holds the connections
    the kernel gave it until the supervisor's health ping (5 s) replaces it, and they are reset
    then, as are those queued at a worker that exits (unless `net.ipv4.tcp_migrate_req=1`).
    The shared socket stays bound (`hold_port`: it holds the port, also for the replacements of
    workers that die) but never listens, so it takes no connections."""
    own = socket.socket(shared.family, socket.SOCK_STREAM, shared.proto)
    try:
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.bind(shared.getsockname())
        own.setblocking(False)
    except OSError:
        own.close()
        raise
    return own


def hold_port(shared: socket.socket) -> socket.socket:
    """The parent's socket (bound by uvicorn, with SO_REUSEADDR) made to hold the port for the
    workers' `listening_twin`s and against everyone else (Linux).

    It never listens, and a bound socket that does not listen holds nothing against another
    with SO_REUSEADDR: whenever no worker listened (while they start, or after all died) a second
    `serve`, or any local user, could bind the port and listen, and a second `serve` would then
    join the workers' SO_REUSEPORT group and take part of their connections. Without SO_REUSEADDR
    on it, only a socket with SO_REUSEPORT of the same user binds beside it."""
    if OWN_SOCKET_PER_WORKER:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # the workers bind beside it
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    return shared


class OwnListeningSocket:
    """Event loop mixin: uvicorn hands every worker the shared socket to serve; on Linux the
    worker serves its `listening_twin` instead."""

    async def create_server(self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any) -> Any:
        sock = kwargs.get("sock")
        if OWN_SOCKET_PER_WORKER and sock is not None and sock.type == socket.SOCK_STREAM:
            try:
                kwargs["sock"] = listening_twin(sock)
            except OSError as exc:  # every replacement would fail the same way: stop the supervisor
                from uvicorn.config import STARTUP_FAILURE

                print(f"error: a worker could not listen on the port: {exc}", file=sys.stderr, flush=True)
                sys.exit(STARTUP_FAILURE)
        return await super().create_server(protocol_factory, host, port, **kwargs)  # type: ignore[misc]


class AsyncioWorkerLoop(OwnListeningSocket, asyncio.SelectorEventLoop):
    """asyncio's event loop, serving the worker's own socket."""


def worker_loop() -> asyncio.AbstractEventLoop:
    """A worker's event loop (uvicorn's `loop` setting): uvloop's when installed (the `[fast]`
    extra), else asyncio's; either serves the worker's own socket."""
    try:
        import uvloop
    except ImportError:
        return AsyncioWorkerLoop()

    class UvloopWorkerLoop(OwnListeningSocket, uvloop.Loop):  # type: ignore[misc]
        """uvloop's event loop, serving the worker's own socket."""

    return UvloopWorkerLoop()


def worker_app():  # type: ignore[no-untyped-def]
    """The app of one worker process (uvicorn's factory): settings from the environment the
    parent prepared, migrations already run by the parent. A setup problem (a model that does
    not load, a bad setting) exits with uvicorn's STARTUP_FAILURE, so the supervisor stops
    instead of restarting a worker that would fail the same way forever."""
    from uvicorn.config import STARTUP_FAILURE

    from jean_memory.app import build_app, build_embedder
    from jean_memory.config import ensure_secret_key, load_settings
    from jean_memory.db.engine import create_engine
    from jean_memory.observability.log_setup import configure_logging

    try:
        settings = ensure_secret_key(load_settings())
        configure_logging(settings.log_level, settings.log_format, with_pid=True)
        app = build_app(
            settings, create_engine(settings.database_url), migrate=False, embedder=build_embedder(settings)
        )
    except Exception as exc:  # the parent already checked the settings: anything here is setup
        print(f"error: a worker could not start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    configure_logging(settings.log_level, settings.log_format, with_pid=True)  # the SDK configured logging
    return app


def announce_when_listening(address: tuple[str, int], message: str, stop: threading.Event) -> None:
    """Print `message` once a worker answers /healthz on the port (any worker: all load the
    same app, and the first answer means clients can connect)."""
    host, port = address[0], address[1]
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - listening everywhere: ask over loopback
        host = "127.0.0.1" if host != "::" else "::1"
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    print(message, flush=True)
                    return
        except OSError:
            pass
        time.sleep(0.1)


def serve_workers(
    count: int, host: str, port: int, grace_seconds: int, announcement: str, environment: dict[str, str]
) -> int:
    """Run `count` workers on one socket until SIGTERM/SIGINT; the exit status of `serve`.
    `environment`: settings the command line gave, handed to the workers as their environment."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    os.environ.update(environment)
    os.environ[WORKERS_ENV] = str(count)
    # /metrics sums every worker's values (observability/metrics.py); a fresh directory per run.
    metrics_dir = tempfile.mkdtemp(prefix="jean-memory-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    config = uvicorn.Config(
        "jean_memory.serving:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=count,
        loop="jean_memory.serving:worker_loop",
        log_config=None,
        proxy_headers=False,  # forwarded headers are trusted only from JEAN_MEMORY_TRUSTED_PROXIES (app.py)
        timeout_graceful_shutdown=grace_seconds,
    )
    sock = hold_port(config.bind_socket())  # refused (exit 3) when anything already listens on the port
    logger.info("starting %d worker processes on %s:%d", count, host, port)
    supervisor = Multiprocess(config, sockets=[sock])
    stop = threading.Event()
    announcer = threading.Thread(
        target=announce_when_listening, args=(sock.getsockname(), announcement, stop), daemon=True
    )
    announcer.start()
    try:
        supervisor.run()
    finally:
        stop.set()
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        return 2
    return 0
