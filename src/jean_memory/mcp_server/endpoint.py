"""`/mcp`: origin check, CORS, authentication, then the
official SDK's Streamable HTTP transport for the caller's client profile.

The challenge follows RFC 6750 §3 and RFC 9728 §5.1 as MCP clients read it: a missing token
gets 401 with `resource_metadata` and `scope` (no error code), a bad one adds
`error="invalid_token"`, a token without our scope gets 403 `insufficient_scope`. Never a
redirect, never another status for an auth problem: Claude decides to run OAuth only on a 401.

The SDK runs stateless (no session ids), so any instance can answer any request and a restart
loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive, Scope, Send

from jean_memory.config import Settings, is_loopback_host
from jean_memory.mcp_server.lean import answer, ordinary_request
from jean_memory.mcp_server.principal import Principal, current_principal
from jean_memory.mcp_server.profiles import PROFILE_TOOLS, profile_for
from jean_memory.mcp_server.tools import ToolSet
from jean_memory.memory.service import MemoryService
from jean_memory.oauth.scopes import MEMORY_SCOPE, can_write, has_memory_access
from jean_memory.oauth.verify import AccessTokenVerifier, InvalidAccessToken
from jean_memory.observability.metrics import Metrics

INSTRUCTIONS = (
    "Jean Memory is the person's long-term memory. Call jean_memory at the start of each conversation "
    "and whenever personal context would help; save lasting facts with add_memories."
)
# Mcp-Method and Mcp-Name: every 2026-07-28 request must carry them (the SDK refuses one without).
ALLOW_HEADERS = (
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, "
    "Last-Event-ID, X-Request-ID"
)
EXPOSE_HEADERS = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version"


def with_lowercase_media_type(scope: Scope) -> Scope:
    """The SDK compares Content-Type case-sensitively and answers 415 to APPLICATION/JSON;
    media types are case-insensitive (RFC 9110 §8.3.1), so hand it the lowercase spelling."""
    headers = scope["headers"]
    if not any(name == b"content-type" and value != value.lower() for name, value in headers):
        return scope
    lowered = [(name, value.lower() if name == b"content-type" else value) for name, value in headers]
    return {**scope, "headers": lowered}


def origin_allowed(origin: str, issuer: str) -> bool:
    """Our own origin and browser tools on this machine (the MCP Inspector); no other site."""
    if origin == issuer:
        return True
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:  # `http://[::1` ("Invalid IPv6 URL"): not an origin we know
        return False
    return parts.scheme in ("http", "https") and is_loopback_host(parts.hostname or "") and not parts.path


async def body_read_first(scope: Scope, receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """Read the request body (up to just past `limit`) before the SDK does, and hand the SDK a
    `receive` that replays it.

    A client that hangs up mid-body (or sends a chunked body uvicorn rejects) raises Starlette's
    ClientDisconnect here, which the request log records as 499 at INFO; inside the SDK it was
    an ERROR "Error handling POST request" with a traceback and a 500. A body past `limit` (or
    declared to be) is left unread: the SDK's own check answers it 413 as before.

    Also returns the whole body when it was read to its end within `limit` (None otherwise),
    for the lean path (lean.py)."""
    declared = Headers(scope=scope).get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None, receive
    messages: list[Message] = []
    size, more = 0, True
    while more and size <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        messages.append(message)
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    pending = iter(messages)

    async def replay() -> Message:
        return next(pending, None) or await receive()

    whole = not more and size <= limit
    return (b"".join(m.get("body", b"") for m in messages) if whole else None), replay


async def send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# MCPServer registers these whether or not it has anything to serve, and the SDK derives the
# advertised capabilities from the registered handlers.
UNSERVED_METHODS = ("prompts/list", "prompts/get", "resources/list", "resources/read", "resources/templates/list")


class ProfileServer(MCPServer):
    """The SDK's server for one client profile. A call to a tool the profile does not have is
    the protocol error the tools spec names (-32602, "Unknown tool"), not a tool result the
    model would read as that tool's own failure (the SDK's default).

    Jean Memory serves tools only. The prompt and resource handlers MCPServer registers by
    default are dropped, so `initialize` and `server/discover` advertise neither capability and
    a request for one is JSON-RPC's -32601 "Method not found" (naming the method): before, an
    empty `prompts` capability was advertised and `prompts/get` answered error code 0 with an
    ERROR traceback in the log. (The SDK, pinned to 2.3, has no public way to unregister.)"""

    def __init__(self, tools: list[Tool]) -> None:
        super().__init__(name="jean-memory", instructions=INSTRUCTIONS, version="0.1.0", tools=tools)
        self._tool_names = frozenset(tool.name for tool in tools)
        for method in UNSERVED_METHODS:
            self._lowlevel_server._request_handlers.pop(method, None)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        if name not in self._tool_names:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {name}; tools/list names the ones this connection has")
        return await super().call_tool(name, arguments, context)


def served_tools(tools: ToolSet) -> dict[tuple[str, bool], tuple[str, ...]]:
    """The tools of each (profile, may write) pair: a read-only grant (CONTRACT "Scopes") keeps
    only the tools marked `read_only`, and `jean_memory`, which then answers without saving."""
    served: dict[tuple[str, bool], tuple[str, ...]] = {}
    for profile, names in PROFILE_TOOLS.items():
        served[(profile, True)] = names
        served[(profile, False)] = tuple(n for n in names if tools.reads_only(n))
    return served


class McpEndpoint:
    """Knows the authorization server only by its one token check (`oauth/verify.py`)."""

    def __init__(
        self,
        verifier: AccessTokenVerifier,
        memory: MemoryService,
        settings: Settings,
        metrics: Metrics,
        lean: bool = True,
    ) -> None:
        """`lean=False` sends every request through the SDK's transport (the differential
        test's reference, tests/test_mcp_lean.py)."""
        self._verifier = verifier
        self._lean = lean
        self._settings = settings
        self._metadata_url = f"{settings.issuer}/.well-known/oauth-protected-resource/mcp"
        tools = ToolSet(memory, settings.issuer, metrics)
        # One server per profile and per kind of grant: a read-only grant's server holds only the
        # tools that read, so its tools/list shows no other and a call to one is -32602 (the SDK
        # lists a server's tools, not a request's; a server per case keeps that in the SDK).
        self._managers: dict[tuple[str, bool], StreamableHTTPSessionManager] = {}
        for (profile, writes), names in served_tools(tools).items():
            server = ProfileServer(tools.tools(names))
            server.streamable_http_app(
                json_response=True,
                stateless_http=True,
                max_request_body_size=settings.max_mcp_body_bytes,
                # The Origin check is ours (below); the SDK's Host allow-list would break proxies.
                transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            )
            self._managers[(profile, writes)] = server.session_manager

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for manager in self._managers.values():
                await stack.enter_async_context(manager.run())
            yield

    # --- /mcp -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        cors = await self.cors_or_reject(scope, headers, send)
        if cors is None:
            return
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if not authorization or scheme.lower() != "bearer" or not token.strip():
            await self._challenge(send, cors, None)
            return
        try:
            claims = await self._verifier.verify(token.strip())
        except InvalidAccessToken as exc:
            await self._challenge(send, cors, str(exc))
            return
        if not has_memory_access(claims.scopes):
            www = (
                f'Bearer error="insufficient_scope", scope="{MEMORY_SCOPE}", '
                f'resource_metadata="{self._metadata_url}", error_description="the token lacks the memory scope"'
            )
            await send_json(
                send,
                403,
                {"error": "insufficient_scope", "error_description": f"scope {MEMORY_SCOPE} required"},
                [(b"www-authenticate", www.encode()), *cors],
            )
            return
        principal = Principal(
            user_id=claims.sub,
            email=claims.email,
            profile=profile_for(claims.client),
            client_id=claims.client_id,
            scopes=tuple(claims.scopes),
        )
        scope.setdefault("state", {})["principal"] = principal
        await self.dispatch(principal, scope, receive, send, cors)

    async def _challenge(self, send: Send, cors: list[tuple[bytes, bytes]], problem: str | None) -> None:
        parts = [f'resource_metadata="{self._metadata_url}"', f'scope="{MEMORY_SCOPE}"']
        body = {"error": "unauthorized", "error_description": "Bearer token required: connect with OAuth"}
        if problem is not None:
            parts.insert(0, f'error="invalid_token", error_description="{problem}"')
            body = {"error": "invalid_token", "error_description": problem}
        await send_json(send, 401, body, [(b"www-authenticate", ("Bearer " + ", ".join(parts)).encode()), *cors])

    async def cors_or_reject(self, scope: Scope, headers: Headers, send: Send) -> list[tuple[bytes, bytes]] | None:
        """CORS headers to add for an allowed browser origin; None when the request was answered
        here (a refused origin, or OPTIONS: a preflight or not, it never reaches the endpoint)."""
        origin = headers.get("origin")
        # Server-to-server clients (Claude's cloud, SDKs) send no Origin.
        if origin is not None and not origin_allowed(origin, self._settings.issuer):
            await send_json(
                send, 403, {"error": "forbidden_origin", "error_description": f"origin {origin!r} is not allowed"}, []
            )
            return None
        cors = (
            [
                (b"access-control-allow-origin", origin.encode()),
                (b"vary", b"Origin"),
                (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
            ]
            if origin is not None
            else []
        )
        if scope["method"] == "OPTIONS":
            preflight = [
                (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"600"),
            ]
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [*cors, *(preflight if cors else []), (b"allow", b"POST, OPTIONS")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return None
        return cors

    async def dispatch(
        self, principal: Principal, scope: Scope, receive: Receive, send: Send, cors: list[tuple[bytes, bytes]]
    ) -> None:
        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and cors:
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        if scope["method"] not in ("POST",):
            # Stateless: no server-initiated stream to offer (GET) and no session to end (DELETE).
            await send_json(
                send,
                405,
                {"error": "method_not_allowed", "error_description": "this server is stateless: use POST"},
                [(b"allow", b"POST, OPTIONS"), *cors],
            )
            return
        if Headers(scope=scope).get("mcp-session-id"):
            # This server is stateless and hands out no session ids, so any id is unknown here:
            # the transport spec's 404 tells the client to start over with initialize (CONTRACT).
            await send_json(
                send,
                404,
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "Session not found"}},
                cors,
            )
            return
        body, receive = await body_read_first(scope, receive, self._settings.max_mcp_body_bytes)
        token = current_principal.set(principal)
        try:
            scope = with_lowercase_media_type(scope)
            manager = self._managers[(principal.profile, can_write(principal.scopes))]
            if self._lean:
                request = Request(scope, receive)
                message = ordinary_request(request, body)
                if message is not None:
                    # The manager's lifespan state, as its own transport hands it to the server.
                    state = manager._lifespan_state  # pinned SDK; tests/test_mcp_lean.py checks the answers
                    response = await answer(manager.app, state, request, message)
                    await response(scope, receive, send_with_cors)
                    return
            await manager.handle_request(scope, receive, send_with_cors)
        finally:
            current_principal.reset(token)
