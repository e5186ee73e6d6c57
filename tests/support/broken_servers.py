"""A tiny stand-in MCP connector that gets everything right except one chosen defect.

With no defect it passes every doctor check, so a defect that makes exactly one check fail
shows that check (and only it) is what catches it. Each defect is a mistake seen in real
deployments: a trailing slash on the issuer, the resource URL of the wrong path, Starlette's
307 from /mcp to /mcp/, no auth, 403 instead of 401, an auth middleware that also guards
/.well-known, no S256, a registration that refuses Claude's scope, no CORS, or an auth
middleware placed outside the CORS middleware, and a cold start.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.servers import free_port

DEFECTS = (
    "issuer_trailing_slash",
    "resource_mismatch",
    "redirect",
    "no_auth",
    "forbidden",
    "metadata_behind_auth",
    "no_s256",
    "registration_refused",
    "no_cors",
    "cors_missing_on_401",
    "slow",
)

SLOW_SECONDS = 1.0


class GuardEverything:
    """An auth middleware that forgets that /.well-known must stay public."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/.well-known/"):
            await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class GuardMcpOutsideCors:
    """An auth middleware outside the CORS one: its 401s (and the preflights) lack CORS headers."""

    def __init__(self, app: ASGIApp, challenge: str) -> None:
        self.app = app
        self.challenge = challenge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == "/mcp":
            response = JSONResponse({"error": "unauthorized"}, 401, {"WWW-Authenticate": self.challenge})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_app(base_url: str, defect: str | None = None) -> ASGIApp:
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}")
    issuer = base_url + "/" if defect == "issuer_trailing_slash" else base_url
    resource = base_url if defect == "resource_mismatch" else f"{base_url}/mcp"
    prm_url = f"{base_url}/.well-known/oauth-protected-resource/mcp"
    challenge = f'Bearer resource_metadata="{prm_url}"'
    prm = {"resource": resource, "authorization_servers": [issuer], "bearer_methods_supported": ["header"]}
    as_metadata: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{base_url}/authorize",
        "token_endpoint": f"{base_url}/token",
        "registration_endpoint": f"{base_url}/register",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["plain"] if defect == "no_s256" else ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
    }

    async def mcp(request: Request) -> Response:
        if defect == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if defect == "redirect" and request.url.path == "/mcp":
            return RedirectResponse(f"{base_url}/mcp/", status_code=307)
        if defect == "no_auth":
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "serverInfo": {"name": "open", "version": "1"},
            }
            return JSONResponse({"jsonrpc": "2.0", "id": 0, "result": result})
        if defect == "forbidden":
            return JSONResponse({"error": "forbidden"}, status_code=403)
        return JSONResponse({"error": "invalid_token"}, 401, {"WWW-Authenticate": challenge})

    async def protected_resource(request: Request) -> Response:
        return JSONResponse(prm)

    async def authorization_server(request: Request) -> Response:
        return JSONResponse(as_metadata)

    async def register(request: Request) -> Response:
        body = await request.json()
        if defect == "registration_refused" and body.get("scope") != "memory":
            error = {"error": "invalid_client_metadata", "error_description": "unknown scope: claudeai"}
            return JSONResponse(error, status_code=400)
        client = {**body, "client_id": secrets.token_urlsafe(8), "client_id_issued_at": int(time.time())}
        client.update(client_secret=secrets.token_urlsafe(16), client_secret_expires_at=0)
        return JSONResponse(client, status_code=201)

    async def authorize(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>Sign in</title><form method=post></form>")

    routes = [
        Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]),
        Route("/mcp/", mcp, methods=["GET", "POST", "DELETE"]),
        Route("/.well-known/oauth-protected-resource/mcp", protected_resource),
        Route("/.well-known/oauth-protected-resource", protected_resource),
        Route("/.well-known/oauth-authorization-server", authorization_server),
        Route("/.well-known/openid-configuration", authorization_server),
        Route("/register", register, methods=["POST"]),
        Route("/authorize", authorize),
    ]
    middleware = []
    if defect != "no_cors":
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["WWW-Authenticate", "Mcp-Session-Id", "MCP-Protocol-Version"],
            )
        )
    app: ASGIApp = Starlette(routes=routes, middleware=middleware)
    if defect == "metadata_behind_auth":
        app = GuardEverything(app)
    if defect == "cors_missing_on_401":
        app = GuardMcpOutsideCors(app, challenge)
    return app


@contextmanager
def broken_server(
    defect: str | None, *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None
) -> Iterator[str]:
    """Serve `build_app(defect)` on 127.0.0.1 in a thread; yields the connector URL (`.../mcp`)."""
    port = free_port()
    scheme = "https" if ssl_certfile else "http"
    base_url = f"{scheme}://127.0.0.1:{port}"
    config = uvicorn.Config(
        build_app(base_url, defect),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the {defect} server did not start")
            time.sleep(0.02)
        yield f"{base_url}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
