"""`/apps`: the apps connected to the person's memory, and "Disconnect".

Disconnect revokes that one grant at once (its access and refresh tokens stop) and forgets the
person's consent for its client, so connecting the app again asks again. The grant id in the
path is a random 128-bit id; another person's answers 404 exactly like an unknown one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jean_memory.accounts.browser_sessions import SignedIn
from jean_memory.oauth.connected_apps import disconnect, list_connected_apps
from jean_memory.off_loop import run_db
from jean_memory.pages.context import PageDeps, checked_form, forbidden, not_found, render, see_other, signed_in_page


class AppsPages:
    def __init__(self, deps: PageDeps) -> None:
        self._deps = deps

    async def list(self, request: Request, person: SignedIn) -> Response:
        apps = await run_db(list_connected_apps, self._deps.engine, person.user_id)
        done = request.query_params.get("disconnected") == "1"
        return render(self._deps, request, "pages/apps.html", person, apps=apps, disconnected=done)

    async def disconnect(self, request: Request, person: SignedIn) -> Response:
        deps = self._deps
        form = await checked_form(deps, request)
        if form is None:
            return forbidden(deps, request, person)
        if not await run_db(disconnect, deps.oauth, person.user_id, request.path_params["grant_id"]):
            return not_found(deps, request, person)
        return see_other("/apps?disconnected=1")

    def routes(self) -> list[BaseRoute]:
        page = signed_in_page(self._deps)
        return [
            Route("/apps", page(self.list), methods=["GET"]),
            Route("/apps/{grant_id}/disconnect", page(self.disconnect), methods=["POST"]),
        ]
