"""`/keys`: the person's API keys for the legacy endpoint: "Create key", the list, "Revoke".

A new key is shown once, on the answer to "Create key" itself (never stored in clear, never in a
URL or a redirect); afterwards only its prefix is known. "Revoke" names a key by its prefix and
deletes only the signed-in person's: another person's prefix answers 404 like an unknown one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jean_memory.accounts.api_keys import create_api_key, list_api_keys, revoke_own_api_key
from jean_memory.accounts.browser_sessions import SignedIn
from jean_memory.off_loop import run_db
from jean_memory.pages.context import PageDeps, checked_form, forbidden, not_found, render, see_other, signed_in_page


class KeysPages:
    def __init__(self, deps: PageDeps) -> None:
        self._deps = deps

    async def _page(self, request: Request, person: SignedIn, status_code: int = 200, **context: object) -> Response:
        keys = await run_db(list_api_keys, self._deps.engine, person.user_id)
        return render(
            self._deps,
            request,
            "pages/keys.html",
            person,
            status_code,
            keys=keys,
            legacy_url=f"{self._deps.settings.issuer}/mcp/v2/claude/{person.user_id}",
            **context,
        )

    async def list(self, request: Request, person: SignedIn) -> Response:
        return await self._page(request, person, revoked=request.query_params.get("revoked") == "1")

    async def create(self, request: Request, person: SignedIn) -> Response:
        form = await checked_form(self._deps, request)
        if form is None:
            return forbidden(self._deps, request, person)
        key = await run_db(create_api_key, self._deps.engine, person.user_id)
        return await self._page(request, person, new_key=key)

    async def revoke(self, request: Request, person: SignedIn) -> Response:
        form = await checked_form(self._deps, request)
        if form is None:
            return forbidden(self._deps, request, person)
        if not await run_db(revoke_own_api_key, self._deps.engine, person.user_id, request.path_params["prefix"]):
            return not_found(self._deps, request, person)
        return see_other("/keys?revoked=1")

    def routes(self) -> list[BaseRoute]:
        page = signed_in_page(self._deps)
        return [
            Route("/keys", page(self.list), methods=["GET"]),
            Route("/keys/create", page(self.create), methods=["POST"]),
            Route("/keys/{prefix}/revoke", page(self.revoke), methods=["POST"]),
        ]
