"""`/setup` (the first account, from the link `serve` prints on first run) and `/join`
(sign-up, as `JEAN_MEMORY_SIGNUP` allows: with an invite, open to anyone, or closed).

Both create the account and sign the person in (a new browser session, the old one ended). A
link that is wrong, used up or expired, and a setup link once an account exists, get one 404
page that says only that the link cannot be used: nothing tells which, or whether accounts exist.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jean_memory.accounts.browser_sessions import SignedIn, end_session, start_session
from jean_memory.accounts.invites import INVITE, SETUP, Link, LinkInvalid, find_link, redeem, sign_up_open
from jean_memory.accounts.passwords import MIN_PASSWORD_LENGTH, WeakPasswordError
from jean_memory.accounts.users import AccountError, User
from jean_memory.oauth.browser import session_cookie, set_session_cookie
from jean_memory.oauth.throttle import sign_up_refused
from jean_memory.off_loop import run_db
from jean_memory.pages.context import PageDeps, checked_form, current_person, forbidden, render, see_other

LINK_INVALID = (
    "This link cannot be used: it is wrong, was used already, or has expired. Ask for a new one "
    "(the administrator's page makes invites; a server with no account prints a new setup link on each start)."
)
SIGNUP_CLOSED = "This server does not take sign-ups. Ask its administrator to create an account for you."
INVITE_NEEDED = "Sign-up here is by invitation. Ask the administrator for an invite link."
PASSWORDS_DIFFER = "The two passwords differ. Type the same password twice."


class SignUpPages:
    def __init__(self, deps: PageDeps) -> None:
        self._deps = deps

    def _refused(self, request: Request, person: SignedIn | None, status: int, message: str) -> Response:
        heading = "This link cannot be used" if status == 404 else "No sign-up here"
        return render(
            self._deps, request, "pages/signup_refused.html", person, status, heading=heading, message=message
        )

    def _form(
        self,
        request: Request,
        person: SignedIn | None,
        kind: str,
        token: str,
        link: Link | None,
        status: int = 200,
        email: str = "",
        error: str = "",
    ) -> Response:
        return render(
            self._deps,
            request,
            "pages/signup.html",
            person,
            status,
            kind=kind,
            token=token,
            bound_email=link.email if link else None,
            email=(link.email if link and link.email else email),
            error=error,
            min_length=MIN_PASSWORD_LENGTH,
        )

    async def setup(self, request: Request) -> Response:
        return await self._page(request, SETUP, "token")

    async def join(self, request: Request) -> Response:
        return await self._page(request, INVITE, "invite")

    async def _page(self, request: Request, kind: str, param: str) -> Response:
        deps = self._deps
        person = await current_person(deps, request)
        policy = "invite" if kind == SETUP else deps.settings.signup
        if policy == "closed":
            return self._refused(request, person, 403, SIGNUP_CLOSED)
        form = None
        if request.method == "POST":
            form = await checked_form(deps, request)
            if form is None:
                return forbidden(deps, request, person)
            token = str(form.get(param) or "")
        else:
            token = request.query_params.get(param, "")
        link = None
        if policy == "invite":
            if not token and kind == INVITE:
                return self._refused(request, person, 403, INVITE_NEEDED)
            link = await run_db(find_link, deps.engine, kind, token)
            if link is None:
                return self._refused(request, person, 404, LINK_INVALID)
        if form is None:
            return self._form(request, person, kind, token, link)
        email = str(form.get("email") or "")[:320]
        password = str(form.get("password") or "")
        if password != str(form.get("password_again") or ""):
            return self._form(request, person, kind, token, link, 400, email, PASSWORDS_DIFFER)
        refused = await sign_up_refused(deps.engine, request)
        if refused:
            return self._form(request, person, kind, token, link, 429, email, refused)
        try:
            if policy == "invite":
                user: User = await run_db(redeem, deps.engine, kind, token, email, password)
            else:
                user = await run_db(sign_up_open, deps.engine, email, password)
        except LinkInvalid:
            return self._refused(request, person, 404, LINK_INVALID)
        except (AccountError, WeakPasswordError) as exc:
            return self._form(request, person, kind, token, link, 400, email, _sentence(str(exc)))
        await run_db(end_session, deps.engine, session_cookie(request))
        session = await run_db(start_session, deps.engine, user.id, deps.settings.browser_session_days * 86400)
        response = see_other("/")
        set_session_cookie(response, deps.settings, session)
        return response

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/setup", self.setup, methods=["GET", "POST"]),
            Route("/join", self.join, methods=["GET", "POST"]),
        ]


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
