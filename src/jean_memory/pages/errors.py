"""Pages for what no route answers: a browser asking for an unknown path gets the same
not-found page, in the layout, as an unknown or another person's memory, app or key (so
`/admin` for a non-administrator and `/nowhere` look alike); clients keep Starlette's plain
404."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from jean_memory.pages.context import PageDeps, current_person, not_found
from jean_memory.pages.home import wants_html


def not_found_handler(deps: PageDeps) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        if wants_html(request):
            return not_found(deps, request, await current_person(deps, request))
        detail = exc.detail if isinstance(exc, HTTPException) else "Not Found"
        return PlainTextResponse(detail, status_code=404)

    return handle
