"""Real servers for tests: the app under uvicorn in a background thread (so tests can move the
shared clock), or the `jean-memory serve` command as a separate process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import uvicorn
from sqlalchemy.engine import Engine

from jean_memory.app import build_app
from jean_memory.config import Settings, load_settings
from jean_memory.db.engine import create_engine
from tests.support.processes import stop_process

TEST_SECRET = "test-secret-key-0123456789abcdef0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up within {timeout}s")


@dataclass
class RunningServer:
    base_url: str
    settings: Settings
    engine: Engine

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"


def make_settings(database_url: str, data_dir: Path, port: int, **overrides: object) -> Settings:
    env = {"JEAN_MEMORY_DATA_DIR": str(data_dir), "JWT_SECRET_KEY": TEST_SECRET}
    settings = load_settings(port=port, database_url=database_url, env=env)
    return settings.with_overrides(**overrides) if overrides else settings


@contextmanager
def threaded_server(
    database_url: str, data_dir: Path, *, lean_mcp: bool = True, **overrides: object
) -> Iterator[RunningServer]:
    port = free_port()
    settings = make_settings(database_url, data_dir, port, **overrides)
    engine = create_engine(settings.database_url)
    app = build_app(settings, engine, lean_mcp=lean_mcp)
    # proxy_headers=False as `serve` has it: forwarded headers count only through the app's own
    # JEAN_MEMORY_TRUSTED_PROXIES middleware (uvicorn would otherwise trust them from 127.0.0.1).
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False)
    server = PromptServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    listen_url = f"http://127.0.0.1:{port}"
    try:
        server.wait_started(thread)
        yield RunningServer(listen_url, settings, engine)
    finally:
        server.stop()
        thread.join(timeout=10)
        engine.dispose()


class PromptServer(uvicorn.Server):
    """uvicorn's server, told when it is up and stopped at once. Its own main loop looks at
    `should_exit` every 0.1 s, and a test waiting for /healthz polled every 0.05 s: with a
    server per test, those waits added up to about a minute of test time. Startup, serving and shutdown are
    uvicorn's own."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.1)  # as uvicorn's tick, or sooner when stopped
            should_exit = await self.on_tick(counter)

    def wait_started(self, thread: threading.Thread, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.01):
            if not thread.is_alive():
                raise RuntimeError("the server thread ended before it was up (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not come up within {timeout}s")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown (uvicorn/server.py) without its fixed 0.1 s pause after asking the
        connections to close, and polling every 5 ms instead of every 0.1 s: it still waits for
        every connection and request task to end, then runs the app's lifespan shutdown. That
        pause was a tenth of a second of every test that takes `server`."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while (state.connections or state.tasks) and not self.force_exit:
                    await asyncio.sleep(0.005)
        except TimeoutError:
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()

    def stop(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)


def cli_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEAN_MEMORY_")}
    env.update({"DATABASE_URL": database_url, "JEAN_MEMORY_DATA_DIR": str(data_dir), "JWT_SECRET_KEY": TEST_SECRET})
    # One server process unless a test asks for more (tests/test_workers.py): the default would
    # start a worker per core, each loading the model, for tests about one process's behaviour.
    env["JEAN_MEMORY_WORKERS"] = "1"
    return env


def run_cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jean_memory.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def server_process(
    env: dict[str, str], port: int | None = None, extra: list[str] | None = None, log_path: Path | None = None
) -> Iterator[str]:
    """`jean-memory serve` as its own process; yields the base URL and stops it afterwards.
    Its output goes to `log_path` (or nowhere) so a test can read what a person would see."""
    port = port or free_port()
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = _serve(env, port, extra or [], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process=process)
        yield url
    finally:
        stop_process(process)
        if log_path:
            log.close()


@contextmanager
def server_processes(env: dict[str, str], count: int) -> Iterator[list[str]]:
    """`count` servers as `server_process` starts one, all started before any is waited for:
    each takes a second or two to start, and one after another doubled a two-instance setup."""
    ports: list[int] = []
    while len(ports) < count:  # none listens yet, so the same free port could come up twice
        port = free_port()
        if port not in ports:
            ports.append(port)
    processes: list[subprocess.Popen] = []
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        processes.extend(_serve(env, port, [], subprocess.DEVNULL) for port in ports)
        for url, process in zip(urls, processes, strict=True):
            wait_until_up(url, process=process)
        yield urls
    finally:
        for process in processes:
            stop_process(process)


def _serve(env: dict[str, str], port: int, extra: list[str], log: IO[str] | int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jean_memory.cli", "serve", "--port", str(port), *extra],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
