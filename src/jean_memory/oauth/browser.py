"""What the sign-in pages keep in the browser: the sign-in session cookie. CSRF lives in
`web/csrf.py`, shared with the person's pages; the OAuth forms bind it to the authorization
request id."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from jean_memory.accounts.browser_sessions import COOKIE_NAME as SESSION_COOKIE
from jean_memory.config import Settings
from jean_memory.web.csrf import CSRF_COOKIE, csrf_cookie, csrf_token, csrf_valid, set_browser_cookie, set_csrf_cookie

__all__ = [
    "CSRF_COOKIE",
    "csrf_cookie",
    "csrf_token",
    "csrf_valid",
    "session_cookie",
    "set_csrf_cookie",
    "set_session_cookie",
]


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    set_browser_cookie(response, settings, SESSION_COOKIE, token, settings.browser_session_days * 86400)


def session_cookie(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)
