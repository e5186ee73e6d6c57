"""CSRF for every form of ours: a double submit bound to a purpose.

A random `jm_csrf` cookie, and in each form an HMAC of that cookie and what the form is for (an
authorization request id on the OAuth pages, "pages" on the person's pages). A cross-site page
can make the browser send the cookie, but it can neither read it nor compute the HMAC, so it
cannot forge a sign-in, an approval or a deletion. The HMAC key is derived for this one purpose:
the cookie is chosen by whoever sends it, so a MAC under the JWT key itself would sign whatever a
caller asks (issue 12, finding 1).
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from jean_memory import clock
from jean_memory.config import Settings

CSRF_COOKIE = "jm_csrf"
CSRF_FIELD = "csrf_token"
CSRF_KEY_PURPOSE = "csrf"


def set_browser_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    """Every cookie of ours: HttpOnly, SameSite=Lax, Secure under https, whole site."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.issuer_is_https,
    )


def csrf_cookie(request: Request) -> str:
    """The browser's CSRF cookie value, or a new one (the caller must set it on the response)."""
    return request.cookies.get(CSRF_COOKIE) or clock.new_token(nbytes=24)


def set_csrf_cookie(response: Response, settings: Settings, value: str) -> None:
    """Set on every page with a form, even when the browser has it: a page rendered just before
    the cookie expired would otherwise fail its submit while the form is still valid. The value
    stays the same, so forms open in other tabs stay valid too."""
    set_browser_cookie(response, settings, CSRF_COOKIE, value, settings.authorization_request_seconds * 6)


def _utf8(value: str) -> bytes:
    """Bytes of any str from outside, even one holding lone surrogates (never raises)."""
    return value.encode("utf-8", "surrogatepass")


def csrf_token(settings: Settings, cookie_value: str, purpose: str) -> str:
    """Only the current key: a form lives minutes, so a rotation costs at most one retry."""
    message = _utf8(cookie_value) + b":" + _utf8(purpose)
    return hmac.new(settings.derived_key(CSRF_KEY_PURPOSE), message, hashlib.sha256).hexdigest()


def csrf_valid(settings: Settings, request: Request, purpose: str, submitted: str | None) -> bool:
    cookie_value = request.cookies.get(CSRF_COOKIE)
    if not cookie_value or not submitted:
        return False
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (`csrf_token=%C3%A9`).
    return hmac.compare_digest(_utf8(csrf_token(settings, cookie_value, purpose)), _utf8(submitted))
