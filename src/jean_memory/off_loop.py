"""Run blocking work off the event loop, in one of anyio's worker threads.

Queries are synchronous SQLAlchemy Core, so the CLI, the server and the tests share one code
path; on the server every one of them (and any other blocking call a request makes) goes
through `run_db`, so the event loop never waits on a query. A leaf module: it knows nothing of
the database, so every layer may use it (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio.to_thread

__all__ = ["run_db"]

P = ParamSpec("P")
T = TypeVar("T")


async def run_db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking function (usually a database query) in a worker thread."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
