"""One log line per request, plain or JSON, never carrying a secret.

The line names the route template (not the raw path or query, which can hold codes and
tokens), the status, the duration, a request id (taken from a sane `X-Request-ID` or made up,
and echoed back), and the client and user ids when the request established them.

A client that goes away before its body has arrived is logged here as 499 (nginx's "client
closed request"; HTTP has no status for it), at INFO like every request: it is no server error,
so no traceback and no 500.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jean_memory import clock
from jean_memory.observability.metrics import Metrics

logger = logging.getLogger("jean_memory.http")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{8,128}$")
CLIENT_CLOSED_REQUEST = 499


class JsonFormatter(logging.Formatter):
    """A JSON object per line for log shippers; request fields become top-level keys."""

    FIELDS = ("method", "route", "status", "duration_ms", "request_id", "client_id", "user_id", "client_ip")

    def __init__(self, with_pid: bool = False) -> None:
        super().__init__()
        self.with_pid = with_pid  # `serve --workers N`: which worker wrote the line

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.with_pid:
            entry["pid"] = record.process
        for name in self.FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def printable(value: object) -> str:
    """`value` as it is when it prints on one line, else its repr: a client id taken from a URL
    (`/mcp/v2/{client_name}/...`, percent-decoded) must not start a forged log line."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or ("static" if scope["path"].startswith("/static/") else "unmatched")


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if REQUEST_ID.match(incoming) else clock.new_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except ClientDisconnect:
            # Starlette's signal, from any body reader (ours, its form parser, the MCP endpoint's),
            # that the client hung up mid-body: there is nobody left to answer.
            status = CLIENT_CLOSED_REQUEST
        finally:
            elapsed = time.perf_counter() - started
            route = route_of(scope)
            if self.metrics:
                self.metrics.observe_request(scope["method"], route, status, elapsed)
            if logger.isEnabledFor(logging.INFO):  # the record is built only when it is written
                principal = state.get("principal")
                client_id = printable(principal.client_id if principal else state.get("client_id", "-"))
                user_id = printable(principal.user_id if principal else state.get("user_id", "-"))
                client_ip = printable((scope.get("client") or ("-", 0))[0])
                fields = {
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    "request_id": request_id,
                    "client_id": client_id,
                    "user_id": user_id,
                    "client_ip": client_ip,
                }
                logger.info(
                    "%s %s %d %.1fms request=%s client=%s user=%s ip=%s",
                    scope["method"],
                    route,
                    status,
                    elapsed * 1000,
                    request_id,
                    client_id,
                    user_id,
                    client_ip,
                    extra=fields,
                )
