"""All the person's pages, in one list for the app to mount."""

from __future__ import annotations

from starlette.routing import BaseRoute

from jean_memory.pages.account import AccountPages
from jean_memory.pages.admin import AdminPages
from jean_memory.pages.apps import AppsPages
from jean_memory.pages.context import PageDeps
from jean_memory.pages.home import HomePage
from jean_memory.pages.keys import KeysPages
from jean_memory.pages.memories import MemoryPages
from jean_memory.pages.signin import SignInPages
from jean_memory.pages.signup import SignUpPages


def page_routes(deps: PageDeps) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for area in (
        HomePage(deps),
        SignInPages(deps),
        MemoryPages(deps),
        AppsPages(deps),
        KeysPages(deps),
        AccountPages(deps),
        SignUpPages(deps),
        AdminPages(deps),
    ):
        routes.extend(area.routes())
    return routes
