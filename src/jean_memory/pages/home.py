"""`GET /`: for a browser, the home page with the connector URL to copy and how to add it to
Claude, ChatGPT and Claude Code; for anything else the JSON `{"name", "connector_url"}` that
clients and the doctor read."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jean_memory.pages.context import PageDeps, current_person, render


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


class HomePage:
    def __init__(self, deps: PageDeps) -> None:
        self._deps = deps

    async def home(self, request: Request) -> Response:
        if not wants_html(request):
            return JSONResponse({"name": "Jean Memory", "connector_url": self._deps.settings.resource})
        person = await current_person(self._deps, request)
        return render(self._deps, request, "pages/home.html", person)

    def routes(self) -> list[BaseRoute]:
        return [Route("/", self.home, methods=["GET"])]
