"""Run blocking work off the event loop, in one of anyio's worker threads.

Queries are synchronous SQLAlchemy Core, so the CLI, the server and the tests share one code
path; on the server every one of them (and any other blocking call a request makes) goes
through `run_db`, so the event loop never waits on a query. A leaf module: it knows nothing of
the database, so every layer may use it (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from jean_memory.cores import cores_per_worker

__all__ = ["run_db", "run_tool_work", "tool_threads"]

P = ParamSpec("P")
T = TypeVar("T")


async def run_db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking function (usually a database query) in a worker thread."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def tool_threads() -> int:
    """How many MCP tool calls this process works on at once: one per core it may count on,
    and at least two, so one slow call (a long save, a wait on PostgreSQL) does not stop the rest.

    A tool call is mostly CPU in this process (the query's embedding, SQLite, the ranking), and a
    thread beyond what the cores can run only waits for the GIL: each time a thread lets it go
    (for each SQLite row, each model run) a waiting one takes it, and the first must be woken
    again. On anyio's forty threads, sixteen searches at once in one process on 2 cores cost
    7.0 ms of CPU each against 4.5 ms one at a time, with about 200 context switches per call
    against 66 for the bare SDK; queued for two threads they cost 5.1-5.3 ms (bench/README.md,
    issue 17: 2 threads 1.18-1.22x the bare SDK's CPU, 4 threads 1.25x, 40 threads 1.39-1.60x)."""
    return max(2, cores_per_worker())


_TOOL_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("jean_memory_tool_limiter")


def _tool_limiter() -> anyio.CapacityLimiter:
    """One limiter per event loop (as anyio keeps its default one): tests run several loops."""
    try:
        return _TOOL_LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(tool_threads())
        _TOOL_LIMITER.set(limiter)
        return limiter


async def run_tool_work(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`run_db` for an MCP tool call: at most `tool_threads()` run at once, the rest wait their turn."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=_tool_limiter())
