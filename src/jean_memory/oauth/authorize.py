"""The authorization endpoint and the pages behind it: sign-in, consent, and the redirect back.

Order of checks follows RFC 6749 §4.1.2.1: while the client or its redirect URI is in doubt we
show an error page and never redirect (an open redirector otherwise); once both are known good,
every other problem goes back to the client as an error redirect carrying `state` and `iss`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from jean_memory.accounts.browser_sessions import session_user_id, start_session
from jean_memory.accounts.users import authenticate, get_user
from jean_memory.db import rate_limits
from jean_memory.db.rate_limits import AUTHORIZE_REQUESTS
from jean_memory.oauth import grants as grant_store
from jean_memory.oauth.browser import (
    csrf_cookie,
    csrf_token,
    csrf_valid,
    session_cookie,
    set_csrf_cookie,
    set_session_cookie,
)
from jean_memory.oauth.clients import Client
from jean_memory.oauth.display import consent_facts, https_host
from jean_memory.oauth.errors import ErrorCode, OAuthError
from jean_memory.oauth.forms import read_form, repeated
from jean_memory.oauth.guarded_fetch import CimdError
from jean_memory.oauth.redirects import matches_registered
from jean_memory.oauth.resource import resolve_resource
from jean_memory.oauth.scopes import can_write, describe, grantable_scope, read_only
from jean_memory.oauth.service import OAuthService
from jean_memory.oauth.throttle import client_address, over_limit, sign_in_refused, sign_in_succeeded
from jean_memory.off_loop import run_db
from jean_memory.web.templating import render_page

CODE_CHALLENGE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
MAX_STATE_CHARS = 512  # CONTRACT: a longer state gets the error page (the column holds 2048)
SIGN_IN_FAILED = "That email and password do not match an account. Check both and try again."
EXPIRED = "This sign-in link has expired or was already used. Go back to the app and connect again."


def error_page(title: str, message: str, status: int = 400, hint: str | None = None) -> Response:
    return render_page("error.html", status_code=status, title=title, message=message, hint=hint)


def _too_large_page(exc: OAuthError) -> Response:
    """A person's browser gets a page, not the JSON error the token endpoint answers."""
    return error_page(
        "Too much data",
        f"The form sent to this page was too large ({exc.description}).",
        status=exc.status,
        hint="Go back to the app and connect again.",
    )


