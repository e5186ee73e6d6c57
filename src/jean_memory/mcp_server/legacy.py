"""The seed's per-client URL `/mcp/v2/{client_name}/{user_id}`, kept for old configurations.

The seed trusted the user id in the URL, so anyone could read anyone's memories; now the
request must carry an API key (`X-Api-Key: jm_sk_...`) of the very user the URL names, and then
runs the same MCP code path as `/mcp`.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from jean_memory.accounts.api_keys import api_key_user_id
from jean_memory.accounts.users import get_user
from jean_memory.mcp_server.endpoint import McpEndpoint, send_json
from jean_memory.mcp_server.principal import Principal
from jean_memory.mcp_server.profiles import profile_for
from jean_memory.oauth.scopes import MEMORY_SCOPE
from jean_memory.off_loop import run_db


class LegacyEndpoint:
    """API keys and their users are looked up in `engine` (accounts/); the rest is `/mcp`'s."""

    def __init__(self, mcp: McpEndpoint, engine: Engine) -> None:
        self._mcp = mcp
        self._engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        cors = await self._mcp.cors_or_reject(scope, headers, send)
        if cors is None:
            return
        params = scope.get("path_params", {})
        client_name, user_id = params.get("client_name", ""), params.get("user_id", "")
        key_owner = await run_db(api_key_user_id, self._engine, headers.get("x-api-key"))
        if key_owner is None:
            await send_json(
                send,
                401,
                {
                    "error": "invalid_api_key",
                    "error_description": "send X-Api-Key: jm_sk_... (jean-memory apikey create)",
                },
                # RFC 9110 §15.5.2: a 401 names how to authenticate; this route's scheme is the key header.
                [(b"www-authenticate", b'ApiKey header="X-Api-Key"'), *cors],
            )
            return
        if key_owner != user_id:
            await send_json(
                send, 403, {"error": "forbidden", "error_description": "this API key belongs to another user"}, cors
            )
            return
        user = await run_db(get_user, self._engine, user_id)
        principal = Principal(
            user_id=user_id,
            email=user.email if user else "",
            profile=profile_for(client_name),
            client_id=f"legacy:{client_name}",
            scopes=(MEMORY_SCOPE,),
        )
        scope.setdefault("state", {})["principal"] = principal
        await self._mcp.dispatch(principal, scope, receive, send, cors)
