"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25).

A `client_id` that is an https URL names a JSON document describing the client (its name and
redirect URIs). Instead of registering, the client sends that URL; we fetch the document,
check it, and treat the client as a public one (`none`, PKCE protects the code).

This module keeps the documents: `CimdClients` answers "which client is this URL?" from the
cache, fetching through `guarded_fetch` (the SSRF-guarded transport, its limits and its pool)
and checking with `cimd_document` (what a document must say, and the pinned copies).

Cache (in `oauth_clients`, source `cimd`, so every instance shares it): a document is used for
its HTTP freshness lifetime (Cache-Control max-age, else Expires, else 1 hour), clamped to
[5 minutes, 24 hours]; `no-store`/`no-cache` count as the 5 minute minimum, because the
document must stay known through one authorization (authorize, sign-in, consent, token) and
the floor bounds how often a client can make us fetch. Once expired it is fetched again.
If that re-fetch fails:
- for a network reason (no connection, timeout, TLS failure, HTTP 408/429/5xx) and the
  cached copy was fetched less than 24 hours ago: keep using the cached copy, and try again
  in 5 minutes (an outage at the client's site should not lock its users out);
- otherwise (the site answered, and the answer is a 404, a redirect, not JSON, or a document
  that fails the checks): the cached copy is dropped at once, because the publisher has
  withdrawn or changed it and we must not keep honouring redirect URIs it took back.
Then, for the exact URLs of the documents pinned in `pinned_clients/` (Claude's, Claude
Code's and ChatGPT's; sources in its README), the pinned copy is used when the fetch fails
(claude.ai has answered data-centre fetches with a bot challenge), and retried after the
default hour. A failure is remembered for a minute (`cimd_failures`), and fetches run in a
small pool of their own (`guarded_fetch.FetchPool`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from jean_memory import clock
from jean_memory.db.tables import oauth_clients
from jean_memory.oauth.cimd_document import pinned_documents, validate_document
from jean_memory.oauth.cimd_failures import FailureCache
from jean_memory.oauth.clients import CIMD_STALE_SECONDS, Client, client_from_row
from jean_memory.oauth.guarded_fetch import DEFAULT_CACHE_SECONDS, CimdError, CimdFetcher, Fetched, FetchPool
from jean_memory.off_loop import run_db

RETRY_AFTER_FAILURE_SECONDS = 5 * 60

logger = logging.getLogger("jean_memory.oauth")


def is_metadata_url(client_id: str | None) -> bool:
    """Whether a client_id is meant as a metadata document URL (http:// is refused later, with a reason)."""
    return bool(client_id) and client_id[:8].lower().startswith(("https://", "http://"))


# --- the cache in the database --------------------------------------------------------------


@dataclass(frozen=True)
class _Cached:
    client: Client
    expires_at: float
    fetched_at: float
    via: str


def _load(engine: Engine, client_id: str) -> tuple[Client, _Cached | None] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(oauth_clients).where(oauth_clients.c.client_id == client_id)).first()
    if row is None:
        return None
    client = client_from_row(row)
    if row.source != "cimd":
        return client, None
    meta = row.metadata if isinstance(row.metadata, dict) else {}
    cached = _Cached(
        client=client,
        expires_at=float(row.expires_at or 0),
        fetched_at=float(meta.get("fetched_at") or 0),
        via=str(meta.get("via") or ""),
    )
    return client, cached


def _store(engine: Engine, url: str, fields: dict[str, Any], document: dict[str, Any], via: str, ttl: int) -> Client:
    now = clock.now()
    values = {
        **fields,
        "client_secret_hash": None,
        "source": "cimd",
        "metadata": {"document": document, "fetched_at": now, "via": via},
        "expires_at": now + ttl,
    }
    update = oauth_clients.update().where(oauth_clients.c.client_id == url).values(**values)
    with engine.begin() as conn:
        updated = conn.execute(update).rowcount
    if not updated:
        try:
            with engine.begin() as conn:
                conn.execute(oauth_clients.insert().values(client_id=url, created_at=now, **values))
        except IntegrityError:  # another request or instance stored it first: ours is as fresh
            with engine.begin() as conn:
                conn.execute(update)
    return Client(client_id=url, client_secret_hash=None, source="cimd", **fields)


def _retry_later(engine: Engine, url: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            oauth_clients.update()
            .where(oauth_clients.c.client_id == url, oauth_clients.c.source == "cimd")
            .values(expires_at=clock.now() + RETRY_AFTER_FAILURE_SECONDS)
        )


def _forget(engine: Engine, url: str) -> None:
    with engine.begin() as conn:
        conn.execute(oauth_clients.delete().where(oauth_clients.c.client_id == url, oauth_clients.c.source == "cimd"))


class CimdClients:
    """Clients named by metadata document URLs, fetched on demand and cached in the database.

    Fetches run in their own few threads (`FetchPool`), never in the pool the database calls
    share: a host that answers slowly ties up at most those, while sign-in and `/mcp` go on.
    A failed fetch is remembered for a minute, per URL and (for a host that did not answer or
    is not public) per host, so asking again costs nothing (cimd_failures)."""

    def __init__(self, engine: Engine, fetcher: CimdFetcher) -> None:
        self._engine = engine
        self._fetcher = fetcher
        self._failures = FailureCache()
        self._pool = FetchPool()

    async def get_async(self, url: str, requester: str | None = None) -> Client:
        """The client the document at `url` describes, or CimdError saying why it cannot be used.
        The fetch runs in the fetch pool, its share per host and per `requester` (the client
        address) bounded."""
        client, cached = await run_db(self._from_cache, url)
        if client is not None:
            return client
        try:
            fetched = await self._pool.run(self._fetch_unless_failed, url, requester)
        except CimdError as exc:
            return await run_db(self._after_failure, url, cached, exc)
        return await run_db(self._accept, url, cached, fetched)

    def _from_cache(self, url: str) -> tuple[Client | None, _Cached | None]:
        loaded = _load(self._engine, url)
        if loaded is not None and loaded[1] is None:
            return loaded[0], None  # pre-registered under this URL (static): the registration wins
        cached = loaded[1] if loaded else None
        if cached is not None and cached.expires_at > clock.now():
            return cached.client, cached
        return None, cached

    def _fetch_unless_failed(self, url: str) -> Fetched:
        """Checked again here, in the fetch thread: a request that waited for a thread while
        another fetch of the same URL or host failed answers at once."""
        failed = self._failures.recent(url)
        if failed is not None:
            raise failed
        try:
            return self._fetcher.fetch(url)
        except CimdError as exc:
            self._failures.remember(url, exc)
            raise

    def _accept(self, url: str, cached: _Cached | None, fetched: Fetched) -> Client:
        try:
            fields = validate_document(url, fetched.document)
        except CimdError as exc:
            self._failures.remember(url, exc)
            return self._after_failure(url, cached, exc)
        return _store(self._engine, url, fields, fetched.document, "network", fetched.cache_seconds)

    def _after_failure(self, url: str, cached: _Cached | None, exc: CimdError) -> Client:
        if (
            exc.transient
            and cached is not None
            and cached.via == "network"
            and clock.now() - cached.fetched_at < CIMD_STALE_SECONDS
        ):
            logger.warning("client metadata %r: %s; using the copy fetched earlier", url, exc.detail)
            _retry_later(self._engine, url)
            return cached.client
        pinned = pinned_documents().get(url)
        if pinned is not None:
            logger.warning("client metadata %r: %s; using the pinned copy shipped with the server", url, exc.detail)
            return _store(self._engine, url, validate_document(url, pinned), pinned, "pinned", DEFAULT_CACHE_SECONDS)
        if cached is not None:
            _forget(self._engine, url)
        logger.info("client metadata %r refused: %s", url, exc.detail)
        raise exc
