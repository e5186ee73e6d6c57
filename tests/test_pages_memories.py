"""The person's memory pages without a browser: /memories (paging by keyset, search as
search_memory searches, tag filter, documents, "Delete selected", "Delete all memories"),
/memories/{id} (edit, history, delete) and /memories/deleted (restore); CSRF on every POST and
another person's id answered exactly like an unknown one (CONTRACT.md, "The person's pages")."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import sqlalchemy as sa

from jean_memory import clock
from jean_memory.accounts.users import User
from jean_memory.db.tables import documents, memories, memory_history, memory_vectors
from jean_memory.memory.service import MemoryService
from tests.support.oauth import McpHttp, new_flow
from tests.support.pages import csrf_of, post_form, signed_in_client
from tests.support.servers import RunningServer

IDS = re.compile(r'name="ids" value="([0-9a-f]+)"')
NEXT = re.compile(r'<a rel="next" href="([^"]+)">Next</a>')


def ids_on(html: str) -> list[str]:
    return IDS.findall(html)


def next_link(html: str) -> str | None:
    match = NEXT.search(html)
    return match.group(1).replace("&amp;", "&") if match else None


def seed(server: RunningServer, user: User, count: int, tags: list[str] | None = None, start: int = 0) -> list[str]:
    """`count` distinct memories saved a minute apart (the server's own service, without the
    model: listing does not need vectors); their ids, oldest first."""
    service = MemoryService(server.engine, None)
    saved = []
    for i in range(start, start + count):
        clock.advance(60)
        saved.append(service.add(user.id, f"Fact {i}: the {i}th thing worth remembering", tags).saved[0].id)
    return saved


def live_ids(server: RunningServer, user: User) -> set[str]:
    with server.engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(memories.c.id).where(
                    memories.c.user_id == user.id, memories.c.kind == "memory", memories.c.deleted_at.is_(None)
                )
            ).scalars()
        )


def test_the_list_pages_newest_first_50_at_a_time_by_keyset(server: RunningServer, alice: User) -> None:
    saved = seed(server, alice, 120)
    with signed_in_client(server, alice.email) as client:
        first = client.get("/memories")
        assert first.status_code == 200 and "120 memories" in first.text
        assert ids_on(first.text) == saved[::-1][:50]
        second_url = next_link(first.text)
        assert second_url and "after=" in second_url
        # A memory saved meanwhile neither shifts nor repeats the older pages (no OFFSET).
        seed(server, alice, 1, start=500)
        second = client.get(second_url)
        assert ids_on(second.text) == saved[::-1][50:100]
        third = client.get(next_link(second.text) or "")
        assert ids_on(third.text) == saved[::-1][100:] and next_link(third.text) is None
        tampered = client.get("/memories", params={"after": "not-a-cursor"})
        assert tampered.status_code == 400 and "this page link is not one this server handed out" in tampered.text


def test_two_memories_saved_in_the_same_instant_are_both_listed(server: RunningServer, alice: User) -> None:
    service = MemoryService(server.engine, None)
    clock.advance(60)
    same = [service.add(alice.id, f"Same instant {i}").saved[0].id for i in range(51)]  # the clock stands still
    with signed_in_client(server, alice.email) as client:
        first = client.get("/memories")
        second = client.get(next_link(first.text) or "")
        assert sorted(ids_on(first.text) + ids_on(second.text)) == sorted(same)


def test_the_tag_filter_pages_too(server: RunningServer, alice: User) -> None:
    tagged = seed(server, alice, 55, ["travel"])
    seed(server, alice, 30, ["food"], start=100)
    with signed_in_client(server, alice.email) as client:
        page = client.get("/memories", params={"tag": "Travel"})
        assert ids_on(page.text) == tagged[::-1][:50]
        more = client.get(next_link(page.text) or "")
        assert "tag=travel" in str(more.url) and ids_on(more.text) == tagged[::-1][50:]
        assert ids_on(client.get("/memories", params={"tag": "nothing-has-this"}).text) == []


def test_search_answers_what_search_memory_answers(server: RunningServer, alice: User) -> None:
    mcp = McpHttp(server.mcp_url, new_flow(server.base_url).tokens(alice.email)["access_token"])
    texts = [
        ("My sister Anna lives in Lisbon", ["family"]),
        ("I am allergic to peanuts", ["health"]),
        ("My brother Tom plays the violin", ["family"]),
        ("I prefer green tea over coffee", ["food"]),
        ("Anna's birthday is on 3 March", ["family"]),
    ]
    for text, tags in texts:
        assert mcp.call_tool("add_memories", {"text": text, "tags": tags})["isError"] is False
    with signed_in_client(server, alice.email) as client:
        for query, tag in (("Anna", None), ("what do I drink", None), ("family birthday", "family")):
            arguments = {"query": query, "limit": 50, **({"tags": [tag]} if tag else {})}
            expected = [r["id"] for r in mcp.call_tool("search_memory", arguments)["structuredContent"]["results"]]
            page = client.get("/memories", params={"q": query, **({"tag": tag} if tag else {})})
            assert page.status_code == 200 and expected and ids_on(page.text) == expected
            assert next_link(page.text) is None


def test_delete_selected_moves_them_to_the_trash_and_skips_what_is_not_theirs(
    server: RunningServer, alice: User, bob: User
) -> None:
    mine = seed(server, alice, 4)
    bobs = seed(server, bob, 1)
    with signed_in_client(server, alice.email) as client:
        nothing = post_form(client, "/memories", "/memories/delete", {})
        assert nothing.status_code == 400 and "Select at least one" in nothing.text
        page = client.get("/memories")
        answer = client.post(
            "/memories/delete",
            data={"csrf_token": csrf_of(page.text), "ids": [mine[0], mine[2], bobs[0], "zz\x00"]},
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/memories?notice=trashed-many&n=2"
        after = client.get(answer.headers["location"])
        assert "Moved 2 memories to the trash" in after.text
        assert ids_on(after.text) == [mine[3], mine[1]]
        trash = client.get("/memories/deleted")
        assert mine[0] in trash.text and mine[2] in trash.text
    assert bobs[0] in live_ids(server, bob)


def test_delete_all_needs_the_words_and_then_erases_everything(server: RunningServer, alice: User, bob: User) -> None:
    mine = seed(server, alice, 3)
    seed(server, bob, 2)
    service = MemoryService(server.engine, None)
    service.delete(alice.id, mine[0])
    with signed_in_client(server, alice.email) as client:
        for typed in ("", "delete", "delete everything"):
            refused = post_form(client, "/memories", "/memories/delete-all", {"confirm": typed})
            assert refused.status_code == 400 and "Nothing was deleted" in refused.text
        assert live_ids(server, alice) == set(mine[1:])
        done = post_form(client, "/memories", "/memories/delete-all", {"confirm": "  Delete All "})
        assert done.status_code == 303
        assert "Every memory and document was deleted" in client.get(done.headers["location"]).text
    with server.engine.connect() as conn:
        for table in (memories, memory_history, memory_vectors, documents):
            left = conn.execute(sa.select(sa.func.count()).where(table.c.user_id == alice.id)).scalar_one()
            assert left == 0, table.name
        bobs = conn.execute(sa.select(sa.func.count()).where(memories.c.user_id == bob.id)).scalar_one()
    assert bobs == 2


def test_a_memory_page_edits_keeps_history_and_refuses_bad_input(server: RunningServer, alice: User) -> None:
    mcp = McpHttp(server.mcp_url, new_flow(server.base_url).tokens(alice.email)["access_token"])
    saved = mcp.call_tool("add_memories", {"text": "I work at Initech", "tags": ["work"]})
    memory_id = saved["structuredContent"]["saved"][0]["id"]
    clock.advance(600)  # inside the access token's hour
    with signed_in_client(server, alice.email) as client:
        page = client.get(f"/memories/{memory_id}")
        assert page.status_code == 200 and "I work at Initech" in page.text and 'value="work"' in page.text
        assert "Saved by</dt><dd>Claude" in page.text.replace("\n", "")
        empty = post_form(client, f"/memories/{memory_id}", f"/memories/{memory_id}", {"text": "  ", "tags": "x"})
        assert empty.status_code == 400 and "Text is empty" in empty.text and 'role="alert"' in empty.text
        many = ", ".join(f"t{i}" for i in range(30))
        too_many = post_form(client, f"/memories/{memory_id}", f"/memories/{memory_id}", {"text": "Kept", "tags": many})
        assert (
            too_many.status_code == 400 and "At most 20 tags" in too_many.text and ">Kept</textarea>" in too_many.text
        )
        saved_page = post_form(
            client,
            f"/memories/{memory_id}",
            f"/memories/{memory_id}",
            {"text": "I work at Globex now", "tags": "Work, new job"},
        )
        assert saved_page.status_code == 303
        page = client.get(saved_page.headers["location"])
        assert "Saved." in page.text and "I work at Globex now" in page.text
        assert (
            "Edited" in page.text
            and "Before:</span> I work at Initech" in page.text
            and "by you, on these pages" in page.text
        )
    found = mcp.call_tool("search_memory", {"query": "Globex"})["structuredContent"]["results"]
    assert found[0]["id"] == memory_id and found[0]["tags"] == ["work", "new job"]


def test_delete_and_restore_through_the_pages(server: RunningServer, alice: User) -> None:
    [memory_id] = seed(server, alice, 1)
    with signed_in_client(server, alice.email) as client:
        gone = post_form(client, f"/memories/{memory_id}", f"/memories/{memory_id}/delete")
        assert gone.status_code == 303 and gone.headers["location"] == "/memories?notice=trashed"
        assert "Moved to the trash" in client.get("/memories?notice=trashed").text
        assert memory_id not in live_ids(server, alice)
        # Its page still opens (from the trash), without the edit form; the trash lists it.
        trashed = client.get(f"/memories/{memory_id}")
        assert "In the trash since" in trashed.text and ">Save<" not in trashed.text
        trash = client.get("/memories/deleted")
        assert memory_id in trash.text and "30 days" in trash.text
        back = post_form(client, "/memories/deleted", f"/memories/{memory_id}/restore")
        assert back.status_code == 303 and "Restored." in client.get(back.headers["location"]).text
        assert memory_id in live_ids(server, alice)
        assert "The trash is empty" in client.get("/memories/deleted").text
        again = post_form(client, "/memories/deleted", f"/memories/{memory_id}/restore")
        assert again.status_code == 404


def test_documents_are_listed_and_deleted_whole(server: RunningServer, alice: User) -> None:
    service = MemoryService(server.engine, None)
    content = "\n\n".join(f"Section {i}. " + "The quarterly plan covers hiring and budgets. " * 40 for i in range(6))
    document_id = service.store_document(alice.id, "Quarterly plan", content)
    deadline = time.monotonic() + 30
    while (status := service.document_status(alice.id, document_id)) and status[0] != "ready":
        assert time.monotonic() < deadline, "the server's worker did not index the document"
        time.sleep(0.05)
    assert status is not None and status[1] > 1
    with server.engine.connect() as conn:
        chunk_id = conn.execute(sa.select(memories.c.id).where(memories.c.document_id == document_id)).scalars().first()
    with signed_in_client(server, alice.email) as client:
        listing = client.get("/memories")
        assert "Quarterly plan" in listing.text and f"{status[1]} passages" in listing.text
        passage = client.get(f"/memories/{chunk_id}")  # what ChatGPT's fetch cites for a passage
        assert (
            passage.status_code == 200 and "Passage of a document" in passage.text and "Quarterly plan" in passage.text
        )
        assert "Delete document" in passage.text and 'name="text"' not in passage.text
        answer = post_form(client, "/memories", f"/memories/documents/{document_id}/delete")
        assert (
            answer.status_code == 303
            and "document and its passages were deleted" in client.get(answer.headers["location"]).text
        )
        assert client.get(f"/memories/{chunk_id}").status_code == 404
    with server.engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).where(memories.c.document_id == document_id)).scalar_one()
        docs = conn.execute(sa.select(sa.func.count()).where(documents.c.id == document_id)).scalar_one()
    assert left == 0 and docs == 0


def id_routes(memory_id: str, document_id: str) -> list[tuple[str, str, dict[str, str]]]:
    return [
        ("GET", f"/memories/{memory_id}", {}),
        ("POST", f"/memories/{memory_id}", {"text": "hijacked", "tags": ""}),
        ("POST", f"/memories/{memory_id}/delete", {}),
        ("POST", f"/memories/{memory_id}/restore", {}),
        ("POST", f"/memories/documents/{document_id}/delete", {}),
    ]


def test_another_persons_ids_answer_exactly_like_unknown_ones(server: RunningServer, alice: User, bob: User) -> None:
    service = MemoryService(server.engine, None)
    [bobs_memory] = seed(server, bob, 1)
    [bobs_trashed] = seed(server, bob, 1, start=10)
    service.delete(bob.id, bobs_trashed)
    bobs_document = service.store_document(bob.id, "Bob's notes", "Private notes of Bob.")
    with signed_in_client(server, alice.email) as client:
        token = csrf_of(client.get("/memories").text)

        def answer(method: str, path: str, data: dict[str, str]) -> httpx.Response:
            if method == "GET":
                return client.get(path)
            return client.post(path, data={**data, "csrf_token": token})

        for theirs, unknown in ((bobs_memory, "f" * 32), (bobs_trashed, "e" * 32)):
            for (method, path, data), (_, unknown_path, _) in zip(
                id_routes(theirs, bobs_document), id_routes(unknown, "d" * 32), strict=True
            ):
                foreign, missing = answer(method, path, data), answer(method, unknown_path, data)
                assert foreign.status_code == missing.status_code == 404, (method, path)
                assert foreign.text == missing.text, (method, path)
        for odd in ("x" * 5000, "%00", "..%2f..%2fetc"):
            assert client.get(f"/memories/{odd}").status_code == 404
    assert live_ids(server, bob) == {bobs_memory}
    assert service.get(bob.id, bobs_memory).text.startswith("Fact 0")  # type: ignore[union-attr]
    assert service.document_status(bob.id, bobs_document) is not None


def test_every_post_needs_the_csrf_field(server: RunningServer, alice: User) -> None:
    [memory_id] = seed(server, alice, 1)
    with signed_in_client(server, alice.email) as client:
        client.get("/memories")  # the CSRF cookie is set; only the field is missing or wrong
        posts = [
            ("/memories/delete", {"ids": memory_id}),
            ("/memories/delete-all", {"confirm": "delete all"}),
            ("/memories/documents/" + "d" * 32 + "/delete", {}),
            (f"/memories/{memory_id}", {"text": "changed", "tags": ""}),
            (f"/memories/{memory_id}/delete", {}),
            (f"/memories/{memory_id}/restore", {}),
        ]
        for path, data in posts:
            for field in ({}, {"csrf_token": "0" * 64}):
                assert client.post(path, data={**data, **field}).status_code == 403, path
    assert live_ids(server, alice) == {memory_id}


def test_the_pages_ask_to_sign_in_first(server: RunningServer, alice: User) -> None:
    [memory_id] = seed(server, alice, 1)
    with httpx.Client(base_url=server.base_url) as anonymous:
        for path in ("/memories", f"/memories/{memory_id}", "/memories/deleted"):
            answer = anonymous.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/signin?next=")
        assert anonymous.post(f"/memories/{memory_id}/delete").status_code == 403
    assert live_ids(server, alice) == {memory_id}


def test_a_superseded_memory_is_marked_in_the_list_and_on_its_page(server: RunningServer, alice: User) -> None:
    old, new = seed(server, alice, 2)
    with server.engine.begin() as conn:
        conn.execute(memories.update().where(memories.c.id == old).values(superseded_by=new, superseded_at=clock.now()))
    with signed_in_client(server, alice.email) as client:
        listing = client.get("/memories").text
        assert listing.count('class="badge">Superseded') == 1
        page = client.get(f"/memories/{old}").text
        assert "Superseded on" in page and f'href="/memories/{new}"' in page


HOSTILE = [
    "<script>window.__pwned = 'script'; alert('script')</script> my favourite tag",
    "<img src=x onerror=\"window.__pwned = 'img'; alert('img')\"> is how I sign my emails",
    "My site: javascript:window.__pwned='link';alert('link') and [click](javascript:alert('md'))",
]
LONG = [
    "Bookmark https://example.com/" + "a-very-long-path-segment/" * 12 + "?with=query&and=more",
    "The word " + "supercalifragilisticexpialidocious" * 4 + " is hard to spell",
]


async def assert_nothing_ran(page, dialogs: list[str]) -> None:
    """No payload ran (no dialog, no flag), none became markup, and each shows as plain text."""
    assert dialogs == []
    assert await page.evaluate("() => window.__pwned === undefined")
    assert await page.locator("main script, main img, main [onerror], main a[href^='javascript']").count() == 0


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.one_database
async def test_memories_in_chromium_list_edit_delete_restore_bulk_and_all(server, alice, browser) -> None:
    """One walk through the memory pages as a person makes it, with hostile texts saved through
    the official MCP SDK client, long words and URLs for the phone layout, and a page of 50 with
    "Next"; each page screenshotted and checked by axe-core (check_page)."""
    from tests.support.chromium import check_page, chromium_page, require_chromium, sign_in, submit
    from tests.support.oauth import PASSWORD
    from tests.support.sdk_client import MemoryTokenStorage, WireLog, sdk_client, sdk_provider

    require_chromium()
    seed(server, alice, 52, ["everyday"])
    provider = sdk_provider(server.mcp_url, MemoryTokenStorage(), browser, None)
    async with sdk_client(server.mcp_url, provider, WireLog()) as client:
        for text in LONG + HOSTILE:
            tags = ["<b onmouseover=alert(1)>x</b>"] if text.startswith("<script>") else ["links"]
            saved = await client.call_tool("add_memories", {"text": text, "tags": tags})
            assert not saved.is_error, saved.content
        hostile_id = saved.structured_content["saved"][0]["id"]  # the last one: the javascript: link
    trashed_first = seed(server, alice, 1, start=900)[0]
    MemoryService(server.engine, None).delete(alice.id, trashed_first)

    async with chromium_page() as page:
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        await sign_in(page, server.base_url, alice.email, PASSWORD, next_path="/memories")
        assert page.url.endswith("/memories")
        await assert_nothing_ran(page, dialogs)
        for text in HOSTILE:
            assert await page.get_by_text(text[:40]).count() >= 1
        assert await page.get_by_text("Select all").is_visible()  # pages.js shows it
        assert await page.locator("a[rel=next]").get_attribute("href")
        await check_page(page, "memories")

        # One memory: its page, edited and saved.
        await submit(page, page.get_by_role("link", name=re.compile("My site: javascript:")))
        await assert_nothing_ran(page, dialogs)
        assert page.url.endswith(f"/memories/{hostile_id}")
        await page.get_by_label("Text").fill("My site is https://example.org/" + "long-segment/" * 10)
        await page.get_by_label("Tags").fill("links, site")
        await submit(page, page.get_by_role("button", name="Save", exact=True))
        assert await page.get_by_role("status").inner_text() == "Saved."
        assert await page.get_by_text("Before:").count() == 1
        await assert_nothing_ran(page, dialogs)
        await check_page(page, "memory")

        # Delete it; it waits in the trash, from where it comes back.
        await submit(page, page.get_by_role("button", name="Delete", exact=True))
        assert "Moved to the trash" in await page.get_by_role("status").inner_text()
        await submit(page, page.get_by_role("link", name="Trash"))
        assert await page.get_by_role("button", name="Restore").count() == 2
        await check_page(page, "memories-deleted")
        row = page.locator("li", has_text="My site is https://example.org/")
        await submit(page, row.get_by_role("button", name="Restore"))
        assert await page.get_by_role("status").inner_text() == "Restored."
        assert await page.get_by_role("button", name="Restore").count() == 1

        # Select two and delete them.
        await page.goto(server.base_url + "/memories")
        await page.get_by_role("checkbox", name=re.compile("^Select: Fact 51:")).check()
        await page.get_by_role("checkbox", name=re.compile("^Select: Fact 50:")).check()
        await submit(page, page.get_by_role("button", name="Delete selected"))
        assert "Moved 2 memories to the trash" in await page.get_by_role("status").inner_text()
        assert await page.get_by_text("Fact 51:").count() == 0

        # Delete all: refused without the words, done with them.
        await submit(page, page.get_by_role("button", name="Delete all memories"))
        assert "Nothing was deleted" in await page.get_by_role("alert").inner_text()
        await page.get_by_label("Type delete all to confirm").fill("delete all")
        await submit(page, page.get_by_role("button", name="Delete all memories"))
        assert "Every memory and document was deleted" in await page.get_by_role("status").inner_text()
        assert await page.get_by_text("No memories yet").count() == 1
        assert dialogs == []
    assert live_ids(server, alice) == set()


def test_the_url_chatgpts_fetch_cites_opens_the_memory(server: RunningServer, alice: User) -> None:
    """Issue 14's visible bug: `fetch` results cite {issuer}/memories/{id}, which answered 404."""
    claude = McpHttp(server.mcp_url, new_flow(server.base_url).tokens(alice.email)["access_token"])
    saved = claude.call_tool("add_memories", {"text": "Favourite band is Radiohead"})["structuredContent"]["saved"]
    registration = {"client_name": "ChatGPT", "redirect_uris": ["https://chatgpt.com/cb"]}
    chatgpt = McpHttp(server.mcp_url, new_flow(server.base_url, registration).tokens(alice.email)["access_token"])
    document = chatgpt.call_tool("fetch", {"id": saved[0]["id"]})["structuredContent"]
    assert document["url"].startswith(server.settings.issuer + "/memories/")
    with signed_in_client(server, alice.email) as client:
        page = client.get(document["url"].removeprefix(server.settings.issuer))
        assert page.status_code == 200 and "Favourite band is Radiohead" in page.text
    with httpx.Client() as anonymous:  # signed out: sign in first, then back to it
        answer = anonymous.get(document["url"])
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin?next=%2Fmemories%2F")
