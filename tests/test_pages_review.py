"""Findings of the security review of the person's pages (issue 14), each shown failing first:
form bodies read under a cap as they arrive, redirects with the pages' headers, an
administrator's Disable/Delete stopping tokens at once, "Last active" surviving sign-out."""

from __future__ import annotations

import re

import httpx
import pytest

from jean_memory import clock
from jean_memory.accounts.users import User, create_user
from jean_memory.memory.service import MemoryService
from tests.support.oauth import FORM_HEADERS, PASSWORD, McpHttp, chunked_form, new_flow, surrogate_multipart
from tests.support.pages import csrf_of, post_form, signed_in_client
from tests.support.servers import RunningServer


@pytest.fixture
def admin(server: RunningServer) -> User:
    return create_user(server.engine, "admin@example.com", PASSWORD, is_admin=True)


def test_a_chunked_form_past_the_cap_is_refused_not_parsed(server: RunningServer, alice: User) -> None:
    """A chunked body has no Content-Length: the pages counted only that header, so anyone could
    make /signin (no session needed) buffer and parse megabytes. Refused like an oversized
    declared body, and the sign-in it carried is never tried."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        token = csrf_of(client.get("/signin").text)
        fields = {"email": alice.email, "password": PASSWORD, "csrf_token": token}
        answer = client.post("/signin", content=chunked_form(fields, 1024 * 1024), headers=FORM_HEADERS)
        assert answer.status_code == 403, answer.status_code
        assert "jm_session=" not in answer.headers.get("set-cookie", "")
        # Under the cap, chunked or not, the form still works.
        small = client.post("/signin", content=chunked_form(fields, 16 * 1024), headers=FORM_HEADERS)
        assert small.status_code == 303


def test_a_lone_surrogate_in_a_page_form_is_refused_not_a_500(server: RunningServer, alice: User) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        token = csrf_of(client.get("/signin").text)
        body, headers = surrogate_multipart(
            {"email": "alice@example.com\\udfff", "password": "p\\udfff", "csrf_token": token}
        )
        answer = client.post("/signin", content=body, headers=headers)
        assert answer.status_code == 403, answer.status_code
    with signed_in_client(server, alice.email) as browser:
        token = csrf_of(browser.get("/keys").text)
        body, headers = surrogate_multipart({"current_password": "x\\udfff", "new_password": "y", "csrf_token": token})
        assert browser.post("/account/password", content=body, headers=headers).status_code == 403


def test_every_redirect_of_the_pages_carries_the_page_headers(server: RunningServer, alice: User) -> None:
    """The redirect to sign in (its Location holds where the person was going) and the 303 after
    a POST are pages too: no-store, never framed, the strict CSP."""

    def check(answer: httpx.Response) -> None:
        assert answer.status_code in (302, 303), answer.status_code
        assert answer.headers.get("cache-control") == "no-store", answer.headers
        assert answer.headers.get("x-frame-options") == "DENY"
        assert "frame-ancestors 'none'" in answer.headers.get("content-security-policy", "")

    with httpx.Client(base_url=server.base_url, timeout=15) as anonymous:
        check(anonymous.get("/memories", params={"q": "private words"}))
    with signed_in_client(server, alice.email) as browser:
        check(browser.get("/signin"))  # signed in already: straight on
        check(post_form(browser, "/apps", "/signout"))


@pytest.mark.parametrize("action", ["disable", "delete"])
def test_disable_or_delete_from_admin_stops_the_persons_tokens_at_once(
    server: RunningServer, admin: User, alice: User, action: str
) -> None:
    """The token check caches a live grant for up to 30 s; "Disconnect" and "Delete my account"
    mark the grants revoked on this instance at once, the administrator's Disable and Delete did
    not, so the person's apps kept working after the page said they stopped."""
    tokens = new_flow(server.base_url).tokens(alice.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    assert mcp.initialize().status_code == 200  # the grant is now cached as live
    with signed_in_client(server, admin.email) as browser:
        page = f"/admin/people/{alice.id}/delete" if action == "delete" else "/admin"
        assert post_form(browser, page, f"/admin/people/{alice.id}/{action}").status_code == 303
    assert mcp.initialize().status_code == 401


def test_last_active_survives_signing_out(server: RunningServer, admin: User, alice: User) -> None:
    with signed_in_client(server, alice.email) as browser:
        assert post_form(browser, "/memories", "/signout").status_code == 303
    with signed_in_client(server, admin.email) as browser:
        page = browser.get("/admin").text
    row = page[page.index(alice.email) :]
    last_active = re.search(r'data-label="Last active">([^<]*)<', row)
    assert last_active and last_active.group(1) != "never"


RESTORE = re.compile(r'action="/memories/([0-9a-f]+)/restore"')
NEXT = re.compile(r'<a rel="next" href="([^"]+)">Next</a>')


def test_the_trash_pages_50_at_a_time_like_the_list(server: RunningServer, alice: User) -> None:
    """The trash page read and rendered every trashed row at once (full texts): a person who
    emptied thousands of memories into it got one page of thousands. Paged by keyset on
    (deleted_at, pk) like /memories, newest deletion first, and every one is still reachable."""
    service = MemoryService(server.engine, None)
    saved = []
    for i in range(60):
        clock.advance(60)
        saved.append(service.add(alice.id, f"Trashed fact {i}: worth keeping a while").saved[0].id)
    for memory_id in saved:
        clock.advance(1)
        assert service.delete(alice.id, memory_id)
    with signed_in_client(server, alice.email) as client:
        first = client.get("/memories/deleted")
        assert first.status_code == 200
        assert RESTORE.findall(first.text) == saved[::-1][:50]
        link = NEXT.search(first.text)
        assert link, "no Next link on a full trash page"
        second = client.get(link.group(1).replace("&amp;", "&"))
        assert RESTORE.findall(second.text) == saved[::-1][50:]
        assert not NEXT.search(second.text)
        tampered = client.get("/memories/deleted", params={"after": "not-a-cursor"})
        assert tampered.status_code == 400 and "page link" in tampered.text


def test_a_csrf_pair_from_another_browser_does_not_work_in_a_signed_in_one(server: RunningServer, alice: User) -> None:
    """The pages' token was an HMAC of the CSRF cookie only: anyone could fetch a (cookie, token)
    pair of their own, and whoever can plant a cookie in the person's browser (a sibling
    subdomain, a network attacker on plain http) could then post any form there. Bound to the
    browser session too, a pair made outside the person's session is refused."""
    with httpx.Client(base_url=server.base_url, timeout=15) as attacker:
        token = csrf_of(attacker.get("/signin").text)
        planted = attacker.cookies["jm_csrf"]
    saved = MemoryService(server.engine, None).add(alice.id, "A fact the attacker wants gone").saved[0].id
    with signed_in_client(server, alice.email) as browser:
        browser.cookies.set("jm_csrf", planted)
        forged = browser.post("/memories/delete-all", data={"confirm": "delete all", "csrf_token": token})
        assert forged.status_code == 403, forged.status_code
        assert browser.get(f"/memories/{saved}").status_code == 200
        # The person's own forms, with the same planted cookie, still work.
        assert post_form(browser, "/memories", "/memories/delete-all", {"confirm": "delete all"}).status_code == 303
