"""Making accounts from the browser and managing them: the first-run setup link, sign-up at
/join under each JEAN_MEMORY_SIGNUP policy, invites, and the administrator's /admin page
(CONTRACT.md, "The person's pages" and "Install and run")."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jean_memory import clock
from jean_memory.accounts.invites import (
    INVITE,
    SETUP,
    LinkInvalid,
    create_invite,
    create_setup_link,
    find_link,
    redeem,
)
from jean_memory.accounts.lifecycle import list_users
from jean_memory.accounts.users import User, create_user, find_user_by_email
from jean_memory.db import rate_limits
from tests.support.chromium import check_page, chromium_page, require_chromium, submit
from tests.support.oauth import PASSWORD
from tests.support.pages import csrf_of, post_form, signed_in_client
from tests.support.rate_windows import to_window_start
from tests.support.servers import RunningServer, threaded_server

HTML = {"Accept": "text/html"}


def sign_up(
    client: httpx.Client, path: str, email: str, password: str = PASSWORD, again: str | None = None
) -> httpx.Response:
    """Open a sign-up page (/setup?token=... or /join?...) and submit its form as a browser would."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    hidden = dict(re.findall(r'type="hidden" name="(token|invite)" value="([^"]*)"', page.text))
    data = {"email": email, "password": password, "password_again": password if again is None else again}
    return client.post(path.split("?")[0], data={**hidden, **data, "csrf_token": csrf_of(page.text)})


def browser(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=15, headers=HTML)


@pytest.fixture
def admin(server: RunningServer) -> User:
    return create_user(server.engine, "admin@example.com", PASSWORD, is_admin=True)


@pytest.fixture
def signup_server(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    with threaded_server(database_url, tmp_path / "data", signup=request.param) as running:
        yield running


# First run: the setup link.


def test_the_setup_link_makes_the_first_administrator_once_and_signs_them_in(server: RunningServer) -> None:
    token = create_setup_link(server.engine)
    assert token
    with browser(server) as client:
        page = client.get("/setup", params={"token": token})
        assert page.status_code == 200 and "Create account" in page.text
        assert token not in re.sub(r'name="token" value="[^"]*"', "", page.text)  # only in the form's field
        answer = sign_up(client, f"/setup?token={token}", "Me@Example.com")
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        home = client.get("/")
        assert "Sign out" in home.text and 'href="/admin"' in home.text
        assert client.get("/admin").status_code == 200
    assert [(u.email, u.is_admin) for u in list_users(server.engine)] == [("me@example.com", True)]
    assert create_setup_link(server.engine) is None  # first run is over
    with browser(server) as other:
        used = other.get("/setup", params={"token": token})
        assert used.status_code == 404 and "Create account" not in used.text


def test_a_used_an_expired_and_a_wrong_setup_link_answer_the_same_404(server: RunningServer) -> None:
    expiring = create_setup_link(server.engine)
    with browser(server) as client:
        wrong = client.get("/setup", params={"token": "not-a-token"})
        missing = client.get("/setup")
        clock.advance(24 * 3600 - 60)
        assert client.get("/setup", params={"token": expiring}).status_code == 200  # still valid just before 24 h
        clock.advance(120)
        expired = client.get("/setup", params={"token": expiring})
        assert [r.status_code for r in (wrong, missing, expired)] == [404, 404, 404]
        assert wrong.text == missing.text == expired.text
        assert "cannot be used" in wrong.text
        fresh = create_setup_link(server.engine)
        assert sign_up(client, f"/setup?token={fresh}", "me@example.com").status_code == 303
        assert client.get("/setup", params={"token": fresh}).status_code == 404


def test_a_setup_link_stops_working_once_any_account_exists(server: RunningServer) -> None:
    token = create_setup_link(server.engine)
    create_user(server.engine, "made-with-the-cli@example.com", PASSWORD)
    with browser(server) as client:
        assert client.get("/setup", params={"token": token}).status_code == 404
    with pytest.raises(LinkInvalid):
        redeem(server.engine, SETUP, token, "late@example.com", PASSWORD)
    assert find_user_by_email(server.engine, "late@example.com") is None


def test_racing_uses_make_exactly_one_account(server: RunningServer) -> None:
    """Eight requests at once with one setup link, and eight with eight different setup links:
    one first administrator each time, never two."""
    same = create_setup_link(server.engine)
    tokens = [same] * 8
    results = race(server, [(SETUP, t, f"same{i}@example.com") for i, t in enumerate(tokens)])
    assert sum(isinstance(r, User) for r in results) == 1, results
    assert all(isinstance(r, User | LinkInvalid) for r in results), results
    invite = create_invite(server.engine)
    results = race(server, [(INVITE, invite, f"invited{i}@example.com") for i in range(8)])
    assert sum(isinstance(r, User) for r in results) == 1, results
    assert len(list_users(server.engine)) == 2


def test_different_setup_links_used_at_once_make_one_administrator(server: RunningServer) -> None:
    tokens = [create_setup_link(server.engine) for _ in range(6)]
    results = race(server, [(SETUP, t, f"first{i}@example.com") for i, t in enumerate(tokens)])
    assert sum(isinstance(r, User) for r in results) == 1, results
    assert [u.is_admin for u in list_users(server.engine)] == [True]


def race(server: RunningServer, attempts: list[tuple[str, str | None, str]]) -> list[object]:
    """Run `redeem` for every attempt in its own thread, all released together."""
    start = threading.Barrier(len(attempts))
    results: list[object] = [None] * len(attempts)

    def attempt(i: int, kind: str, token: str | None, email: str) -> None:
        start.wait(timeout=30)
        try:
            results[i] = redeem(server.engine, kind, token, email, PASSWORD)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=attempt, args=(i, *a)) for i, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_sign_up_mistakes_are_explained_and_keep_the_link(server: RunningServer) -> None:
    token = create_setup_link(server.engine)
    path = f"/setup?token={token}"
    with browser(server) as client:
        differ = sign_up(client, path, "me@example.com", again="something else entirely")
        short = sign_up(client, path, "me@example.com", password="short")
        bad_email = sign_up(client, path, "not an email")
        assert [r.status_code for r in (differ, short, bad_email)] == [400, 400, 400]
        assert "passwords differ" in differ.text
        assert "at least 8 characters" in short.text
        assert "is not an email address" in bad_email.text
        assert sign_up(client, path, "me@example.com").status_code == 303


# Sign-up at /join.


@pytest.mark.parametrize("signup_server", ["invite"], indirect=True)
def test_invite_policy_needs_a_valid_unused_invite(signup_server: RunningServer) -> None:
    server = signup_server
    token = create_invite(server.engine)
    with browser(server) as client:
        bare = client.get("/join")
        assert bare.status_code == 403 and "by invitation" in bare.text
        assert client.get("/join", params={"invite": "wrong"}).status_code == 404
        answer = sign_up(client, f"/join?invite={token}", "new@example.com")
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        assert "Sign out" in client.get("/").text
        assert client.get("/admin").status_code == 404  # a normal account
    with browser(server) as other:
        assert other.get("/join", params={"invite": token}).status_code == 404  # used up
    assert [(u.email, u.is_admin) for u in list_users(server.engine)] == [("new@example.com", False)]


@pytest.mark.parametrize("signup_server", ["open"], indirect=True)
def test_open_policy_needs_no_invite(signup_server: RunningServer) -> None:
    with browser(signup_server) as client:
        assert sign_up(client, "/join", "anyone@example.com").status_code == 303
        assert "anyone@example.com" in client.get("/").text
        taken = sign_up(client, "/join", "anyone@example.com")
        assert taken.status_code == 400 and "already exists" in taken.text
    assert [u.is_admin for u in list_users(signup_server.engine)] == [False]


@pytest.mark.parametrize("signup_server", ["open"], indirect=True)
def test_sign_ups_from_one_address_are_limited(signup_server: RunningServer) -> None:
    """Each attempt hashes a password: under `open`, 60 an hour per address, then 429 with a
    message (the 61st), and no account made by the refused one."""
    to_window_start(rate_limits.SIGN_UPS)
    with browser(signup_server) as client:
        csrf = csrf_of(client.get("/signin").text)
        for n in range(60):
            weak = client.post(
                "/join",
                data={"email": f"p{n}@example.com", "password": "short", "password_again": "short", "csrf_token": csrf},
            )
            assert weak.status_code == 400
        refused = sign_up(client, "/join", "late@example.com")
        assert refused.status_code == 429 and "Too many sign-ups" in refused.text
    assert list_users(signup_server.engine) == []


@pytest.mark.parametrize("signup_server", ["closed"], indirect=True)
def test_closed_policy_refuses_every_sign_up_even_with_an_invite(signup_server: RunningServer) -> None:
    token = create_invite(signup_server.engine)
    with browser(signup_server) as client:
        for params in ({}, {"invite": token}):
            page = client.get("/join", params=params)
            assert page.status_code == 403 and "does not take sign-ups" in page.text
        csrf = csrf_of(client.get("/signin").text)
        posted = client.post(
            "/join",
            data={"invite": token, "email": "x@example.com", "password": PASSWORD, "password_again": PASSWORD}
            | {"csrf_token": csrf},
        )
        assert posted.status_code == 403
    assert list_users(signup_server.engine) == []
    assert find_link(signup_server.engine, INVITE, token) is not None  # not used up by the refusal


def test_an_invite_for_one_email_takes_only_that_email_and_lasts_7_days(server: RunningServer) -> None:
    token = create_invite(server.engine, email="Bob@Example.com")
    other = create_invite(server.engine)
    with browser(server) as client:
        page = client.get("/join", params={"invite": token})
        assert 'value="bob@example.com"' in page.text and "readonly" in page.text
        wrong = sign_up(client, f"/join?invite={token}", "carol@example.com")
        assert wrong.status_code == 400 and "This invite is for bob@example.com" in wrong.text
        assert sign_up(client, f"/join?invite={token}", "bob@example.com").status_code == 303
    clock.advance(7 * 86400 + 1)
    with browser(server) as client:
        assert client.get("/join", params={"invite": other}).status_code == 404
    assert [u.email for u in list_users(server.engine)] == ["bob@example.com"]


def test_sign_up_posts_without_a_csrf_field_are_403(server: RunningServer) -> None:
    setup = create_setup_link(server.engine)
    invite = create_invite(server.engine)
    form = {"email": "x@example.com", "password": PASSWORD, "password_again": PASSWORD}
    with browser(server) as client:
        client.get("/signin")  # has the CSRF cookie, not the field
        assert client.post("/setup", data={**form, "token": setup}).status_code == 403
        assert client.post("/join", data={**form, "invite": invite, "csrf_token": "0" * 64}).status_code == 403
    assert list_users(server.engine) == []


# The administrator's page.


def test_admin_is_404_for_everyone_but_administrators(server: RunningServer, admin: User, alice: User) -> None:
    signed_out = httpx.get(server.base_url + "/admin", headers=HTML)
    with signed_in_client(server, alice.email) as client:
        as_alice = client.get("/admin")
        unknown_id = client.get(f"/admin/people/{admin.id}/delete")
        # A valid CSRF field does not help a non-administrator either.
        posted = post_form(client, "/", f"/admin/people/{admin.id}/disable")
        invited = post_form(client, "/", "/admin/invite")
    assert [r.status_code for r in (signed_out, as_alice, unknown_id, posted, invited)] == [404] * 5
    assert "People" not in as_alice.text and "Not found" in as_alice.text
    assert as_alice.text == unknown_id.text  # /admin itself reads as an unknown id would
    signed_out_unknown = httpx.get(server.base_url + "/admin/people/no-such-id/delete", headers=HTML)
    assert without_csrf(signed_out.text) == without_csrf(signed_out_unknown.text)
    assert [u.disabled_at for u in list_users(server.engine)] == [None, None]
    with signed_in_client(server, admin.email) as client:
        page = client.get("/admin")
        assert page.status_code == 200 and "alice@example.com" in page.text


def without_csrf(html: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]*"', "", html)


def test_admin_posts_without_csrf_are_403(server: RunningServer, admin: User, alice: User) -> None:
    with signed_in_client(server, admin.email) as client:
        assert client.post("/admin/invite", data={}).status_code == 403
        assert client.post(f"/admin/people/{alice.id}/disable", data={"csrf_token": "bad"}).status_code == 403
        assert client.post(f"/admin/people/{alice.id}/delete", data={}).status_code == 403
    assert find_user_by_email(server.engine, alice.email) is not None
    assert [u.disabled_at for u in list_users(server.engine)] == [None, None]


def test_admin_invites_shows_the_link_once_and_it_works(server: RunningServer, admin: User) -> None:
    with signed_in_client(server, admin.email) as client:
        page = post_form(client, "/admin", "/admin/invite", {"email": "friend@example.com"})
        assert page.status_code == 200
        link = re.search(r'id="invite-link" type="text" readonly value="([^"]+)"', page.text)
        assert link and link.group(1).startswith(server.settings.issuer + "/join?invite=")
        assert link.group(1) not in client.get("/admin").text  # shown once
        bad = post_form(client, "/admin", "/admin/invite", {"email": "not an email"})
        assert bad.status_code == 400 and "is not an email address" in bad.text
        taken = post_form(client, "/admin", "/admin/invite", {"email": admin.email})
        assert taken.status_code == 400 and "already exists" in taken.text
    with browser(server) as friend:
        path = link.group(1).removeprefix(server.settings.issuer)
        assert sign_up(friend, path, "friend@example.com").status_code == 303


def test_admin_disables_enables_and_deletes_others_but_not_themselves(
    server: RunningServer, admin: User, alice: User
) -> None:
    with signed_in_client(server, admin.email) as client:
        for action in ("disable", "delete"):
            refused = post_form(client, "/admin", f"/admin/people/{admin.id}/{action}")
            assert refused.status_code == 400 and "cannot" in refused.text and "own account" in refused.text
        assert client.get(f"/admin/people/{admin.id}/delete").status_code == 400
        assert post_form(client, "/admin", "/admin/people/no-such-id/disable").status_code == 404
        assert post_form(client, "/admin", f"/admin/people/{alice.id}/promote").status_code == 404

        disabled = post_form(client, "/admin", f"/admin/people/{alice.id}/disable")
        assert disabled.status_code == 303 and disabled.headers["location"] == "/admin?done=disabled"
        assert "disabled" in client.get("/admin?done=disabled").text
        assert alice_signs_in(server) == 400
        assert post_form(client, "/admin", f"/admin/people/{alice.id}/enable").status_code == 303
        assert alice_signs_in(server) == 303

        confirm = client.get(f"/admin/people/{alice.id}/delete")
        assert confirm.status_code == 200 and "Delete alice@example.com?" in confirm.text
        deleted = post_form(client, f"/admin/people/{alice.id}/delete", f"/admin/people/{alice.id}/delete")
        assert deleted.status_code == 303
        assert client.get(f"/admin/people/{alice.id}/delete").status_code == 404
    assert [u.email for u in list_users(server.engine)] == [admin.email]


def alice_signs_in(server: RunningServer) -> int:
    with httpx.Client(base_url=server.base_url) as client:
        page = client.get("/signin")
        return client.post(
            "/signin", data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
        ).status_code


def test_admin_lists_memory_count_and_last_active(server: RunningServer, admin: User, alice: User) -> None:
    from jean_memory.memory.service import MemoryService

    MemoryService(server.engine, None).add(alice.id, "I like green tea", client="test")
    with signed_in_client(server, admin.email) as client:
        page = client.get("/admin").text
    row = re.search(r"<tr>\s*<td data-label=\"Email\">alice@example.com.*?</tr>", page, flags=re.S)
    assert row and '<td data-label="Memories">1</td>' in row.group(0)
    assert '<td data-label="Last active">never</td>' in row.group(0)
    admin_row = re.search(r"<tr>\s*<td data-label=\"Email\">admin@example.com.*?</tr>", page, flags=re.S)
    assert admin_row and "never" not in admin_row.group(0)  # signed in just now


# One walk through it all in Chromium: setup -> home -> admin -> invite -> join.


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.one_database
async def test_first_run_to_a_second_person_in_chromium(server: RunningServer) -> None:
    require_chromium()
    token = create_setup_link(server.engine)
    async with chromium_page() as page:
        await page.goto(f"{server.base_url}/setup?token={token}")
        await check_page(page, "setup")
        await page.get_by_label("Email").fill("me@example.com")
        await page.get_by_label("Password", exact=True).fill(PASSWORD)
        await page.get_by_label("Repeat password").fill(PASSWORD)
        response = await submit(page, page.get_by_role("button", name="Create account"))
        assert response.ok and response.url.rstrip("/") == server.base_url
        assert await page.get_by_role("button", name="Sign out").count() == 1
        await page.get_by_role("link", name="Admin").click()
        await page.wait_for_url("**/admin")
        await page.get_by_label("Email (optional)").fill("friend@example.com")
        await submit(page, page.get_by_role("button", name="Invite"))
        link = await page.get_by_role("textbox", name="Invite link").input_value()
        assert link.startswith(server.base_url + "/join?invite=")
        await check_page(page, "admin-invite")

        friend = await page.context.browser.new_context(viewport={"width": 1280, "height": 800})
        join = await friend.new_page()
        await join.goto(link)
        await check_page(join, "join")
        assert await join.get_by_label("Email").input_value() == "friend@example.com"
        await join.get_by_label("Password", exact=True).fill(PASSWORD)
        await join.get_by_label("Repeat password").fill(PASSWORD)
        await submit(join, join.get_by_role("button", name="Create account"))
        assert await join.get_by_role("button", name="Sign out").count() == 1
        assert await join.get_by_role("link", name="Admin").count() == 0

        await page.goto(server.base_url + "/admin")
        assert await page.get_by_role("cell", name="friend@example.com", exact=True).count() == 1
        await check_page(page, "admin")
        await submit(page, page.get_by_role("button", name="Delete friend@example.com"))
        await check_page(page, "admin-delete")
        await submit(page, page.get_by_role("button", name="Delete"))
        assert await page.get_by_role("cell", name="friend@example.com", exact=True).count() == 0
