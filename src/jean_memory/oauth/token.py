"""The token endpoint: `authorization_code` (with PKCE) and `refresh_token` grants.

Every answer is JSON with `Cache-Control: no-store`; every failure carries the RFC 6749 §5.2
code clients branch on (`invalid_grant` for any dead code or refresh token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re

from starlette.requests import Request
from starlette.responses import JSONResponse

from jean_memory.db.rate_limits import TOKEN_REQUESTS
from jean_memory.oauth import grants as grant_store
from jean_memory.oauth.client_auth import authenticate_client
from jean_memory.oauth.clients import Client
from jean_memory.oauth.errors import NO_STORE, OAuthError
from jean_memory.oauth.forms import check_single, read_form
from jean_memory.oauth.resource import resolve_resource
from jean_memory.oauth.scopes import is_subset
from jean_memory.oauth.service import OAuthService
from jean_memory.oauth.throttle import over_limit, too_many_requests
from jean_memory.off_loop import run_db

CODE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # fullmatch: `$` would allow a final newline
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
logger = logging.getLogger("jean_memory.oauth")


def pkce_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6. Compared as bytes: compare_digest raises TypeError on a non-ASCII str."""
    digest = hashlib.sha256(verifier.encode("utf-8", "surrogatepass")).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=")
    return hmac.compare_digest(expected, challenge.encode("utf-8", "surrogatepass"))


class TokenEndpoint:
    def __init__(self, service: OAuthService) -> None:
        self._service = service

    async def __call__(self, request: Request) -> JSONResponse:
        if await over_limit(self._service, request, TOKEN_REQUESTS):
            return too_many_requests(TOKEN_REQUESTS)
        try:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in FORM_TYPES:
                raise OAuthError(
                    "invalid_request", "the token request must be form-encoded (application/x-www-form-urlencoded)"
                )
            form = await read_form(request)
            check_single(form)
            client = await authenticate_client(self._service, request, form)
            request.state.client_id = client.client_id
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                body = await self._authorization_code(client, form)
            elif grant_type == "refresh_token":
                body = await self._refresh(client, form)
            elif not grant_type:
                raise OAuthError("invalid_request", "grant_type is required")
            else:
                raise OAuthError(
                    "unsupported_grant_type",
                    f"grant_type {grant_type!r} is not supported here; use authorization_code or refresh_token",
                )
        except OAuthError as exc:
            return exc.response()
        self._service.metrics.tokens.labels(str(grant_type)).inc()
        return JSONResponse(body, headers=NO_STORE)

    def _check_grant_type(self, client: Client, grant_type: str) -> None:
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client did not register the {grant_type} grant")

    async def _authorization_code(self, client: Client, form) -> dict:  # type: ignore[no-untyped-def]
        self._check_grant_type(client, "authorization_code")
        code = form.get("code")
        verifier = form.get("code_verifier")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        if not verifier:
            raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
        engine = self._service.engine
        try:
            redemption = await run_db(grant_store.redeem_code, engine, code, client.client_id)
        except grant_store.CodeReplayed as exc:
            await run_db(self._service.revoke, exc.grant_id, "code_replay")
            logger.warning("authorization code replayed; grant revoked (client %s)", client.client_id)
            raise OAuthError("invalid_grant", "the authorization code was already used; sign in again") from exc
        if redemption is None:
            raise OAuthError("invalid_grant", "the authorization code is unknown or was issued to another client")
        if redemption.expired:
            raise OAuthError("invalid_grant", "the authorization code has expired; sign in again")
        if redemption.grant.revoked:
            raise OAuthError("invalid_grant", "the authorization has been revoked")
        redirect_uri = form.get("redirect_uri")
        # RFC 6749 §4.1.3: required, and identical, when the authorization request carried it;
        # a client that left it out there may leave it out here (if sent anyway, it must match).
        if (redemption.redirect_uri_given or redirect_uri is not None) and redirect_uri != redemption.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the one used to get the code")
        if not CODE_VERIFIER.fullmatch(verifier) or not pkce_matches(verifier, redemption.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (PKCE)")
        self._check_resource(form, redemption.grant)
        return await run_db(self._service.token_response, redemption.grant, client)

    async def _refresh(self, client: Client, form) -> dict:  # type: ignore[no-untyped-def]
        self._check_grant_type(client, "refresh_token")
        token = form.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        # Scope and resource are checked before the token is rotated: a refused refresh must
        # leave it as it was (RFC 6749 §6), or the client's one retry after the grace window
        # would count as reuse and revoke the grant. A grant's scope and resource never change.
        scope = form.get("scope")
        known = await run_db(grant_store.find_refresh_grant, self._service.engine, token)
        if known is not None and known.client_id == client.client_id:
            self._check_scope_and_resource(form, scope, known)
        try:
            settings = self._service.settings
            grant, successor = await run_db(
                grant_store.rotate_refresh_token,
                self._service.engine,
                token,
                client.client_id,
                settings.refresh_grace_seconds,
                self._service.refresh_successor_keys,
                settings.refresh_token_days * 86400,
            )
        except grant_store.RefreshRejected as exc:
            if exc.revoke_grant_id:
                await run_db(self._service.revoke, exc.revoke_grant_id, "refresh_reuse")
                logger.warning("refresh token reused after rotation; grant revoked (client %s)", client.client_id)
            raise OAuthError("invalid_grant", exc.description) from exc
        return await run_db(self._service.token_response, grant, client, scope or None, successor)

    def _check_scope_and_resource(self, form, scope: str | None, grant: grant_store.Grant) -> None:  # type: ignore[no-untyped-def]
        if scope and not is_subset(scope, grant.scope):
            raise OAuthError("invalid_scope", f"scope may only narrow the granted {grant.scope!r}")
        self._check_resource(form, grant)

    def _check_resource(self, form, grant: grant_store.Grant) -> None:  # type: ignore[no-untyped-def]
        resources = form.getlist("resource")
        if len(resources) > 1:
            raise OAuthError("invalid_target", "only one resource may be requested")
        if resources and resolve_resource(resources[0], self._service.settings.resource) != grant.resource:
            raise OAuthError("invalid_target", "resource differs from the one authorized")
