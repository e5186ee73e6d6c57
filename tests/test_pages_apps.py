"""`/apps`: the person's connected apps, "last used", and "Disconnect" (CONTRACT.md, "The person's
pages"): a disconnected app's tokens stop at once and connecting again asks again; another
person's app answers 404 exactly like an unknown id; every POST needs its CSRF field."""

from __future__ import annotations

import re

import httpx
import pytest
import sqlalchemy as sa

from jean_memory import clock
from jean_memory.accounts.users import User
from jean_memory.db.tables import grants, oauth_clients
from tests.support.chromium import check_page, chromium_page, require_chromium, sign_in, submit
from tests.support.oauth import CLAUDE_REGISTRATION, PASSWORD, McpHttp, new_flow
from tests.support.pages import csrf_of, post_form, signed_in_client
from tests.support.servers import RunningServer

DISCONNECT = re.compile(r'action="/apps/([0-9a-f]+)/disconnect"')


def grant_ids_on(page: httpx.Response) -> list[str]:
    return DISCONNECT.findall(page.text)


def last_used(server: RunningServer, grant_id: str) -> float | None:
    with server.engine.connect() as conn:
        return conn.execute(sa.select(grants.c.last_used_at).where(grants.c.id == grant_id)).scalar_one()


def test_disconnect_stops_the_tokens_at_once_and_connecting_again_asks_again(
    server: RunningServer, alice: User
) -> None:
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    assert mcp.initialize().status_code == 200
    assert not mcp.call_tool("list_memories", {"limit": 5}).get("isError")
    with signed_in_client(server, alice.email) as browser:
        page = browser.get("/apps")
        assert page.status_code == 200
        assert "claudeai" in page.text and "registered here" in page.text
        assert "Read and save your memories" in page.text
        (grant_id,) = grant_ids_on(page)
        answer = post_form(browser, "/apps", f"/apps/{grant_id}/disconnect")
        assert answer.status_code == 303 and answer.headers["location"] == "/apps?disconnected=1"
        after = browser.get(answer.headers["location"])
        assert grant_ids_on(after) == [] and "Disconnected" in after.text
    # The same access token is refused at once, and so is the refresh token.
    assert mcp.initialize().status_code == 401
    assert mcp.rpc("tools/call", {"name": "list_memories", "arguments": {"limit": 5}}).status_code == 401
    refused = flow.refresh(tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    # The consent was forgotten: the next authorization (same browser, still signed in) asks.
    again = flow.authorize()
    assert again.status_code == 200 and 'value="approve"' in again.text


def test_last_used_is_written_when_the_grant_is_checked_and_at_refresh(server: RunningServer, alice: User) -> None:
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    with signed_in_client(server, alice.email) as browser:
        (grant_id,) = grant_ids_on(browser.get("/apps"))
        assert last_used(server, grant_id) is None
        assert "never" in browser.get("/apps").text
        mcp = McpHttp(server.mcp_url, tokens["access_token"])
        assert mcp.initialize().status_code == 200
        first = last_used(server, grant_id)
        assert first is not None and abs(first - clock.now()) < 5
        assert "just now" in browser.get("/apps").text
        # Within the minute no write, however often the grant is read from the database.
        clock.advance(40)  # past the revocation cache's 30 s: the grant is read again
        assert mcp.initialize().status_code == 200
        assert last_used(server, grant_id) == first
        clock.advance(40)  # 80 s after the first use
        assert mcp.initialize().status_code == 200
        second = last_used(server, grant_id)
        assert second is not None and second >= first + 80
        clock.advance(10)
        assert flow.refresh(tokens["refresh_token"]).status_code == 200
        third = last_used(server, grant_id)
        assert third is not None and third >= second + 10


def test_another_persons_app_is_404_like_an_unknown_one(server: RunningServer, alice: User, bob: User) -> None:
    bobs_flow = new_flow(server.base_url)
    bobs_tokens = bobs_flow.tokens(bob.email)
    with signed_in_client(server, bob.email) as bobs_browser:
        (bobs_grant,) = grant_ids_on(bobs_browser.get("/apps"))
    with signed_in_client(server, alice.email) as browser:
        assert grant_ids_on(browser.get("/apps")) == []
        theirs = post_form(browser, "/apps", f"/apps/{bobs_grant}/disconnect")
        unknown = post_form(browser, "/apps", f"/apps/{'0' * 32}/disconnect")
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.text == unknown.text
    assert McpHttp(server.mcp_url, bobs_tokens["access_token"]).initialize().status_code == 200
    assert bobs_flow.refresh(bobs_tokens["refresh_token"]).status_code == 200


def test_disconnect_needs_the_csrf_field_and_a_session(server: RunningServer, alice: User) -> None:
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    with signed_in_client(server, alice.email) as browser:
        (grant_id,) = grant_ids_on(browser.get("/apps"))
        assert browser.post(f"/apps/{grant_id}/disconnect", data={}).status_code == 403
        assert browser.post(f"/apps/{grant_id}/disconnect", data={"csrf_token": "0" * 64}).status_code == 403
    with httpx.Client(base_url=server.base_url) as stranger:
        assert stranger.get("/apps").status_code == 303  # to the sign-in page
        page = stranger.get("/signin")
        assert stranger.post(f"/apps/{grant_id}/disconnect", data={"csrf_token": csrf_of(page.text)}).status_code == 403
    assert McpHttp(server.mcp_url, tokens["access_token"]).initialize().status_code == 200


def test_an_app_named_like_a_known_one_is_shown_with_its_real_host_and_escaped(
    server: RunningServer, alice: User
) -> None:
    impostor = new_flow(
        server.base_url,
        {**CLAUDE_REGISTRATION, "client_name": "Claude", "redirect_uris": ["https://evil.example/cb"]},
    )
    impostor.tokens(alice.email)
    scripted = new_flow(
        server.base_url,
        {
            **CLAUDE_REGISTRATION,
            "client_name": "<script>alert(1)</script>\u202eppa",
            "redirect_uris": ["https://x.example/cb"],
        },
    )
    scripted.tokens(alice.email)
    with signed_in_client(server, alice.email) as browser:
        page = browser.get("/apps").text
    assert "this app is from evil.example, not claude.ai" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;ppa" in page
    assert "\u202e" not in page


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.one_database
async def test_apps_keys_and_account_in_chromium(server: RunningServer, alice: User) -> None:
    """The person's own pages as a person uses them: an app connected through the real OAuth
    flow is disconnected, a key created and revoked, the password changed."""
    require_chromium()
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    async with chromium_page() as page:
        assert (await sign_in(page, server.base_url, alice.email, PASSWORD, next_path="/apps")).ok
        await page.get_by_role("cell", name="claudeai", exact=True).wait_for()
        await check_page(page, "apps")
        await submit(page, page.get_by_role("button", name="Disconnect"))
        await page.get_by_role("status").filter(has_text="Disconnected").wait_for()
        assert await page.get_by_role("button", name="Disconnect").count() == 0
        assert McpHttp(server.mcp_url, tokens["access_token"]).initialize().status_code == 401

        await page.goto(server.base_url + "/keys")
        created = await submit(page, page.get_by_role("button", name="Create key"))
        assert created.ok
        key = await page.get_by_role("textbox", name="New key").input_value()
        assert key.startswith("jm_sk_")
        await page.get_by_role("button", name="Copy").wait_for()  # the copy button appears with JS
        await check_page(page, "keys")
        await submit(page, page.get_by_role("button", name="Revoke"))
        await page.get_by_role("status").filter(has_text="Key revoked").wait_for()
        assert await page.get_by_role("button", name="Revoke").count() == 0

        await page.goto(server.base_url + "/account")
        await check_page(page, "account")
        await page.get_by_label("Current password").fill(PASSWORD)
        await page.get_by_label("New password").fill("a much longer new passphrase")
        await submit(page, page.get_by_role("button", name="Change password"))
        await page.get_by_role("status").filter(has_text="Password changed").wait_for()


def test_a_metadata_document_app_shows_its_host_in_ascii_and_a_forgotten_client_still_lists(
    server: RunningServer, alice: User
) -> None:
    """A client named by a metadata document URL shows that URL's host (punycode for a look-alike);
    a grant whose client row was swept is listed as an unknown app and can still be disconnected."""
    now = clock.now()
    lookalike = "https://cl\u0430ude.ai/oauth/client.json"  # a Cyrillic a (U+0430)
    swept = "https://gone.example/client.json"
    with server.engine.begin() as conn:
        conn.execute(
            oauth_clients.insert().values(
                client_id=lookalike,
                client_name="Claude",
                redirect_uris=["https://claude.ai/api/mcp/auth_callback"],
                token_endpoint_auth_method="none",
                grant_types=["authorization_code", "refresh_token"],
                source="cimd",
                metadata={},
                created_at=now,
            )
        )
        for client_id in (lookalike, swept):
            conn.execute(
                grants.insert().values(
                    id=clock.new_id(),
                    user_id=alice.id,
                    client_id=client_id,
                    scope="memory",
                    resource=server.mcp_url,
                    created_at=now,
                )
            )
    with signed_in_client(server, alice.email) as browser:
        page = browser.get("/apps")
        assert "xn--" in page.text and "cl\u0430ude" not in page.text
        assert "this app is from xn--" in page.text  # the name "Claude" is not theirs to use
        assert "Unknown app" in page.text and "gone.example" in page.text
        assert len(grant_ids_on(page)) == 2
        for grant_id in grant_ids_on(page):
            assert post_form(browser, "/apps", f"/apps/{grant_id}/disconnect").status_code == 303
        assert grant_ids_on(browser.get("/apps")) == []
