"""The few threads MCP tool calls that use this process's cores run on (issue 17).

anyio lends blocking work any of its forty threads (`off_loop.run_db`), which suits calls that
wait on a database or another service. A search is mostly CPU here instead, and forty threads
on two cores only pass Python's lock back and forth; so such calls queue for `tool_threads()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from jean_memory.cores import cores_per_worker

__all__ = ["run_tool_work", "tool_threads"]

P = ParamSpec("P")
T = TypeVar("T")


def tool_threads() -> int:
    """How many MCP tool calls this process works on at once: one per core it may count on,
    and at least two, so one slow call (a wait on PostgreSQL, a person with very many memories)
    does not stop the rest.

    A tool call is mostly CPU in this process (the query's embedding, SQLite, the ranking), and a
    thread beyond what the cores can run only waits for the GIL: each time a thread lets it go
    (for each SQLite row, each model run) a waiting one takes it, and the first must be woken
    again. On anyio's forty threads, sixteen searches at once in one process on 2 cores cost
    6.6-7.3 ms of CPU each against 4.2-4.8 ms one at a time, with about 200 context switches per
    call against 66 for the bare SDK; queued for two threads they cost 4.9 ms (bench/README.md,
    issue 17: 2 threads 1.18-1.28x the bare SDK's CPU, 4 threads 1.25x, 40 threads 1.39-1.60x)."""
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
