"""`/account`: "Change password", "Download my data", "Delete my account".

- A password change needs the current password; a wrong one counts against the same per-address
  limit as sign-in (a stolen session must not become a password-guessing oracle). It keeps this
  browser signed in and ends every other session.
- "Download my data" is `jean-memory export`'s JSON (`memory/transfer.py`), as an attachment.
- "Delete my account" needs the account's email typed again; then everything of the person is
  erased (`accounts.lifecycle.delete_user` walks the schema), this instance forgets their grants
  at once, and the browser is signed out.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jean_memory import clock
from jean_memory.accounts.browser_sessions import COOKIE_NAME, SignedIn
from jean_memory.accounts.lifecycle import LastAdministratorError, delete_user
from jean_memory.accounts.own_account import WrongPasswordError, change_password
from jean_memory.accounts.passwords import WeakPasswordError
from jean_memory.accounts.users import AccountError, normalise_email
from jean_memory.memory.transfer import export_user
from jean_memory.oauth.browser import session_cookie
from jean_memory.oauth.connected_apps import grant_ids_of
from jean_memory.oauth.throttle import sign_in_refused, sign_in_succeeded
from jean_memory.off_loop import run_db
from jean_memory.pages.context import PageDeps, checked_form, forbidden, render, see_other, signed_in_page
from jean_memory.web.templating import PAGE_HEADERS

CURRENT_PASSWORD_MISMATCH = "Your current password is not right. Type it again."
LAST_ADMINISTRATOR = (
    "You are the only administrator, and other people use this server. Make another administrator "
    "first (jean-memory user add EMAIL --admin), or delete the others on the Admin page."
)
EMAIL_MISMATCH = "That email does not match your account. Type your account's email to delete it."


class AccountPages:
    def __init__(self, deps: PageDeps) -> None:
        self._deps = deps

    def _page(self, request: Request, person: SignedIn, status_code: int = 200, **context: object) -> Response:
        return render(self._deps, request, "pages/account.html", person, status_code, **context)

    async def show(self, request: Request, person: SignedIn) -> Response:
        return self._page(request, person, changed=request.query_params.get("password") == "changed")

    async def password(self, request: Request, person: SignedIn) -> Response:
        deps = self._deps
        form = await checked_form(deps, request)
        if form is None:
            return forbidden(deps, request, person)
        current = str(form.get("current_password") or "")
        new = str(form.get("new_password") or "")
        refused = await sign_in_refused(deps.engine, request)
        if refused:
            return self._page(request, person, 429, password_error=refused)
        try:
            await run_db(change_password, deps.engine, person.user_id, current, new, session_cookie(request))
        except WrongPasswordError:
            deps.oauth.metrics.sign_in_failures.inc()
            return self._page(request, person, 400, password_error=CURRENT_PASSWORD_MISMATCH)
        except WeakPasswordError as exc:
            await sign_in_succeeded(deps.engine, request)  # the current password was right
            return self._page(request, person, 400, password_error=f"The new {exc}. Choose a longer one.")
        await sign_in_succeeded(deps.engine, request)
        return see_other("/account?password=changed")

    async def export(self, request: Request, person: SignedIn) -> Response:
        data = await run_db(export_user, self._deps.engine, person.user_id, person.email)
        day = datetime.fromtimestamp(clock.now(), UTC).strftime("%Y-%m-%d")
        return Response(
            json.dumps(data, ensure_ascii=False, indent=1),
            media_type="application/json",
            headers={
                **PAGE_HEADERS,
                "Content-Disposition": f'attachment; filename="jean-memory-export-{day}.json"',
            },
        )

    async def delete(self, request: Request, person: SignedIn) -> Response:
        deps = self._deps
        form = await checked_form(deps, request)
        if form is None:
            return forbidden(deps, request, person)
        try:
            typed = normalise_email(str(form.get("confirm_email") or ""))
        except AccountError:
            typed = ""
        if typed != person.email:
            return self._page(request, person, 400, delete_error=EMAIL_MISMATCH)
        grant_ids = await run_db(grant_ids_of, deps.engine, person.user_id)
        try:
            await run_db(delete_user, deps.engine, person.user_id, person.user_id)
        except LastAdministratorError:
            return self._page(request, person, 400, delete_error=LAST_ADMINISTRATOR)
        for grant_id in grant_ids:
            deps.oauth.revocations.mark_revoked(grant_id)
        response = see_other("/")
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    def routes(self) -> list[BaseRoute]:
        page = signed_in_page(self._deps)
        return [
            Route("/account", page(self.show), methods=["GET"]),
            Route("/account/password", page(self.password), methods=["POST"]),
            Route("/account/export", page(self.export), methods=["GET"]),
            Route("/account/delete", page(self.delete), methods=["POST"]),
        ]
