"""OAuth error answers: the RFC 6749 JSON body with the exact code clients branch on."""

from __future__ import annotations

from typing import Literal

from starlette.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

#: Every `error` code the authorization server sends, and only those: clients branch on the
#: exact string, so a new one is a change of contract (a type checker catches a typo).
ErrorCode = Literal[
    # RFC 6749 §5.2 (token endpoint)
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    # RFC 6749 §4.1.2.1 (authorization endpoint, on the redirect)
    "unsupported_response_type",
    "access_denied",
    # OpenID Connect Core §3.1.2.6 (prompt=none)
    "login_required",
    "consent_required",
    # RFC 8707 §2 (resource indicators)
    "invalid_target",
    # RFC 7591 §3.2.2 (dynamic client registration)
    "invalid_redirect_uri",
    "invalid_client_metadata",
    # Ours, in the same body shape: the rate limits' 429 (oauth/throttle.py)
    "too_many_requests",
]


class OAuthError(Exception):
    """An error the standard names; `status` follows RFC 6749 §5.2 (401 for invalid_client)."""

    def __init__(self, error: ErrorCode, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def response(self, extra_headers: dict[str, str] | None = None) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="jean-memory"'
        headers.update(extra_headers or {})
        return JSONResponse(
            {"error": self.error, "error_description": self.description}, status_code=self.status, headers=headers
        )
