"""What the sign-in pages keep in the browser: the sign-in session cookie and the CSRF binding.

CSRF is a double submit: a random `jm_csrf` cookie, and in each form an HMAC of that cookie and
the authorization request id. A cross-site page can make the browser send the cookie, but it
can neither read it nor compute the HMAC, so it cannot forge a sign-in or an approval. The HMAC
key is derived for this one purpose: the cookie is chosen by whoever sends it, so a MAC under the
JWT key itself would sign whatever a caller asks (issue 12, finding 1).
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from jean_memory import clock
from jean_memory.accounts.browser_sessions import COOKIE_NAME as SESSION_COOKIE
from jean_memory.config import Settings

CSRF_COOKIE = "jm_csrf"


def _set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.issuer_is_https,
    )


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    _set_cookie(response, settings, SESSION_COOKIE, token, settings.browser_session_days * 86400)


def session_cookie(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def csrf_cookie(request: Request) -> str:
    """The browser's CSRF cookie value, or a new one (the caller must set it on the response)."""
    return request.cookies.get(CSRF_COOKIE) or clock.new_token(nbytes=24)


def set_csrf_cookie(response: Response, settings: Settings, value: str) -> None:
    """Set on every page with a form, even when the browser has it: a page rendered just before
    the cookie expired would otherwise fail its submit while the form is still valid. The value
    stays the same, so forms open in other tabs stay valid too."""
    _set_cookie(response, settings, CSRF_COOKIE, value, settings.authorization_request_seconds * 6)


CSRF_KEY_PURPOSE = "csrf"


def _utf8(value: str) -> bytes:
    """Bytes of any str from outside, even one holding lone surrogates (never raises)."""
    return value.encode("utf-8", "surrogatepass")


def csrf_token(settings: Settings, cookie_value: str, session_id: str) -> str:
    """Only the current key: a form lives minutes, so a rotation costs at most one retry."""
    message = _utf8(cookie_value) + b":" + _utf8(session_id)
    return hmac.new(settings.derived_key(CSRF_KEY_PURPOSE), message, hashlib.sha256).hexdigest()


def csrf_valid(settings: Settings, request: Request, session_id: str, submitted: str | None) -> bool:
    cookie_value = request.cookies.get(CSRF_COOKIE)
    if not cookie_value or not submitted:
        return False
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (`csrf_token=%C3%A9`).
    return hmac.compare_digest(_utf8(csrf_token(settings, cookie_value, session_id)), _utf8(submitted))