def redirect_to_client(redirect_uri: str, params: dict[str, str | None]) -> RedirectResponse:
    parts = urlsplit(redirect_uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return RedirectResponse(
        urlunsplit(parts._replace(query=query)), status_code=302, headers={"Cache-Control": "no-store"}
    )


class AuthorizationEndpoints:
    def __init__(self, service: OAuthService) -> None:
        self._service = service
        self._settings = service.settings

    # --- GET /oauth/authorize -------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        if await over_limit(self._service, request, AUTHORIZE_REQUESTS):
            # Each request may store a pending authorization and fetch a metadata document.
            wait = rate_limits.retry_after(AUTHORIZE_REQUESTS)
            response = error_page(
                "Too many requests",
                f"Too many connection attempts came from your network. Try again in {wait} seconds.",
                status=429,
            )
            response.headers["Retry-After"] = str(wait)
            return response
        try:
            params = request.query_params if request.method == "GET" else await read_form(request)
        except OAuthError as exc:
            return _too_large_page(exc)
        twice = repeated(params.multi_items(), may_repeat=frozenset({"resource"}))
        if twice in ("client_id", "redirect_uri", "state"):
            # Which app, where to send the answer, or what to echo is ambiguous: never redirect.
            return error_page(
                "Request not understood",
                f"The app sent the parameter {twice} more than once, so it is unclear what it asked for. "
                "Nothing was sent.",
                hint="This is a problem on the app's side: tell its developer what this page says.",
            )
        client_id = params.get("client_id")
        try:
            client = await self._service.resolve_client_async(client_id, client_address(request))
        except CimdError as exc:
            # A metadata document URL whose document cannot be used: its redirect URIs are unknown,
            # so this is a page, never a redirect.
            host = https_host(client_id)  # never the client_id itself: its text is the requester's
            where = f"by an address on {host}" if host else "by a web address"
            return error_page(
                "This app could not be verified",
                f"The app identifies itself {where}, but the details published there cannot be used: {exc.message}.",
                hint="Nothing was sent to the app. This is a problem on the app's side, not with your account: "
                "try again later, and if it keeps happening, tell the app's developer what this page says.",
            )
        if client is None:
            return error_page(
                "Unknown app",
                "This app is not registered with this server (or its registration expired).",
                hint="Remove the connector in your app and add it again.",
            )
        redirect_uri = self._pick_redirect_uri(client, params.get("redirect_uri"))
        if redirect_uri is None:
            return error_page(
                "Redirect address not allowed",
                "The app asked to be sent back to an address it did not register. Nothing was sent.",
                hint="If you did not start this connection yourself, close this page.",
            )
        state = params.get("state")
        if state is not None and len(state) > MAX_STATE_CHARS:
            # A page, not a redirect: the error redirect would have to echo this very state.
            return error_page(
                "This app sent too long a request",
                f"The app's state parameter is {len(state)} characters long; "
                f"this server accepts at most {MAX_STATE_CHARS}. Nothing was sent to the app.",
                hint="This is a problem on the app's side: tell the app's developer what this page says.",
            )
        if twice is not None:  # RFC 6749 §4.1.2.1: a repeated parameter is invalid_request
            description = f"the parameter {twice} was sent more than once"
            return self._error_redirect(redirect_uri, "invalid_request", description, state)
        try:
            pending = self._validate(client, redirect_uri, params)
        except OAuthError as exc:
            return self._error_redirect(redirect_uri, exc.error, exc.description, state)

        user_id = await run_db(session_user_id, self._service.engine, session_cookie(request))
        if pending.wants("login"):
            user_id = None  # OIDC prompt=login: ask again even when signed in
        if pending.wants("none"):
            return await self._without_interaction(client, pending, user_id)
        if user_id is not None:
            pending = replace(pending, user_id=user_id)
        session_id = await run_db(
            grant_store.save_pending, self._service.engine, pending, self._settings.authorization_request_seconds
        )
        if user_id is None:
            return self._login_page(request, client, session_id)
        return await self._consent_or_code(request, client, pending, session_id, user_id)

    async def _without_interaction(
        self, client: Client, pending: grant_store.PendingAuthorization, user_id: str | None
    ) -> Response:
        """OIDC prompt=none: a code when no page would be shown, else the error naming the page."""
        engine = self._service.engine
        if user_id is None:
            return self._error_redirect(
                pending.redirect_uri, "login_required", "the person is not signed in", pending.state
            )
        remembered = await self._remembered(client, pending, user_id)
        if remembered is None:
            return self._error_redirect(
                pending.redirect_uri, "consent_required", "the person has not approved this app", pending.state
            )
        pending = replace(pending, user_id=user_id, scope=remembered)
        session_id = await run_db(
            grant_store.save_pending, engine, pending, self._settings.authorization_request_seconds
        )
        return await self._issue_code(pending, session_id, user_id, remember=False)

    def _pick_redirect_uri(self, client: Client, requested: str | None) -> str | None:
        if not requested:
            # OAuth 2.1 §4.1.1: optional only when exactly one is registered.
            return client.redirect_uris[0] if len(client.redirect_uris) == 1 else None
        return requested if matches_registered(requested, client.redirect_uris) else None

    def _validate(
        self, client: Client, redirect_uri: str, params: ImmutableMultiDict[str, str]
    ) -> grant_store.PendingAuthorization:
        response_type = params.get("response_type")
        if not response_type:
            # RFC 6749 §4.1.2.1: a missing parameter is invalid_request; unsupported_response_type
            # is for a value we do not serve.
            raise OAuthError("invalid_request", "response_type is required; use code")
        if response_type != "code":
            raise OAuthError("unsupported_response_type", "response_type must be code")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if not challenge:
            raise OAuthError("invalid_request", "PKCE is required: send code_challenge with method S256")
        if method != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256 (plain is not allowed)")
        if not CODE_CHALLENGE.match(challenge):
            raise OAuthError("invalid_request", "code_challenge must be 43-128 base64url characters")
        resources = params.getlist("resource")
        if len(resources) > 1:
            raise OAuthError("invalid_target", "only one resource may be requested")
        resource = resolve_resource(resources[0] if resources else None, self._settings.resource)
        return grant_store.PendingAuthorization(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            redirect_uri_given=bool(params.get("redirect_uri")),
            code_challenge=challenge,
            state=params.get("state"),
            scope=grantable_scope(params.get("scope") or client.scope),
            resource=resource,
            user_id=None,
            prompt=(params.get("prompt") or "")[:100] or None,
        )

    def _error_redirect(self, redirect_uri: str, error: ErrorCode, description: str, state: str | None) -> Response:
        return redirect_to_client(
            redirect_uri,
            {"error": error, "error_description": description, "state": state, "iss": self._settings.issuer},
        )

    # --- pages ----------------------------------------------------------------------------------

    def _login_page(
        self,
        request: Request,
        client: Client,
        session_id: str,
        error: str | None = None,
        email: str = "",
        status: int | None = None,
    ) -> Response:
        cookie = csrf_cookie(request)
        response = render_page(
            "login.html",
            status_code=status or (400 if error else 200),
            client_name=client.client_name,
            session_id=session_id,
            csrf_token=csrf_token(self._settings, cookie, session_id),
            error=error,
            email=email,
            signup=self._settings.signup,
        )
        set_csrf_cookie(response, self._settings, cookie)
        return response

    async def _consent_or_code(
        self,
        request: Request,
        client: Client,
        pending: grant_store.PendingAuthorization,
        session_id: str,
        user_id: str,
    ) -> Response:
        engine = self._service.engine
        remembered = None if pending.wants("consent") else await self._remembered(client, pending, user_id)
        if remembered is not None:
            return await self._issue_code(replace(pending, scope=remembered), session_id, user_id, remember=False)
        user = await run_db(get_user, engine, user_id)
        cookie = csrf_cookie(request)
        response = render_page(
            "consent.html",
            client_name=client.client_name,
            email=user.email if user else "",
            **consent_facts(client, pending.redirect_uri),
            scope_descriptions=describe(pending.scope),
            asks_write=can_write(pending.scope.split()),
            session_id=session_id,
            csrf_token=csrf_token(self._settings, cookie, session_id),
        )
        set_csrf_cookie(response, self._settings, cookie)
        return response

    async def _remembered(self, client: Client, pending: grant_store.PendingAuthorization, user_id: str) -> str | None:
        """The scope to grant without a page, or None to ask. Only when the person approved this
        client for this scope (or read-only: `within_consent`) and this exact redirect URI, and
        never for a public client sending codes to a loopback or private-scheme URI: any program
        on the machine can listen there, and with no secret to hold it back it would get the
        person's tokens unseen (RFC 8252 §8.6, RFC 9700 §4.1)."""
        if client.is_public and urlsplit(pending.redirect_uri).scheme.lower() != "https":
            return None  # registration allows http for loopback only; any other scheme is private-use
        return await run_db(
            grant_store.consented_scope,
            self._service.engine,
            user_id,
            client.client_id,
            pending.scope,
            pending.redirect_uri,
        )

    async def _issue_code(
        self, pending: grant_store.PendingAuthorization, session_id: str, user_id: str, remember: bool
    ) -> Response:
        engine = self._service.engine
        if not await run_db(grant_store.finish_pending, engine, session_id):
            return error_page("Link already used", EXPIRED)
        code = await run_db(grant_store.issue_code, engine, pending, user_id, self._settings.code_seconds, remember)
        return redirect_to_client(
            pending.redirect_uri, {"code": code, "state": pending.state, "iss": self._settings.issuer}
        )

    # --- POST /oauth/complete (sign-in form) ----------------------------------------------------

    async def complete(self, request: Request) -> Response:
        session_id = request.query_params.get("session_id") or ""
        engine = self._service.engine
        pending = await run_db(grant_store.load_pending, engine, session_id)
        if pending is None:
            return error_page("Sign-in expired", EXPIRED)
        client = await self._service.client_async(pending.client_id)
        if client is None:
            return error_page("Unknown app", "This app's registration is gone. Connect again from the app.")
        try:
            form = await read_form(request)
        except OAuthError as exc:
            return _too_large_page(exc)
        if not csrf_valid(self._settings, request, session_id, form.get("csrf_token")):
            return error_page(
                "Please try again",
                "The sign-in form was stale or came from another site.",
                status=403,
                hint="Go back to the app and start connecting again; make sure cookies are enabled.",
            )
        email = form.get("email") or ""
        password = form.get("password") or ""
        refused = await sign_in_refused(engine, request)
        if refused:
            return self._login_page(request, client, session_id, error=refused, email=email[:320], status=429)
        user = await run_db(authenticate, engine, email, password)
        if user is None:
            self._service.metrics.sign_in_failures.inc()
            return self._login_page(request, client, session_id, error=SIGN_IN_FAILED, email=email[:320])
        await sign_in_succeeded(engine, request)
        await run_db(grant_store.attach_user, engine, session_id, user.id)
        token = await run_db(start_session, engine, user.id, self._settings.browser_session_days * 86400)
        pending = replace(pending, user_id=user.id)
        response = await self._consent_or_code(request, client, pending, session_id, user.id)
        set_session_cookie(response, self._settings, token)
        return response

    # --- POST /oauth/consent --------------------------------------------------------------------

    async def consent(self, request: Request) -> Response:
        session_id = request.query_params.get("session_id") or ""
        engine = self._service.engine
        pending = await run_db(grant_store.load_pending, engine, session_id)
        if pending is None or pending.user_id is None:
            return error_page("Approval expired", EXPIRED)
        try:
            form = await read_form(request)
        except OAuthError as exc:
            return _too_large_page(exc)
        if not csrf_valid(self._settings, request, session_id, form.get("csrf_token")):
            return error_page("Please try again", "The approval form was stale or came from another site.", 403)
        signed_in = await run_db(session_user_id, engine, session_cookie(request))
        if signed_in != pending.user_id:
            return error_page("Signed out", "Your sign-in session ended. Go back to the app and connect again.", 403)
        decision = form.get("decision")
        if decision == "approve":
            if can_write(pending.scope.split()) and not form.get("allow_write"):
                # `allow_write` unchecked (a browser sends nothing for it): a read-only grant, and
                # the remembered consent records exactly that, so no later silent approval widens it.
                pending = replace(pending, scope=read_only(pending.scope))
            return await self._issue_code(pending, session_id, pending.user_id, remember=True)
        if decision == "deny":
            await run_db(grant_store.finish_pending, engine, session_id)
            return self._error_redirect(
                pending.redirect_uri, "access_denied", "the person denied access", pending.state
            )
        return error_page("Choose Allow or Deny", "The form was sent without a decision.")
