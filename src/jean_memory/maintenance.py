"""The hourly maintenance task the server runs beside its requests: purge what has expired
(grants, codes, rate-limit counters, registered clients nobody used, memories in the trash
longer than `JEAN_MEMORY_TRASH_DAYS`), queue re-embedding for
memories without a vector of the current model, and build PostgreSQL's vector index once some
person needs it.

It spans the authorization server's tables and the memories, so it lives beside `app.py`, which
assembles the background tasks (DESIGN.md's table): neither `oauth/` nor `memory/` may import
the other. Each step runs in a worker thread and fails on its own; a failure is logged and
retried on the next round.
"""

from __future__ import annotations

import logging

import anyio
from sqlalchemy.engine import Engine

from jean_memory.accounts.browser_sessions import sweep_expired_sessions
from jean_memory.config import Settings
from jean_memory.db import rate_limits
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.service import MemoryService
from jean_memory.memory.trash import purge
from jean_memory.oauth.clients import sweep_unused_clients
from jean_memory.oauth.grants import sweep_expired
from jean_memory.off_loop import run_db

logger = logging.getLogger("jean_memory.http")
MAINTENANCE_INTERVAL_SECONDS = 3600
PENDING_SWEEP_SECONDS = 300


def purge_expired(engine: Engine, settings: Settings) -> None:
    sweep_expired(engine)
    sweep_expired_sessions(engine)
    rate_limits.sweep(engine)
    removed = sweep_unused_clients(engine, settings.unused_client_days)
    if removed:
        logger.info(
            "removed %d dynamically registered clients unused for %d days", removed, settings.unused_client_days
        )


def purge_trash(engine: Engine, settings: Settings) -> int:
    """Delete for good the memories trashed more than `trash_days` ago; returns how many."""
    purged = purge(engine, settings.trash_days)
    if purged:
        logger.info("purged %d memories deleted more than %d days ago", purged, settings.trash_days)
    return purged


async def maintain(engine: Engine, settings: Settings, memory: MemoryService) -> None:
    """Run every MAINTENANCE_INTERVAL_SECONDS until cancelled (at shutdown)."""
    indexer = Indexer(memory)
    while True:
        try:
            await run_db(purge_expired, engine, settings)
        except Exception:
            logger.exception("maintenance failed; will retry")
        try:
            await run_db(purge_trash, engine, settings)
        except Exception:
            logger.exception("purging the trash failed; will retry")
        try:
            waiting = await run_db(indexer.queue_reembedding)
            if waiting:
                logger.info(
                    "re-embedding %d memories with %s in the background (after a model change, or "
                    "saved while embedding failed); search finds them by their words until then",
                    waiting,
                    memory.embedder.model_name if memory.embedder else "-",
                )
        except Exception:
            logger.exception("queueing re-embedding failed; will retry")
        try:
            if await run_db(indexer.build_vector_index):
                logger.info("built the vector index for people with very many memories")
        except Exception:
            logger.exception("building the vector index failed; will retry")
        await anyio.sleep(MAINTENANCE_INTERVAL_SECONDS)


async def sweep_pending(engine: Engine, settings: Settings) -> None:
    """Expired authorization requests (and codes, refresh tokens) and ended rate-limit windows
    every few minutes, or once per request lifetime when that is shorter: any anonymous request
    adds such rows, so they must not wait for the hourly round (issue 12 finding 4)."""
    while True:
        await anyio.sleep(min(PENDING_SWEEP_SECONDS, max(1, settings.authorization_request_seconds)))
        try:
            await run_db(sweep_expired, engine)
            await run_db(rate_limits.sweep, engine)
        except Exception:
            logger.exception("sweeping expired authorization requests failed; will retry")
