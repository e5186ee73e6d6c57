"""RFC 7009 token revocation: a refresh token or an access token ends its whole grant.

Unknown or foreign tokens still get 200 (§2.2), so the endpoint reveals nothing about tokens.
(Which grants are revoked, as the MCP endpoint asks on every request: `revoked_grants.py`.)
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from jean_memory.db.rate_limits import REVOCATIONS
from jean_memory.oauth import grants as grant_store
from jean_memory.oauth.client_auth import authenticate_client
from jean_memory.oauth.errors import NO_STORE, OAuthError
from jean_memory.oauth.forms import check_single, read_form
from jean_memory.oauth.jwt_tokens import InvalidAccessToken
from jean_memory.oauth.service import OAuthService
from jean_memory.oauth.throttle import over_limit, too_many_requests
from jean_memory.off_loop import run_db


class RevocationEndpoint:
    def __init__(self, service: OAuthService) -> None:
        self._service = service

    async def __call__(self, request: Request) -> Response:
        if await over_limit(self._service, request, REVOCATIONS):
            return too_many_requests(REVOCATIONS)
        try:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request", "the revocation request must be form-encoded")
            form = await read_form(request)
            check_single(form)
            client = await authenticate_client(self._service, request, form)
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            grant_id = await run_db(self._grant_of, token)
            if grant_id is not None:
                grant = await run_db(grant_store.get_grant, self._service.engine, grant_id)
                if grant is not None and grant.client_id == client.client_id:
                    await run_db(self._service.revoke, grant.id, "rfc7009")
        except OAuthError as exc:
            return exc.response()
        return JSONResponse({}, headers=NO_STORE)

    def _grant_of(self, token: str) -> str | None:
        if token.startswith(grant_store.REFRESH_PREFIX):
            grant = grant_store.find_refresh_grant(self._service.engine, token)
            return grant.id if grant else None
        try:
            return self._service.verify(token).grant_id
        except InvalidAccessToken:
            return None
