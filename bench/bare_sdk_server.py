"""The baseline for `bench/mcp_load.py`: the bare MCP SDK, nothing of ours.

An `MCPServer` with one `search_memory` tool (same signature and same result shape as ours,
answered from a static list: no database), served by the SDK's own Streamable HTTP app,
stateless with JSON responses, under uvicorn in one process. Tokens are checked the way ours
are: an HS256 JWT verified with PyJWT for signature, `iss`, `aud` and `exp` and the `memory`
scope, plugged in through the SDK's `token_verifier` + `AuthSettings`.

    python -m bench.bare_sdk_server --port 8765 --issuer http://127.0.0.1:8000
    (secret from env BENCH_JWT_SECRET)
"""

from __future__ import annotations

import argparse
import logging
import os
import uuid
from typing import Annotated, Any

import jwt
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from bench.corpus import make_memories

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]


class JwtVerifier:
    """The SDK's TokenVerifier protocol over PyJWT: HS256 only, iss/aud/exp required."""

    def __init__(self, secret: str, issuer: str, audience: str) -> None:
        self.secret = secret
        self.issuer = issuer
        self.audience = audience

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError:
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=self.audience,
            subject=str(claims["sub"]),
        )


# The same result models as jean_memory.mcp_server.tools (copied, so the baseline imports nothing of ours).
class Compact(BaseModel):
    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class MemoryItem(Compact):
    id: str
    text: str
    tags: list[str]
    created_at: str
    score: float | None = None


class MemoryResults(Compact):
    results: list[MemoryItem]
    next_cursor: str | None = None


def static_items(count: int = 100, seed: int = 42) -> list[dict[str, Any]]:
    """Rows shaped like ours (32-hex ids, ISO times, a bm25-like score), built once at start-up."""
    rows = []
    for i, (text, tags) in enumerate(make_memories(count, seed)):
        rows.append(
            {
                "id": uuid.UUID(int=i + 1).hex,
                "text": text,
                "tags": tags,
                "created_at": "2025-11-26T18:00:00Z",
                "score": round(4.0 - i * 0.01, 4),
            }
        )
    return rows


def build_server(secret: str, issuer: str) -> MCPServer:
    resource = f"{issuer}/mcp"
    server: MCPServer = MCPServer(
        name="bare-sdk",
        version="0.1.0",
        token_verifier=JwtVerifier(secret, issuer, resource),
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=resource,
            required_scopes=["memory"],
            validate_token_resource=False,  # the verifier checks `aud` itself, as ours does
        ),
    )
    rows = static_items()

    @server.tool(description="Search the person's memories by meaning and keywords.")
    async def search_memory(
        query: Annotated[str, Field(description="What to look for, in natural language")],
        limit: Annotated[int, Field(description="How many results, 1-100")] = 10,
        tags: Annotated[list[str] | None, Field(description="Only memories with all these tags")] = None,
    ) -> MemoryResults:
        return MemoryResults(results=[MemoryItem(**row) for row in rows[: max(1, min(limit, 100))]])

    return server


def build_app(secret: str, issuer: str) -> Starlette:
    server = build_server(secret, issuer)
    app = server.streamable_http_app(
        json_response=True,
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),  # as ours
    )

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app.add_route("/healthz", healthz, methods=["GET"])
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True, help="the `iss` tokens must carry (audience is ISSUER/mcp)")
    args = parser.parse_args(argv)
    secret = os.environ.get("BENCH_JWT_SECRET", "")
    if len(secret) < 32:
        parser.error("set BENCH_JWT_SECRET (at least 32 characters)")
    app = build_app(secret, args.issuer.rstrip("/"))
    logging.getLogger("mcp").setLevel(logging.WARNING)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
