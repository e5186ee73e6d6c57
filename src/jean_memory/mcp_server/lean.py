"""A shorter way through the SDK for the one request assistants send most: a plain
`tools/call` (or `tools/list`) on the handshake-era wire (MCP-Protocol-Version 2025-11-25 and
earlier, or none).

For such a request the SDK's stateless mode builds, per request, a Streamable HTTP transport,
two pairs of memory streams, a JSON-RPC dispatcher with its read loop, and a task in the
session manager's task group, only to carry one message in and one out (issue 17: that machinery
was most of what separated our CPU per request from the bare SDK's). Here the same request goes
straight to the SDK's own single-request kernel (`mcp.server.runner.serve_one`, what the SDK
itself uses for 2026-07-28 requests): the SDK validates the method's params, runs the tool
through the server's tool manager with its argument model, converts and checks the result, and
the reply is framed exactly as the stateless transport frames it (`JSONRPCResponse` dumped
by alias, unset fields left out, `Content-Type: application/json`, 200). So what an assistant
reads is the SDK's by construction; tests/test_mcp_lean.py sends the same requests to a server
with and without this path and compares the answers.

Only a request that is plainly ordinary comes here (`ordinary_request`): POST (the caller
checked), a JSON Content-Type, an Accept the SDK takes in JSON-response mode, no or a
handshake-era protocol version header, a whole body within the size limit that parses as one
JSON-RPC request for one of `LEAN_METHODS`. Anything else (initialize, notifications, batches,
bad JSON, odd headers, 2026-07-28 requests, which the SDK already serves without a transport)
is handed to the SDK's session manager as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pydantic_core
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import serve_one
from mcp.server.streamable_http import check_accept_headers
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import MessageMetadata, ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    DEFAULT_NEGOTIATED_VERSION,
    ErrorData,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    jsonrpc_message_adapter,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

#: The methods taken this way; everything else is the SDK transport's.
LEAN_METHODS = frozenset({"tools/call", "tools/list"})
#: The SDK's dispatcher logs a handler's unexpected exception under this name; so do we.
_dispatcher_log = logging.getLogger("mcp.shared.jsonrpc_dispatcher")
# As the stateless transport's dispatcher builds it: a JSON response has no room for a
# server-initiated request, and stateless HTTP has nowhere for the reply to land.
_TRANSPORT = TransportContext(kind="streamable-http", can_send_request=False)


@dataclass
class OneExchange:
    """The `DispatchContext` of one request answered with one JSON body. In JSON-response mode
    the SDK's transport drops whatever a handler sends besides its reply (notifications,
    progress) and refuses server-initiated requests; so does this."""

    request_id: RequestId
    message_metadata: MessageMetadata
    transport: TransportContext = _TRANSPORT
    cancel_requested: anyio.Event = field(default_factory=anyio.Event)
    can_send_request: bool = False

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        return None

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return None


def ordinary_request(request: Request, body: bytes | None) -> JSONRPCRequest | None:
    """The request when the lean path may answer it (see the module), else None. `body` is
    None when it was not read whole within the size limit."""
    if body is None:
        return None
    headers = request.headers
    version = headers.get("mcp-protocol-version")
    if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    content_type = headers.get("content-type")
    if content_type is None or content_type.split(";")[0].strip().lower() != "application/json":
        return None
    has_json, _ = check_accept_headers(request)
    if not has_json:
        return None
    try:
        message = jsonrpc_message_adapter.validate_python(pydantic_core.from_json(body), by_name=False)
    except (ValueError, ValidationError):
        return None
    if not isinstance(message, JSONRPCRequest) or message.method not in LEAN_METHODS:
        return None
    return message


async def answer(server: Server[Any], lifespan_state: Any, request: Request, message: JSONRPCRequest) -> Response:
    """The SDK's reply to `message`, as the stateless JSON-response transport would send it."""
    version = request.headers.get("mcp-protocol-version") or DEFAULT_NEGOTIATED_VERSION
    metadata = ServerMessageMetadata(request_context=request, can_send_request=False)
    exchange = OneExchange(request_id=message.id, message_metadata=metadata)
    # Born ready, no back channel: as the stateless transport's connection is.
    connection = Connection.from_envelope(version, None, None)
    reply: JSONRPCResponse | JSONRPCError
    try:
        result = await serve_one(
            server, exchange, message.method, message.params, connection=connection, lifespan_state=lifespan_state
        )
        reply = JSONRPCResponse(jsonrpc="2.0", id=message.id, result=result)
    except Exception as exc:  # the dispatcher's exception-to-wire ladder, code 0 included
        error = handler_exception_to_error_data(exc)
        if error is None:
            _dispatcher_log.exception("handler for %r raised", message.method)
            error = ErrorData(code=0, message=str(exc))
        reply = JSONRPCError(jsonrpc="2.0", id=message.id, error=error)
    return Response(
        reply.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=200,
        headers={"Content-Type": "application/json"},
    )
