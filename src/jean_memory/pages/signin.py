"""`/signin` and `/signout`: the browser session the pages and the OAuth sign-in share.

Sign-in failures count against the same per-address limit as the OAuth sign-in form
(`SIGN_IN_FAILURES`), so a guesser gains nothing by switching forms. A successful sign-in
starts a new session (the cookie is rotated: a value planted before sign-in is worthless) and
ends the one the browser held.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jean_memory.accounts.browser_sessions import COOKIE_NAME, end_session, start_session
from jean_memory.accounts.users import authenticate
from jean_memory.oauth.browser import session_cookie, set_session_cookie
from jean_memory.oauth.throttle import sign_in_refused, sign_in_succeeded
from jean_memory.off_loop import run_db
from jean_memory.pages.context import PageDeps, checked_form, current_person, forbidden, render, safe_next, see_other

SIGN_IN_FAILED = "That email and password do not match an account. Check both and try again."


class SignInPages:
    def __init__(self, deps: PageDeps) -> None:
        self._deps = deps

    async def sign_in(self, request: Request) -> Response:
        deps = self._deps
        next_path = safe_next(request.query_params.get("next"))
        person = await current_person(deps, request)
        if request.method == "GET":
            if person is not None:
                return see_other(next_path)
            return render(deps, request, "pages/signin.html", None, next_path=next_path, email="")
        form = await checked_form(deps, request)
        if form is None:
            return forbidden(deps, request, person)
        next_path = safe_next(str(form.get("next") or "") or None)
        email = str(form.get("email") or "")[:320]
        password = str(form.get("password") or "")
        refused = await sign_in_refused(deps.engine, request)
        if refused:
            return render(
                deps, request, "pages/signin.html", None, 429, next_path=next_path, email=email, error=refused
            )
        user = await run_db(authenticate, deps.engine, email, password)
        if user is None:
            deps.oauth.metrics.sign_in_failures.inc()
            return render(
                deps, request, "pages/signin.html", None, 400, next_path=next_path, email=email, error=SIGN_IN_FAILED
            )
        await sign_in_succeeded(deps.engine, request)
        await run_db(end_session, deps.engine, session_cookie(request))
        token = await run_db(start_session, deps.engine, user.id, deps.settings.browser_session_days * 86400)
        response = see_other(next_path)
        set_session_cookie(response, deps.settings, token)
        return response

    async def sign_out(self, request: Request) -> Response:
        form = await checked_form(self._deps, request)
        if form is None:
            return forbidden(self._deps, request, await current_person(self._deps, request))
        await run_db(end_session, self._deps.engine, session_cookie(request))
        response = see_other("/")
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/signin", self.sign_in, methods=["GET", "POST"]),
            Route("/signout", self.sign_out, methods=["POST"]),
        ]
