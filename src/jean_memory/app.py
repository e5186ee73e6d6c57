"""Assembles the one ASGI application: discovery, the authorization server, the sign-in pages,
the MCP endpoint, static files and health, plus request logging and maintenance."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from jean_memory.config import Settings
from jean_memory.db.migrate import current_and_head, upgrade
from jean_memory.maintenance import maintain, sweep_pending
from jean_memory.mcp_server.endpoint import McpEndpoint
from jean_memory.mcp_server.legacy import LegacyEndpoint
from jean_memory.memory.concat_embedder import ConcatEmbedder
from jean_memory.memory.embedder import Embedder
from jean_memory.memory.embeddings import LocalOnnxEmbedder, create_embedder
from jean_memory.memory.extraction import LlmExtractor
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.jobs import Worker, pending_count
from jean_memory.memory.service import SAVE_JOB, MemoryService
from jean_memory.memory.use_embedder import UseMultilingualEmbedder
from jean_memory.oauth.authorize import AuthorizationEndpoints
from jean_memory.oauth.metadata import MetadataEndpoints
from jean_memory.oauth.register import RegistrationEndpoint
from jean_memory.oauth.revoke import RevocationEndpoint
from jean_memory.oauth.service import OAuthService
from jean_memory.oauth.token import TokenEndpoint
from jean_memory.observability.metrics import Metrics
from jean_memory.observability.request_log import RequestLogMiddleware
from jean_memory.off_loop import run_db
from jean_memory.pages.context import PageDeps
from jean_memory.pages.errors import not_found_handler
from jean_memory.pages.routes import page_routes
from jean_memory.web.templating import STATIC_DIR

logger = logging.getLogger("jean_memory.http")
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def return_freed_memory() -> None:
    """Let glibc give back what the server frees (issue 18: RSS 240 -> 620 MB in four minutes of
    200 clients, not levelling off). Left to itself, glibc gives each busy thread an arena of
    its own (up to 8 per core: dozens of request, job and search threads) that it keeps and
    fragments, and after the first large free it raises its mmap threshold to 32 MB, so the
    multi-megabyte arrays of a search or a vector reload come from those arenas and stay.
    Two arenas and a fixed 128 KiB threshold (large blocks mmapped, unmapped when freed) keep
    RSS flat. The same as MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072, which only work when
    set before the process starts. No-op off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt ignores these
    except (OSError, AttributeError):
        return
    for parameter, value in ((_M_ARENA_MAX, 2), (_M_MMAP_THRESHOLD, 128 * 1024), (_M_TRIM_THRESHOLD, 128 * 1024)):
        libc.mallopt(parameter, value)


def options_answered(app: ASGIApp, methods: list[str]) -> ASGIApp:
    """OPTIONS is answered here and never reaches the endpoint (RFC 9110 §9.3.7: it asks what
    the resource allows). CORSMiddleware answers only real preflights and passed any other
    OPTIONS on: a bare `OPTIONS /oauth/register` with a body registered a client."""
    allow = ", ".join([*methods, "OPTIONS"])

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
            return
        await app(scope, receive, send)

    return answer


def public_cors(app: ASGIApp, methods: list[str]) -> ASGIApp:
    """Discovery, registration, token and revocation are called from browsers (MCP Inspector);
    they use no cookies, so any origin may call them. `Authorization` is named explicitly:
    browsers do not let `*` cover it."""
    return CORSMiddleware(
        options_answered(app, methods),
        allow_origins=["*"],
        allow_methods=[*methods, "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"],
        max_age=600,
    )


def readiness(engine: Engine, memory: MemoryService) -> dict[str, tuple[bool, str]]:
    checks: dict[str, tuple[bool, str]] = {}
    try:
        current, head = current_and_head(engine)
        checks["database"] = (True, "reachable")
        checks["migrations"] = (current == head, f"at {current}, expected {head}")
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = (False, f"unreachable: {type(exc).__name__}")
    embedder = memory.embedder
    checks["embeddings"] = (True, embedder.model_name if embedder else "off (lexical search only)")
    return checks


def build_embedder(settings: Settings) -> Embedder | None:
    """The configured embedding provider, loaded now so a broken model stops the start, not a search."""
    embedder = create_embedder(
        settings.embeddings,
        base_url=settings.embeddings_base_url or None,
        api_key=settings.embeddings_api_key or None,
        model=settings.embeddings_model or None,
        model_path=settings.embeddings_model_path or None,
        local_model=settings.local_model,
    )
    if isinstance(embedder, LocalOnnxEmbedder | UseMultilingualEmbedder | ConcatEmbedder):
        embedder.load()
    return embedder


