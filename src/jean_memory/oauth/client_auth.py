"""Client authentication at the token and revocation endpoints (RFC 6749 §2.3, OAuth 2.1 §2.4).

A client authenticates the way it registered: `none` (client_id only, PKCE protects the code),
`client_secret_post` or `client_secret_basic`. An unknown client or a wrong secret is a 401
`invalid_client`, which makes Claude register again.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from starlette.datastructures import FormData
from starlette.requests import Request

from jean_memory.oauth.clients import Client
from jean_memory.oauth.errors import OAuthError
from jean_memory.oauth.service import OAuthService


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_client", "the Basic authorization header is not valid base64", 401) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "the Basic authorization header must hold client_id:client_secret", 401)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)


async def authenticate_client(service: OAuthService, request: Request, form: FormData) -> Client:
    basic = _basic_credentials(request)
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    if basic and form_secret:
        raise OAuthError("invalid_request", "send the client secret in one way only (Basic header or form)")
    client_id = basic[0] if basic else (str(form_id) if form_id else None)
    if basic and form_id and str(form_id) != basic[0]:
        raise OAuthError("invalid_client", "client_id in the form differs from the Basic header", 401)
    if not client_id:
        raise OAuthError("invalid_client", "client_id is required (form field or Basic header)", 401)
    client = await service.client_async(client_id)
    if client is None:
        raise OAuthError("invalid_client", "unknown client_id; register the client again", 401)
    if client.is_public:  # a stray secret from a public client proves nothing and harms nothing
        return client
    secret = basic[1] if basic else (str(form_secret) if form_secret else None)
    if not client.secret_matches(secret):
        raise OAuthError("invalid_client", "client authentication failed: missing or wrong client_secret", 401)
    return client
