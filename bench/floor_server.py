"""The floor for `bench/mcp_load.py`: the least a one-process Python server can do for the same call.

Bare Starlette + PyJWT + hand-built JSON-RPC, no MCP SDK: `POST /mcp` checks the HS256 token
(signature, `iss`, `aud`, `exp`, the `memory` scope), parses the JSON-RPC request, runs the same
in-memory search as `bare_sdk_server.py --search-model` (`InMemorySearch`: one embedding run,
FTS5 BM25, cosine over a matrix, z-score fusion) in a worker thread, and writes the
`tools/call` result (text content + structuredContent) with one `json.dumps`. Nothing else:
no protocol negotiation, no validation beyond what the search needs, no logging. What ours
spends above this is the price of the SDK, the database and everything the contract asks.

    BENCH_JWT_SECRET=... python -m bench.floor_server --port 8766 --issuer http://127.0.0.1:8766 \
        --search-model MODEL.onnx --tokenizer tokenizer.json [--memories 1000 --seed 42]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import anyio
import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bench.bare_sdk_server import REQUIRED_CLAIMS, InMemorySearch, memory_rows


def build_app(secret: str, issuer: str, search: InMemorySearch) -> Starlette:
    audience = f"{issuer}/mcp"

    def answer(status: int, body: dict[str, Any]) -> Response:
        return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json")

    async def mcp(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                audience=audience,
                issuer=issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError:
            return answer(401, {"error": "invalid_token"})
        if scheme.lower() != "bearer" or "memory" not in str(claims.get("scope", "")).split():
            return answer(403, {"error": "insufficient_scope"})
        message = json.loads(await request.body())
        if message.get("method") != "tools/call" or message["params"].get("name") != "search_memory":
            return answer(200, {"jsonrpc": "2.0", "id": message.get("id"), "error": {"code": -32601, "message": "no"}})
        arguments = message["params"].get("arguments") or {}
        limit = max(1, min(int(arguments.get("limit", 10)), 100))
        found = await anyio.to_thread.run_sync(search.search, str(arguments.get("query", "")), limit)
        structured = {"results": found}
        result = {
            "content": [{"type": "text", "text": json.dumps(structured)}],
            "structuredContent": structured,
            "isError": False,
        }
        return answer(200, {"jsonrpc": "2.0", "id": message.get("id"), "result": result})

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/mcp", mcp, methods=["POST"]), Route("/healthz", healthz)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--search-model", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    secret = os.environ.get("BENCH_JWT_SECRET", "")
    if len(secret) < 32:
        parser.error("set BENCH_JWT_SECRET (at least 32 characters)")
    search = InMemorySearch(memory_rows(args.memories, args.seed), args.search_model, args.tokenizer)
    app = build_app(secret, args.issuer.rstrip("/"), search)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