def build_app(
    settings: Settings,
    engine: Engine,
    migrate: bool = True,
    embedder: Embedder | None = None,
    lean_mcp: bool = True,
) -> Starlette:
    """`lean_mcp=False` is for tests/test_mcp_lean.py only: every `/mcp` request through the SDK's transport."""
    if migrate:
        upgrade(engine)
    metrics = Metrics()
    oauth = OAuthService.create(engine, settings, metrics)
    extractor = (
        LlmExtractor(settings.llm_base_url, settings.llm_model, settings.llm_api_key) if settings.llm_base_url else None
    )
    memory = MemoryService(engine, embedder if embedder is not None else build_embedder(settings), extractor=extractor)
    worker = Worker(engine, Indexer(memory).job_handlers(), quick={SAVE_JOB})
    memory.set_enqueue_hook(worker.enqueued)
    mcp = McpEndpoint(oauth.verifier, memory, settings, metrics, lean=lean_mcp)
    metadata = MetadataEndpoints(settings)
    pages = PageDeps(engine, settings, memory, oauth)
    authorize = AuthorizationEndpoints(oauth)
    register = public_cors(request_response(RegistrationEndpoint(oauth)), ["POST"])
    token = public_cors(request_response(TokenEndpoint(oauth)), ["POST"])
    revoke = public_cors(request_response(RevocationEndpoint(oauth)), ["POST"])
    as_metadata = public_cors(request_response(metadata.authorization_server), ["GET"])
    pr_metadata = public_cors(request_response(metadata.protected_resource), ["GET"])

    async def healthz(request: Request) -> PlainTextResponse:
        """Alive: the process answers. Says nothing about the database on purpose."""
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> JSONResponse:
        """Ready to serve: database reachable, schema current, embedding model loaded."""
        checks = await run_db(readiness, engine, memory)
        ready = all(ok for ok, _ in checks.values())
        body = {"ready": ready, "checks": {name: detail for name, (_, detail) in checks.items()}}
        return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})

    # The CORS-wrapped endpoints are plain ASGI apps, which Starlette routes for any method
    # unless told: PUT /register registered a client and GET /token issued tokens.
    routes: list[BaseRoute] = [
        *page_routes(pages),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/.well-known/oauth-authorization-server", as_metadata, methods=["GET", "OPTIONS"]),
        Route("/.well-known/openid-configuration", as_metadata, methods=["GET", "OPTIONS"]),
        Route("/oauth/.well-known/oauth-authorization-server", as_metadata, methods=["GET", "OPTIONS"]),
        Route("/.well-known/oauth-protected-resource/mcp", pr_metadata, methods=["GET", "OPTIONS"]),
        # For a pasted `/mcp/`:
        Route("/.well-known/oauth-protected-resource/mcp/", pr_metadata, methods=["GET", "OPTIONS"]),
        Route("/.well-known/oauth-protected-resource", pr_metadata, methods=["GET", "OPTIONS"]),
        Route("/oauth/authorize", authorize.authorize, methods=["GET", "POST"]),
        Route("/authorize", authorize.authorize, methods=["GET", "POST"]),
        Route("/oauth/complete", authorize.complete, methods=["POST"]),
        Route("/oauth/consent", authorize.consent, methods=["POST"]),
        Route("/oauth/register", register, methods=["POST", "OPTIONS"]),
        Route("/register", register, methods=["POST", "OPTIONS"]),
        Route("/oauth/token", token, methods=["POST", "OPTIONS"]),
        Route("/token", token, methods=["POST", "OPTIONS"]),
        Route("/oauth/revoke", revoke, methods=["POST", "OPTIONS"]),
        Route("/revoke", revoke, methods=["POST", "OPTIONS"]),
        Route("/mcp", mcp),
        Route("/mcp/", mcp),
        Route("/mcp/v2/{client_name}/{user_id}", LegacyEndpoint(mcp, engine)),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    if settings.metrics_enabled:
        routes.append(Route("/metrics", metrics.endpoint))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        return_freed_memory()  # before the request and job threads start
        async with mcp.lifespan(), anyio.create_task_group() as tasks:
            tasks.start_soon(maintain, engine, settings, memory)
            tasks.start_soon(sweep_pending, engine, settings)
            worker_scope = anyio.CancelScope()

            async def work() -> None:
                with worker_scope:
                    await worker.run_forever()

            tasks.start_soon(work)
            yield
            # Shutting down (SIGTERM): uvicorn has finished in-flight requests; run the saves
            # they queued, within the grace period. Jobs still running then are released (their
            # leases cleared), so the next start or another instance takes them at once.
            worker_scope.cancel()
            done = await worker.drain(settings.shutdown_grace_seconds)
            left = await run_db(pending_count, engine)
            logging.getLogger("jean_memory").info(
                "shutdown: ran %d queued jobs, %d left for the next start", done, left
            )
            tasks.cancel_scope.cancel()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found_handler(pages)})
    app.router.redirect_slashes = False  # a 307 from /mcp to /mcp/ breaks MCP clients
    app.add_middleware(RequestLogMiddleware, metrics=metrics)
    if settings.trusted_proxies:
        # Outermost, so the request log and rate limits see the real client address.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    return app
