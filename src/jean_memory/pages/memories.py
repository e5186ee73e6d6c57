"""`/memories`, `/memories/{id}` and `/memories/deleted`: the person sees, corrects and erases
what their assistants keep (CONTRACT.md, "The person's pages").

The list pages by keyset (`?after=` carries the last row's cursor, never an offset), `?q=` runs
the very search `search_memory` runs (`MemoryService.search`), `?tag=` filters. Every change
goes through the same service calls the tools use, so history, trash, re-embedding and the
vector caches behave alike whoever made the change; the pages' changes are recorded as made by
the app "web". Every id the browser sends is looked up as the signed-in person's: another
person's id answers exactly as an unknown one does (`not_found`).
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jean_memory.accounts.browser_sessions import SignedIn
from jean_memory.memory import browse
from jean_memory.memory.records import MemoryInputError
from jean_memory.off_loop import run_db
from jean_memory.pages.context import PageDeps, checked_form, forbidden, not_found, render, see_other, signed_in_page

PAGE_SIZE = 50
WEB_CLIENT = "web"  # how the pages' own changes appear in a memory's history
MAX_SELECTED = 500  # ids in one "Delete selected"
MAX_QUERY_CHARS = 500
CONFIRM_DELETE_ALL = "delete all"
NOTICES = {
    "trashed": "Moved to the trash. You can restore it from the trash for {days} days.",
    "trashed-many": "Moved {n} to the trash. You can restore them from the trash for {days} days.",
    "erased": "Every memory and document was deleted.",
    "document-deleted": "The document and its passages were deleted.",
    "restored": "Restored.",
    "saved": "Saved.",
}
HISTORY_LABELS = {
    "created": "Saved",
    "merged": "Merged with the same fact said again",
    "updated": "Edited",
    "superseded": "Replaced by a newer memory",
    "deleted": "Moved to the trash",
    "restored": "Restored from the trash",
}


def plausible_id(value: str) -> bool:
    """Ids are short hex; anything else (a NUL, a megabyte) is answered 404 before any query."""
    return 0 < len(value) <= 64 and value.isascii() and value.isalnum()


def parse_tags(value: str) -> list[str]:
    """The comma-separated tags field as the list the service checks."""
    return [t.strip() for t in value.split(",") if t.strip()]


def notice_of(request: Request, trash_days: int) -> str | None:
    """The fixed message a redirect asked for by key (nothing from the URL is shown as text but
    a count)."""
    template = NOTICES.get(request.query_params.get("notice", ""))
    if template is None:
        return None
    count = request.query_params.get("n", "")
    return template.format(n=f"{int(count)} memories" if count.isdigit() else "them", days=trash_days)


class MemoryPages:
    def __init__(self, deps: PageDeps) -> None:
        self._deps = deps

    def _render(
        self, request: Request, template: str, person: SignedIn, status: int = 200, **context: object
    ) -> Response:
        return render(
            self._deps,
            request,
            template,
            person,
            status,
            history_labels=HISTORY_LABELS,
            notice=notice_of(request, self._deps.settings.trash_days),
            **context,
        )

    # --- the list ------------------------------------------------------------------------------

    async def _list(self, request: Request, person: SignedIn, status: int = 200, error: str | None = None) -> Response:
        deps = self._deps
        q = request.query_params.get("q", "").strip()[:MAX_QUERY_CHARS]
        tag = request.query_params.get("tag", "").strip().lower()[:64]
        after = request.query_params.get("after") or None
        next_url = None
        first_page = not (q or tag or after)
        try:
            view = await run_db(
                browse.listing, deps.engine, person.user_id, PAGE_SIZE, after, tag or None, not q, first_page
            )
            found = view.memories
            if q:
                found = await run_db(deps.memory.search, person.user_id, q, PAGE_SIZE, [tag] if tag else None)
            elif view.next_cursor:
                next_url = "/memories?" + urlencode({k: v for k, v in (("tag", tag), ("after", view.next_cursor)) if v})
            documents, total = view.documents, view.total
        except MemoryInputError as exc:
            found, status, error = [], 400, error or str(exc).replace("cursor", "this page link")
            documents, total = [], await run_db(deps.memory.count, person.user_id)
        return self._render(
            request,
            "pages/memories.html",
            person,
            status,
            memories=found,
            q=q,
            tag=tag,
            after=after,
            next_url=next_url,
            documents=documents,
            total=total,
            first_page=first_page,
            error=error,
            confirm_phrase=CONFIRM_DELETE_ALL,
        )

    async def list_page(self, request: Request, person: SignedIn) -> Response:
        return await self._list(request, person)

    async def delete_selected(self, request: Request, person: SignedIn) -> Response:
        form = await checked_form(self._deps, request)
        if form is None:
            return forbidden(self._deps, request, person)
        ids = [v for v in form.getlist("ids") if isinstance(v, str) and v.strip()]
        if not ids:
            return await self._list(request, person, 400, "Select at least one memory to delete.")
        if len(ids) > MAX_SELECTED:
            return await self._list(request, person, 400, f"Select at most {MAX_SELECTED} memories at a time.")
        moved = 0
        for memory_id in dict.fromkeys(ids):
            if plausible_id(memory_id):  # a malformed id is no memory of theirs
                moved += await run_db(self._deps.memory.delete, person.user_id, memory_id, WEB_CLIENT)
        if moved == 1:
            return see_other("/memories?notice=trashed")
        return see_other(f"/memories?notice=trashed-many&n={moved}")

    async def delete_all(self, request: Request, person: SignedIn) -> Response:
        form = await checked_form(self._deps, request)
        if form is None:
            return forbidden(self._deps, request, person)
        typed = " ".join(str(form.get("confirm") or "").split()).lower()
        if typed != CONFIRM_DELETE_ALL:
            message = f"Nothing was deleted. To delete every memory, type “{CONFIRM_DELETE_ALL}” in the box."
            return await self._list(request, person, 400, message)
        await run_db(self._deps.memory.delete_all, person.user_id)
        return see_other("/memories?notice=erased")

    async def delete_document(self, request: Request, person: SignedIn) -> Response:
        form = await checked_form(self._deps, request)
        if form is None:
            return forbidden(self._deps, request, person)
        document_id = request.path_params["document_id"]
        if not plausible_id(document_id) or not await run_db(
            browse.delete_document, self._deps.engine, person.user_id, document_id
        ):
            return not_found(self._deps, request, person)
        return see_other("/memories?notice=document-deleted")

    # --- one memory ----------------------------------------------------------------------------

    async def _memory(
        self,
        request: Request,
        person: SignedIn,
        status: int = 200,
        error: str | None = None,
        form: ImmutableMultiDict[str, str] | None = None,
    ) -> Response:
        deps = self._deps
        memory_id = request.path_params["memory_id"]
        memory = await run_db(browse.find, deps.engine, person.user_id, memory_id) if plausible_id(memory_id) else None
        if memory is None:
            return not_found(deps, request, person)
        events = await run_db(deps.memory.history, person.user_id, memory.id)
        replaced_by = None
        if memory.superseded_by:
            replaced_by = await run_db(browse.find, deps.engine, person.user_id, memory.superseded_by)
        text = str(form.get("text") or "") if form is not None else memory.text
        tags = str(form.get("tags") or "") if form is not None else ", ".join(memory.tags)
        return self._render(
            request,
            "pages/memory.html",
            person,
            status,
            memory=memory,
            events=list(reversed(events)),
            replaced_by=replaced_by,
            text=text,
            tags=tags,
            error=error,
            trash_days=deps.settings.trash_days,
        )

    async def memory_page(self, request: Request, person: SignedIn) -> Response:
        return await self._memory(request, person)

    async def save(self, request: Request, person: SignedIn) -> Response:
        deps = self._deps
        form = await checked_form(deps, request)
        if form is None:
            return forbidden(deps, request, person)
        memory_id = request.path_params["memory_id"]
        if not plausible_id(memory_id):
            return not_found(deps, request, person)
        text = str(form.get("text") or "")
        try:
            updated = await run_db(
                deps.memory.update, person.user_id, memory_id, text, parse_tags(str(form.get("tags") or "")), WEB_CLIENT
            )
        except MemoryInputError as exc:
            message = str(exc).replace("store_document", "your assistant's store_document")
            return await self._memory(request, person, 400, message[0].upper() + message[1:], form)
        if updated is None:  # unknown, another person's, or in the trash: none of them can be edited
            return not_found(deps, request, person)
        return see_other(f"/memories/{updated.id}?notice=saved")

    async def delete(self, request: Request, person: SignedIn) -> Response:
        form = await checked_form(self._deps, request)
        if form is None:
            return forbidden(self._deps, request, person)
        memory_id = request.path_params["memory_id"]
        if not plausible_id(memory_id) or not await run_db(
            self._deps.memory.delete, person.user_id, memory_id, WEB_CLIENT
        ):
            return not_found(self._deps, request, person)
        return see_other("/memories?notice=trashed")

    # --- the trash -----------------------------------------------------------------------------

    async def trash_page(self, request: Request, person: SignedIn) -> Response:
        after = request.query_params.get("after") or None
        status, error, next_url = 200, None, None
        try:
            trashed, cursor = await run_db(browse.trash_page, self._deps.engine, person.user_id, PAGE_SIZE, after)
        except MemoryInputError as exc:
            trashed, cursor, status, error = [], None, 400, str(exc).replace("cursor", "this page link")
        if cursor:
            next_url = "/memories/deleted?" + urlencode({"after": cursor})
        days = self._deps.settings.trash_days
        return self._render(
            request,
            "pages/memories_deleted.html",
            person,
            status,
            trashed=trashed,
            trash_days=days,
            purge_after=days * 86_400,
            next_url=next_url,
            error=error,
        )

    async def restore(self, request: Request, person: SignedIn) -> Response:
        form = await checked_form(self._deps, request)
        if form is None:
            return forbidden(self._deps, request, person)
        memory_id = request.path_params["memory_id"]
        restored = None
        if plausible_id(memory_id):
            restored = await run_db(self._deps.memory.restore, person.user_id, memory_id, WEB_CLIENT)
        if restored is None:
            return not_found(self._deps, request, person)
        return see_other("/memories/deleted?notice=restored")

    def routes(self) -> list[BaseRoute]:
        page = signed_in_page(self._deps)
        ident = "{memory_id:str}"
        return [
            Route("/memories", page(self.list_page), methods=["GET"]),
            Route("/memories/delete", page(self.delete_selected), methods=["POST"]),
            Route("/memories/delete-all", page(self.delete_all), methods=["POST"]),
            Route("/memories/deleted", page(self.trash_page), methods=["GET"]),
            Route("/memories/documents/{document_id:str}/delete", page(self.delete_document), methods=["POST"]),
            Route(f"/memories/{ident}", page(self.memory_page), methods=["GET"]),
            Route(f"/memories/{ident}", page(self.save), methods=["POST"]),
            Route(f"/memories/{ident}/delete", page(self.delete), methods=["POST"]),
            Route(f"/memories/{ident}/restore", page(self.restore), methods=["POST"]),
        ]
