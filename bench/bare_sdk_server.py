"""The baseline for `bench/mcp_load.py`: the bare MCP SDK, nothing of ours.

An `MCPServer` with one `search_memory` tool (same signature and same result shape as ours,
answered from a static list: no database), served by the SDK's own Streamable HTTP app,
stateless with JSON responses, under uvicorn in one process. Tokens are checked the way ours
are: an HS256 JWT verified with PyJWT for signature, `iss`, `aud` and `exp` and the `memory`
scope, plugged in through the SDK's `token_verifier` + `AuthSettings`.

    python -m bench.bare_sdk_server --port 8765 --issuer http://127.0.0.1:8000
    (secret from env BENCH_JWT_SECRET)

With `--search-model MODEL.onnx --tokenizer tokenizer.json` the tool does instead the search
work ours does, in memory, for the proposed yardstick "the bare SDK doing the same search": it
holds the benchmark's memories (`--memories`, `--seed`) in an in-memory SQLite FTS5 table and a
numpy matrix embedded at start with the same int8 model, and per call embeds the query (one
onnxruntime run), takes the 50 best by BM25 and by cosine, fuses them by z-score (weight 0.5)
and returns the 10 best, in a worker thread as ours does. What it leaves out of ours:
durable storage, one person's rows among many, the neighbours pass, request logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sqlite3
import threading
import uuid
from typing import Annotated, Any

import anyio
import jwt
import numpy as np
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


WORD = re.compile(r"\w+", re.UNICODE)
# Ours drops function words from a query (memory/lexical.py); so does this, with a short list.
STOPWORDS = frozenset(
    "a an the and or of to in on at by for with is are was were be i my me we what when where who how".split()
)
DEPTH = 50


class InMemorySearch:
    """The benchmark's memories searched the way ours searches them, without a database."""

    def __init__(self, rows: list[dict[str, Any]], model_path: str, tokenizer_path: str) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.rows = rows
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.matrix = np.stack([self.embed(row["text"]) for row in rows])
        self.uri = f"file:bare-{uuid.uuid4().hex}?mode=memory&cache=shared"
        self.keeper = self.connect()  # an in-memory database lives while a connection holds it
        self.keeper.execute("CREATE VIRTUAL TABLE fts USING fts5(text)")
        self.keeper.executemany(
            "INSERT INTO fts(rowid, text) VALUES (?, ?)", [(i, r["text"]) for i, r in enumerate(rows)]
        )
        self.keeper.commit()
        self.local = threading.local()

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.uri, uri=True, check_same_thread=False)

    def embed(self, text: str) -> np.ndarray:
        ids = np.array([self.tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        vector = self.session.run(None, feeds)[0][0].mean(axis=0)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def lexical(self, query: str) -> list[tuple[int, float]]:
        words = list(dict.fromkeys(w.lower() for w in WORD.findall(query)))
        words = [w for w in words if w not in STOPWORDS] or words
        if not words:
            return []
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = self.connect()
        match = " OR ".join(f'"{w}"' for w in words)
        found = conn.execute("SELECT rowid, bm25(fts) FROM fts WHERE fts MATCH ? ORDER BY 2 LIMIT ?", (match, DEPTH))
        return [(pk, -rank) for pk, rank in found]

    def vector(self, query: str) -> list[tuple[int, float]]:
        scores = self.matrix @ self.embed(query)
        depth = min(DEPTH, scores.size)
        top = np.argpartition(-scores, depth - 1)[:depth]
        return [(int(i), float(scores[i])) for i in top[np.argsort(-scores[top])]]

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        fused = z_fusion(self.lexical(query), self.vector(query))
        best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return [{**self.rows[pk], "score": round(score, 4)} for pk, score in best]


def z_fusion(lexical: list[tuple[int, float]], vector: list[tuple[int, float]]) -> dict[int, float]:
    """0.5 z(BM25) + 0.5 z(cosine), a missing candidate given its list's lowest z (as ours)."""

    def z(ranking: list[tuple[int, float]]) -> tuple[dict[int, float], float]:
        if not ranking:
            return {}, 0.0
        scores = np.array([s for _, s in ranking])
        spread = scores.std()
        values = (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)
        return {pk: float(v) for (pk, _), v in zip(ranking, values, strict=True)}, float(values.min())

    zl, floor_l = z(lexical)
    zv, floor_v = z(vector)
    return {pk: 0.5 * zl.get(pk, floor_l) + 0.5 * zv.get(pk, floor_v) for pk in dict.fromkeys([*zl, *zv])}


def memory_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """The benchmark's memories (the sentences ours is seeded with) shaped like our results."""
    return [
        {"id": uuid.UUID(int=i + 1).hex, "text": text, "tags": tags, "created_at": "2025-11-26T18:00:00Z"}
        for i, (text, tags) in enumerate(make_memories(count, seed))
    ]


def build_server(secret: str, issuer: str, search: InMemorySearch | None = None) -> MCPServer:
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
        limit = max(1, min(limit, 100))
        if search is not None:
            found = await anyio.to_thread.run_sync(search.search, query, limit)
            return MemoryResults(results=[MemoryItem(**row) for row in found])
        return MemoryResults(results=[MemoryItem(**row) for row in rows[:limit]])

    return server


def build_app(secret: str, issuer: str, search: InMemorySearch | None = None) -> Starlette:
    server = build_server(secret, issuer, search)
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
    parser.add_argument("--search-model", help="an ONNX embedding model: do the search work in memory")
    parser.add_argument("--tokenizer", help="its tokenizer.json (with --search-model)")
    parser.add_argument("--memories", type=int, default=1000, help="memories to search (with --search-model)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    secret = os.environ.get("BENCH_JWT_SECRET", "")
    if len(secret) < 32:
        parser.error("set BENCH_JWT_SECRET (at least 32 characters)")
    if args.search_model and not args.tokenizer:
        parser.error("--search-model needs --tokenizer")
    search = (
        InMemorySearch(memory_rows(args.memories, args.seed), args.search_model, args.tokenizer)
        if args.search_model
        else None
    )
    app = build_app(secret, args.issuer.rstrip("/"), search)
    logging.getLogger("mcp").setLevel(logging.WARNING)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
