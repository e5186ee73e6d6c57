"""MCP tool calls queue for a few threads instead of taking anyio's forty (issue 17).

Sixteen searches at once in one process on two cores spent most of their extra CPU handing the
GIL between threads; `run_tool_work` admits `tool_threads()` of them at a time.
"""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from jean_memory import cores, off_loop

pytestmark = pytest.mark.anyio
DEADLINE = 10.0


async def test_no_more_tool_calls_run_at_once_than_tool_threads() -> None:
    limit = off_loop.tool_threads()
    inside = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        release.wait(DEADLINE)
        with lock:
            inside -= 1

    async with anyio.create_task_group() as group:
        for _ in range(3 * limit):
            group.start_soon(off_loop.run_tool_work, work)
        limiter = off_loop._tool_limiter()
        end = time.monotonic() + DEADLINE
        # The first `limit` calls are inside `work`, the others parked at the limiter: nothing
        # more can enter until one leaves, so the counts are final once both are reached.
        while not (inside == limit and limiter.statistics().tasks_waiting == 2 * limit):
            assert time.monotonic() < end, f"{inside} calls inside, {limiter.statistics()}"
            await anyio.sleep(0.01)
        assert most == limit
        release.set()
    assert inside == 0 and most == limit


async def test_a_failing_tool_call_gives_its_thread_back() -> None:
    def fail() -> None:
        raise ValueError("bad input")

    for _ in range(off_loop.tool_threads() + 1):
        with pytest.raises(ValueError, match="bad input"):
            await off_loop.run_tool_work(fail)
    assert off_loop._tool_limiter().statistics().borrowed_tokens == 0
    assert await off_loop.run_tool_work(lambda: 42) == 42


def test_tool_threads_follow_this_processs_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda: 8)
    monkeypatch.delenv(cores.WORKERS_ENV, raising=False)
    assert cores.cores_per_worker() == 8
    assert off_loop.tool_threads() == 8
    monkeypatch.setenv(cores.WORKERS_ENV, "4")
    assert cores.cores_per_worker() == 2
    assert off_loop.tool_threads() == 2
    # One worker per core (serve's default): still two threads, so a slow call does not stop the rest.
    monkeypatch.setenv(cores.WORKERS_ENV, "8")
    assert cores.cores_per_worker() == 1
    assert off_loop.tool_threads() == 2
    monkeypatch.setenv(cores.WORKERS_ENV, "16")
    assert cores.cores_per_worker() == 1
    monkeypatch.setenv(cores.WORKERS_ENV, "junk")
    assert cores.workers() == 1
