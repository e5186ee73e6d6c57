"""What Claude sends and expects, so the doctor asks exactly what Claude would ask.

Sources: the MCP authorization specification (2025-06-18, 2025-11-25), Claude's own requests as
seen by connector servers, and the limits Claude applies (PROTOCOL.md in the project docs).
"""

from __future__ import annotations

from typing import Any

#: Claude gives each discovery, registration and token request this long.
BUDGET_SECONDS = 10.0

#: Where claude.ai sends the person back after authorization.
REDIRECT_URI = "https://claude.ai/api/mcp/auth_callback"

#: Claude's dynamic client registration request (RFC 7591), as Claude sends it.
REGISTRATION_BODY: dict[str, Any] = {
    "client_name": "claudeai",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "client_secret_post",
    "scope": "claudeai",
    "redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
}

#: The scope Claude asks for when the server names none it knows.
SCOPE = "claudeai"

#: A browser-based client (the MCP Inspector) runs on this origin; it needs CORS.
BROWSER_ORIGIN = "http://localhost:6274"

#: Claude's first request: an unauthenticated `initialize`. It decides on OAuth from the answer.
INITIALIZE_BODY: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "jean-memory-doctor", "version": "0.1"},
    },
}

#: Streamable HTTP requires clients to accept both JSON and an event stream (MCP transports).
PROBE_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
