"""The person's sign-in to the pages: home, /signin, /signout, the shared browser session,
`next` kept on this site, CSRF on every POST (CONTRACT.md, "The person's pages")."""

from __future__ import annotations

import re

import httpx
import pytest

from jean_memory.accounts.users import User
from tests.support.chromium import check_page, chromium_page, require_chromium, sign_in, submit
from tests.support.oauth import PASSWORD, Flow
from tests.support.pages import csrf_of, signed_in_client
from tests.support.servers import RunningServer


def test_home_answers_json_to_clients_and_a_page_to_browsers(server: RunningServer) -> None:
    as_client = httpx.get(server.base_url + "/")
    assert as_client.json() == {"name": "Jean Memory", "connector_url": server.mcp_url}
    page = httpx.get(server.base_url + "/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert server.mcp_url in page.text and "Sign in" in page.text
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    "next_path,lands_on",
    [
        ("/apps", "/apps"),
        ("//evil.example/x", "/memories"),
        ("https://evil.example/", "/memories"),
        ("/\\evil.example", "/memories"),
        ("javascript:alert(1)", "/memories"),
        ("/%0d%0aSet-Cookie:x=1", "/%0d%0aSet-Cookie:x=1"),
    ],
)
def test_sign_in_goes_only_to_a_same_site_next(
    server: RunningServer, alice: User, next_path: str, lands_on: str
) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        page = client.get("/signin", params={"next": next_path})
        answer = client.post(
            "/signin",
            data={"email": alice.email, "password": PASSWORD, "csrf_token": csrf_of(page.text), "next": next_path},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == lands_on


def test_sign_in_rotates_the_session_and_sign_out_ends_it(server: RunningServer, alice: User) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        client.cookies.set("jm_session", "planted-by-someone-else", domain="127.0.0.1")
        page = client.get("/signin")
        client.post("/signin", data={"email": alice.email, "password": PASSWORD, "csrf_token": csrf_of(page.text)})
        session = client.cookies.get("jm_session")
        assert session and session != "planted-by-someone-else"
        home = client.get("/", headers={"Accept": "text/html"})
        assert "Sign out" in home.text
        assert client.post("/signout", data={"csrf_token": csrf_of(home.text)}).status_code == 303
        # The old cookie value no longer signs anybody in.
        again = httpx.get(server.base_url + "/signin", cookies={"jm_session": session}, follow_redirects=False)
        assert again.status_code == 200


def test_posts_without_or_with_a_wrong_csrf_field_are_403(server: RunningServer, alice: User) -> None:
    with signed_in_client(server, alice.email) as client:
        assert client.post("/signout", data={}).status_code == 403
        assert client.post("/signout", data={"csrf_token": "0" * 64}).status_code == 403
        assert client.post("/signin", data={"email": alice.email, "password": PASSWORD}).status_code == 403


def test_a_failed_sign_in_shows_one_message_for_unknown_email_and_wrong_password(
    server: RunningServer, alice: User
) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        answers = []
        for email, password in ((alice.email, "wrong password!"), ("nobody@example.com", PASSWORD)):
            page = client.get("/signin")
            answer = client.post(
                "/signin", data={"email": email, "password": password, "csrf_token": csrf_of(page.text)}
            )
            assert answer.status_code == 400
            answers.append(re.findall(r'role="alert">([^<]+)<', answer.text))
        assert answers[0] == answers[1] and len(answers[0]) == 1


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.one_database
async def test_home_and_sign_in_in_chromium(server: RunningServer, alice: User) -> None:
    require_chromium()
    async with chromium_page() as page:
        await page.goto(server.base_url + "/")
        await check_page(page, "home-signed-out")
        await page.goto(server.base_url + "/signin")
        await check_page(page, "signin")
        response = await sign_in(page, server.base_url, alice.email, PASSWORD, next_path="/")
        assert response.ok
        await page.goto(server.base_url + "/")
        await check_page(page, "home")
        await submit(page, page.get_by_role("button", name="Sign out"))
        assert await page.get_by_role("link", name="Sign in").count() == 1


def test_one_browser_session_serves_the_pages_and_the_oauth_sign_in(server: RunningServer, alice: User) -> None:
    """Signed in on /signin, an OAuth flow started in the same browser goes straight to consent;
    signed in through the OAuth form, the pages know the person."""
    with signed_in_client(server, alice.email) as browser:
        flow = Flow(base_url=server.base_url, http=browser)
        flow.register()
        page = flow.authorize()
        assert page.status_code == 200
        assert 'value="approve"' in page.text and 'name="password"' not in page.text
        assert alice.email in page.text
    with httpx.Client(timeout=15, headers={"Accept": "text/html"}) as browser:
        flow = Flow(base_url=server.base_url, http=browser)
        flow.register()
        consent = flow.sign_in(flow.authorize(), alice.email)
        assert 'value="approve"' in consent.text
        home = browser.get(server.base_url + "/")
        assert "Sign out" in home.text and alice.email in home.text


def test_an_unknown_path_gets_the_pages_not_found_for_browsers_and_plain_404_for_clients(
    server: RunningServer, alice: User
) -> None:
    with signed_in_client(server, alice.email) as browser:
        unknown = browser.get("/nowhere")
        admin = browser.get("/admin")  # alice is no administrator
        memory = browser.get("/memories/" + "0" * 32)
    assert unknown.status_code == admin.status_code == memory.status_code == 404

    def main(page: httpx.Response) -> str:  # the navigation marks the current section
        return page.text[page.text.index("<main") :]

    assert main(unknown) == main(admin) == main(memory)
    assert unknown.headers["x-frame-options"] == "DENY"
    as_client = httpx.get(server.base_url + "/nowhere")
    assert as_client.status_code == 404 and as_client.text == "Not Found"
