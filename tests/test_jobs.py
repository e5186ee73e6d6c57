"""The durable job queue on a real database: a worker stopped at shutdown neither loses nor
strands the job it was running."""

import threading

import anyio
import pytest

from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade
from jean_memory.memory.jobs import Worker, enqueue, pending_count


@pytest.fixture
def engine(database_url):
    engine = create_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_a_job_running_when_the_worker_is_cancelled_still_finishes(engine):
    """Found by the SIGTERM burst test: cancelling the worker between claiming a job and
    finishing it left the job leased for five minutes, so the save it promised was missing
    after a restart."""
    started, release = threading.Event(), threading.Event()
    ran: list[dict] = []

    def slow_save(user_id: str, payload: dict) -> None:
        started.set()
        release.wait(10)
        ran.append(payload)

    with engine.begin() as conn:
        enqueue(conn, "save", "u1", {"text": "I live in Porto"})
    worker = Worker(engine, {"save": slow_save})

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.run_forever)
            await anyio.to_thread.run_sync(started.wait, 10)
            tasks.cancel_scope.cancel()  # shutdown arrives while the job runs
            release.set()

    anyio.run(main)
    assert ran == [{"text": "I live in Porto"}]
    assert pending_count(engine) == 0  # finished, not left leased
