"""`/admin`: the administrator's page. People (email, created, memory count, last active),
"Invite" (a one-time sign-up link, shown once), "Disable" / "Enable", "Delete" (after a
confirmation page).

Anyone who is not a signed-in administrator gets the not-found page, exactly as for an unknown
path: signed out too (an administrator signs in first, at /signin, then opens /admin). An
unknown person id answers the same 404. An administrator cannot disable or delete themselves
(the server would be left without anyone to manage it); they are told so.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jean_memory.accounts.browser_sessions import SignedIn
from jean_memory.accounts.invites import create_invite
from jean_memory.accounts.lifecycle import (
    NotAdministratorError,
    delete_user,
    disable_user,
    enable_user,
    list_users,
)
from jean_memory.accounts.users import AccountError, User, get_user
from jean_memory.oauth.connected_apps import grant_ids_of
from jean_memory.off_loop import run_db
from jean_memory.pages.context import (
    PageDeps,
    checked_form,
    current_person,
    forbidden,
    not_found,
    render,
    see_other,
)
from jean_memory.pages.when import shown

DONE = {
    "disabled": "Disabled: they cannot sign in, and their apps and API keys stop working.",
    "enabled": "Enabled: they can sign in again; their apps must connect again.",
    "deleted": "Deleted, with everything of theirs.",
}
CHANGES = {"disable": disable_user, "enable": enable_user, "delete": delete_user}
NOT_YOURSELF = "You cannot {action} your own account here. Another administrator can, or use the jean-memory command."


class AdminPages:
    def __init__(self, deps: PageDeps) -> None:
        self._deps = deps

    async def _admin(self, request: Request) -> SignedIn | None:
        person = await current_person(self._deps, request)
        return person if person is not None and person.is_admin else None

    async def _page(
        self, request: Request, admin: SignedIn, status: int = 200, error: str = "", link: str = ""
    ) -> Response:
        people = await run_db(list_users, self._deps.engine)
        rows = [
            {
                "id": p.id,
                "email": p.email,
                "created": shown(p.created_at),
                "memories": p.memory_count,
                "last_active": shown(p.last_active_at),
                "is_admin": p.is_admin,
                "disabled": p.disabled_at is not None,
                "me": p.id == admin.user_id,
            }
            for p in people
        ]
        return render(
            self._deps,
            request,
            "pages/admin.html",
            admin,
            status,
            people=rows,
            signup=self._deps.settings.signup,
            notice=DONE.get(request.query_params.get("done", "")),
            error=error,
            invite_link=link,
        )

    async def admin(self, request: Request) -> Response:
        admin = await self._admin(request)
        if admin is None:
            return not_found(self._deps, request, await current_person(self._deps, request))
        return await self._page(request, admin)

    async def invite(self, request: Request) -> Response:
        form = await checked_form(self._deps, request)
        admin = await self._admin(request)
        if form is None:
            return forbidden(self._deps, request, admin)
        if admin is None:
            return not_found(self._deps, request, await current_person(self._deps, request))
        email = str(form.get("email") or "").strip()[:320]
        try:
            token = await run_db(create_invite, self._deps.engine, admin.user_id, email or None)
        except AccountError as exc:
            message = str(exc)
            return await self._page(
                request,
                admin,
                400,
                error=f"{message[:1].upper()}{message[1:]}. Leave it empty for a link anyone can use.",
            )
        return await self._page(request, admin, link=f"{self._deps.settings.issuer}/join?invite={token}")

    async def _target(self, request: Request) -> tuple[SignedIn | None, User | None]:
        admin = await self._admin(request)
        if admin is None:
            return None, None
        return admin, await run_db(get_user, self._deps.engine, request.path_params["person_id"])

    async def confirm_delete(self, request: Request) -> Response:
        admin, target = await self._target(request)
        if admin is None or target is None:
            return not_found(self._deps, request, await current_person(self._deps, request))
        if target.id == admin.user_id:
            return await self._page(request, admin, 400, error=NOT_YOURSELF.format(action="delete"))
        return render(self._deps, request, "pages/admin_delete.html", admin, target=target)

    async def change(self, request: Request) -> Response:
        """POST /admin/people/{id}/disable|enable|delete."""
        form = await checked_form(self._deps, request)
        admin, target = await self._target(request)
        if form is None:
            return forbidden(self._deps, request, admin or await current_person(self._deps, request))
        action = request.path_params["action"]
        if admin is None or target is None or action not in CHANGES:
            return not_found(self._deps, request, await current_person(self._deps, request))
        if action != "enable" and target.id == admin.user_id:
            return await self._page(request, admin, 400, error=NOT_YOURSELF.format(action=action))
        grant_ids = await run_db(grant_ids_of, self._deps.engine, target.id) if action != "enable" else []
        try:
            await run_db(CHANGES[action], self._deps.engine, target.id, admin.user_id)
        except NotAdministratorError:  # removed or disabled while this request was on its way
            return not_found(self._deps, request, None)
        for grant_id in grant_ids:  # their tokens stop here at once, not when the cache ages out
            self._deps.oauth.revocations.mark_revoked(grant_id)
        return see_other(f"/admin?done={action}d")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin", self.admin, methods=["GET"]),
            Route("/admin/invite", self.invite, methods=["POST"]),
            Route("/admin/people/{person_id}/delete", self.confirm_delete, methods=["GET"]),
            Route("/admin/people/{person_id}/{action:str}", self.change, methods=["POST"]),
        ]
