"""A reverse proxy for the conformance suite: it forwards every request to the real server
unchanged (method, path, query, body, `Host`, `Origin`, ...) and adds
`Authorization: Bearer <token>` when the request carries none.

The suite's server scenarios speak MCP without OAuth, while our `/mcp` keeps its auth on; this
sits between them on 127.0.0.1 so the scenarios reach the MCP logic with a real token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from tests.support.servers import free_port

# RFC 9110 §7.6.1 hop-by-hop fields; content-length is recomputed by each side.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class HeaderInjectingProxy:
    def __init__(self, upstream: str, token: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.token = token
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) for failure reports
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0), follow_redirects=False)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        request = Request(scope, receive)
        assert self._client is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        if not any(k.lower() == "authorization" for k, _ in headers):
            headers.append(("authorization", f"Bearer {self.token}"))
        url = self.upstream + scope.get("raw_path", scope["path"].encode()).decode()
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode()
        upstream_request = self._client.build_request(
            request.method, url, headers=headers, content=await request.body()
        )
        upstream = await self._client.send(upstream_request, stream=True)
        self.requests.append((request.method, scope["path"], upstream.status_code))
        response = StreamingResponse(
            upstream.aiter_raw(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
        )
        response.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in upstream.headers.multi_items()
            if k.lower() not in HOP_BY_HOP
        ]
        await response(scope, receive, send)


@dataclass
class RunningProxy:
    url: str
    app: HeaderInjectingProxy


@contextmanager
def running_proxy(upstream: str, token: str) -> Iterator[RunningProxy]:
    """The proxy under uvicorn on 127.0.0.1 in a background thread; yields its base URL."""
    port = free_port()
    app = HeaderInjectingProxy(upstream, token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(400):
            if server.started:
                break
            threading.Event().wait(0.025)
        else:
            raise TimeoutError("the conformance proxy did not start")
        yield RunningProxy(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
