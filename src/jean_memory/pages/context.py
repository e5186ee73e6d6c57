"""What every page handler shares: its dependencies, who is signed in, rendering with the
layout's navigation and a CSRF token, and the CSRF check of a POST.

One browser session (the `jm_session` cookie, hashed in `browser_sessions`) serves both the
OAuth sign-in and these pages. The CSRF token of the pages is bound to the browser's CSRF
cookie and the purpose "pages" (`web/csrf.py`); a POST without it, or with a wrong one, is 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy.engine import Engine
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from jean_memory import clock
from jean_memory.accounts.browser_sessions import SignedIn, signed_in
from jean_memory.config import Settings
from jean_memory.memory.service import MemoryService
from jean_memory.oauth.browser import session_cookie
from jean_memory.oauth.errors import OAuthError
from jean_memory.oauth.forms import read_form
from jean_memory.oauth.service import OAuthService
from jean_memory.off_loop import run_db
from jean_memory.pages import when
from jean_memory.web.csrf import CSRF_FIELD, csrf_cookie, csrf_token, csrf_valid, set_csrf_cookie
from jean_memory.web.templating import PAGE_HEADERS, render_page

PAGES_PURPOSE = "pages"
MAX_FORM_BYTES = 256 * 1024  # a memory's text and tags, or a few hundred selected ids


@dataclass(frozen=True)
class PageDeps:
    """Everything a page handler may use, built once by the app."""

    engine: Engine
    settings: Settings
    memory: MemoryService
    oauth: OAuthService


async def current_person(deps: PageDeps, request: Request) -> SignedIn | None:
    return await run_db(signed_in, deps.engine, session_cookie(request))


def pages_purpose(request: Request) -> str:
    """What the pages' CSRF token is for: "pages", bound to the browser session when there is
    one. Bound to the cookie alone, a (cookie, token) pair anyone fetches for themselves would
    work in the person's browser once that cookie is planted there (a sibling subdomain, a
    network attacker on plain http); bound to the session, only pages shown to this session
    carry a token it accepts. Only the session's hash goes into the MAC."""
    session = session_cookie(request)
    return f"{PAGES_PURPOSE}:{clock.sha256_hex(session)}" if session else PAGES_PURPOSE


def render(
    deps: PageDeps,
    request: Request,
    template: str,
    person: SignedIn | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """A page in the one layout: navigation and "Sign out" when signed in, and a CSRF token
    (`csrf_token` in the template) for any form on it, with its cookie set."""
    cookie = csrf_cookie(request)
    response = render_page(
        template,
        status_code=status_code,
        person=person,
        path=request.url.path,
        csrf_field=CSRF_FIELD,
        csrf_token=csrf_token(deps.settings, cookie, pages_purpose(request)),
        connector_url=deps.settings.resource,
        when=when.shown,
        iso_time=when.iso,
        **context,
    )
    set_csrf_cookie(response, deps.settings, cookie)
    return response


def not_found(deps: PageDeps, request: Request, person: SignedIn | None) -> Response:
    """The one answer for an unknown id and for another person's: nothing tells them apart."""
    return render(deps, request, "pages/not_found.html", person, status_code=404)


def forbidden(deps: PageDeps, request: Request, person: SignedIn | None) -> Response:
    return render(deps, request, "pages/forbidden.html", person, status_code=403)


def safe_next(value: str | None, default: str = "/memories") -> str:
    """Where to go after sign-in: only a path on this site. `//evil.example`, `/\\evil`,
    `https://evil.example` and anything with a scheme or host fall back to the default."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in value):
        return default
    return value


def to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303, headers=PAGE_HEADERS)


def see_other(path: str) -> RedirectResponse:
    """After a successful POST: 303, so a reload does not send the form again. With the pages'
    headers like any page (no-store: its Location may carry a search or where the person was)."""
    return RedirectResponse(path, status_code=303, headers=PAGE_HEADERS)


PageHandler = Callable[[Request, SignedIn], Awaitable[Response]]


def signed_in_page(deps: PageDeps) -> Callable[[PageHandler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler that needs a signed-in person: GETs without one go to the sign-in page
    (and come back after it); POSTs without one are 403, like a POST with a bad CSRF token."""

    def wrap(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
        @wraps(handler)
        async def page(request: Request) -> Response:
            person = await current_person(deps, request)
            if person is None:
                if request.method == "GET":
                    return to_sign_in(request)
                return forbidden(deps, request, None)
            return await handler(request, person)

        return page

    return wrap


async def checked_form(deps: PageDeps, request: Request) -> ImmutableMultiDict[str, str] | None:
    """The POSTed form's text fields when its CSRF field is right, else None (the caller answers
    403). The body is read under MAX_FORM_BYTES as it arrives (a chunked body has no
    Content-Length to check first; `oauth.forms.read_form`, like the OAuth forms), and a field
    that is no valid Unicode (a lone surrogate, through a multipart charset) is refused the same
    way rather than failing later in the database or the password hasher."""
    try:
        form = await read_form(request, MAX_FORM_BYTES)
    except OAuthError:
        return None
    submitted = form.get(CSRF_FIELD)
    if not submitted or not csrf_valid(deps.settings, request, pages_purpose(request), submitted):
        return None
    return form
