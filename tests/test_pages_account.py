"""`/account`: "Change password" (needs the current one; ends the other browser sessions, keeps
this one), "Download my data" (the export JSON), "Delete my account" (type the email; then every
row of the person is gone from every table, on both databases, and nobody else's is touched)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.accounts.api_keys import create_api_key
from jean_memory.accounts.lifecycle import delete_user, disable_user, enable_user, user_columns
from jean_memory.accounts.passwords import hash_password
from jean_memory.accounts.users import AccountError, User, create_user, insert_user
from jean_memory.db import rate_limits
from jean_memory.db.tables import invites, jobs, metadata, users
from tests.support.oauth import PASSWORD, McpHttp, new_flow
from tests.support.pages import csrf_of, post_form, signed_in_client
from tests.support.rate_windows import to_window_start
from tests.support.servers import RunningServer

NEW_PASSWORD = "a much longer new passphrase"


def signs_in(server: RunningServer, email: str, password: str) -> bool:
    with httpx.Client(base_url=server.base_url) as client:
        page = client.get("/signin")
        answer = client.post("/signin", data={"email": email, "password": password, "csrf_token": csrf_of(page.text)})
        return answer.status_code == 303


def test_change_password_needs_the_current_one_and_a_strong_new_one(server: RunningServer, alice: User) -> None:
    with signed_in_client(server, alice.email) as browser:
        wrong = post_form(
            browser,
            "/account",
            "/account/password",
            {"current_password": "not it at all", "new_password": NEW_PASSWORD},
        )
        assert wrong.status_code == 400 and "current password is not right" in wrong.text
        weak = post_form(
            browser, "/account", "/account/password", {"current_password": PASSWORD, "new_password": "short"}
        )
        assert weak.status_code == 400 and "at least 8 characters" in weak.text
    assert signs_in(server, alice.email, PASSWORD) and not signs_in(server, alice.email, NEW_PASSWORD)


def test_change_password_ends_the_other_sessions_and_keeps_this_one(server: RunningServer, alice: User) -> None:
    with signed_in_client(server, alice.email) as other, signed_in_client(server, alice.email) as browser:
        assert other.get("/account").status_code == 200
        changed = post_form(
            browser, "/account", "/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        )
        assert changed.status_code == 303 and changed.headers["location"] == "/account?password=changed"
        assert "Password changed" in browser.get(changed.headers["location"]).text
        assert browser.get("/account").status_code == 200  # still signed in here
        assert other.get("/account").status_code == 303  # signed out there: to /signin
        assert other.get("/account").headers["location"].startswith("/signin")
    assert signs_in(server, alice.email, NEW_PASSWORD) and not signs_in(server, alice.email, PASSWORD)


def test_wrong_current_passwords_count_against_the_sign_in_limit(server: RunningServer, alice: User) -> None:
    to_window_start(rate_limits.SIGN_IN_FAILURES)
    with signed_in_client(server, alice.email) as browser:
        statuses = [
            post_form(
                browser,
                "/account",
                "/account/password",
                {"current_password": f"guess {n}", "new_password": NEW_PASSWORD},
            ).status_code
            for n in range(rate_limits.SIGN_IN_FAILURES.max_count + 1)
        ]
    assert statuses[0] == 400 and statuses[-1] == 429, statuses


def test_download_my_data_is_the_export_of_my_memories_only(server: RunningServer, alice: User, bob: User) -> None:
    for user, text in ((alice, "Alice drinks genmaicha"), (bob, "Bob collects stamps")):
        McpHttp(server.mcp_url, new_flow(server.base_url).tokens(user.email)["access_token"]).call_tool(
            "add_memories", {"text": text}
        )
    with signed_in_client(server, alice.email) as browser:
        answer = browser.get("/account/export")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["content-disposition"].startswith('attachment; filename="jean-memory-export-')
    assert answer.headers["cache-control"] == "no-store"
    data = json.loads(answer.text)
    assert data["format"] == "jean-memory-export" and data["user"] == {"email": alice.email}
    assert [m["text"] for m in data["memories"]] == ["Alice drinks genmaicha"]
    assert httpx.get(server.base_url + "/account/export").status_code == 303  # signed out: to /signin


def test_delete_my_account_needs_the_email_typed_and_a_csrf_field(server: RunningServer, alice: User) -> None:
    with signed_in_client(server, alice.email) as browser:
        assert browser.post("/account/delete", data={"confirm_email": alice.email}).status_code == 403
        assert browser.post("/account/password", data={"current_password": PASSWORD}).status_code == 403
        wrong = post_form(browser, "/account", "/account/delete", {"confirm_email": "bob@example.com"})
        assert wrong.status_code == 400 and "does not match your account" in wrong.text
        assert browser.get("/account").status_code == 200
    assert signs_in(server, alice.email, PASSWORD)


def populate(server: RunningServer, user: User) -> str:
    """Give the person a row in every table a person can own, through the real faces where one
    exists: an OAuth connection (client, consent, grant, code, refresh token) used over MCP
    (memories, vectors, history, trash, a document), an unfinished authorization, an API key,
    a browser session, invites made and used, and a queued job. The access token is returned."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(user.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    saved = mcp.call_tool("add_memories", {"text": f"{user.email} likes green tea", "tags": ["drinks"]})
    memory_id = saved["structuredContent"]["saved"][0]["id"]
    mcp.call_tool("update_memory", {"memory_id": memory_id, "text": f"{user.email} likes genmaicha"})
    other = mcp.call_tool("add_memories", {"text": f"{user.email} lives in Lisbon"})
    mcp.call_tool("delete_memory", {"memory_id": other["structuredContent"]["saved"][0]["id"]})
    mcp.call_tool("store_document", {"title": "Notes", "content": "Some notes about tea. " * 20})
    assert flow.refresh(tokens["refresh_token"]).status_code == 200
    pending = new_flow(server.base_url)
    pending.sign_in(pending.authorize(), user.email)  # left at the consent page: a pending request with their id
    create_api_key(server.engine, user.id)
    now = clock.now()
    with server.engine.begin() as conn:
        for kind, extra in (("invite", {"created_by": user.id}), ("invite", {"used_by": user.id, "used_at": now})):
            conn.execute(
                invites.insert().values(
                    token_hash=clock.sha256_hex(clock.new_token()),
                    kind=kind,
                    created_at=now,
                    expires_at=now + 60,
                    **extra,
                )
            )
        conn.execute(
            jobs.insert().values(
                id=clock.new_id(),
                kind="facts",
                user_id=user.id,
                payload={},
                created_at=now,
                locked_until=now + 86400,  # leased by a worker that is gone: nobody takes it
            )
        )
    return tokens["access_token"]


def rows_of(engine: Engine, user_id: str, parents: dict[str, set[object]]) -> dict[str, int]:
    """Per table, the rows naming the person (any user column, or `users.id`) and the rows
    hanging by a foreign key off a row of theirs seen in `parents` (filled on the first call)."""
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            conditions = [column == user_id for column in user_columns(table)]
            if table is users:
                conditions.append(users.c.id == user_id)
            for fk in table.foreign_keys:
                key = f"{fk.column.table.name}.{fk.column.name}"
                if fk.column.table is not users and key in parents:
                    conditions.append(fk.parent.in_(parents[key]) if parents[key] else sa.false())
            if not conditions:
                continue
            counts[table.name] = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(sa.or_(*conditions))
            ).scalar_one()
            # Remember what hangs off this person's rows, for the tables that point at them.
            if user_columns(table) and table is not users:
                for column in table.primary_key.columns:
                    key = f"{table.name}.{column.name}"
                    if key not in parents:
                        owned = sa.or_(*(c == user_id for c in user_columns(table)))
                        parents[key] = set(conn.execute(sa.select(column).where(owned)).scalars())
    return counts


def test_delete_my_account_erases_every_row_of_the_person_and_nothing_of_anyone_else(
    server: RunningServer, alice: User, bob: User
) -> None:
    alices_token = populate(server, alice)
    populate(server, bob)
    alice_parents: dict[str, set[object]] = {}
    bob_parents: dict[str, set[object]] = {}
    before = rows_of(server.engine, alice.id, alice_parents)
    bobs_before = rows_of(server.engine, bob.id, bob_parents)
    # The test proves something only if the person really had rows everywhere.
    empty = sorted(name for name, count in before.items() if count == 0)
    assert not empty, f"the test left these tables without a row of the person: {empty}"
    assert McpHttp(server.mcp_url, alices_token).initialize().status_code == 200

    with signed_in_client(server, alice.email) as browser:
        answer = post_form(browser, "/account", "/account/delete", {"confirm_email": " Alice@Example.com "})
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        assert browser.get("/account").status_code == 303  # signed out

    after = rows_of(server.engine, alice.id, alice_parents)
    assert after == dict.fromkeys(before, 0)
    assert rows_of(server.engine, bob.id, bob_parents) == bobs_before
    assert McpHttp(server.mcp_url, alices_token).initialize().status_code == 401  # at once, on this instance
    assert not signs_in(server, alice.email, PASSWORD) and signs_in(server, bob.email, PASSWORD)


def test_the_only_administrator_cannot_delete_themselves_while_others_use_the_server(
    server: RunningServer, alice: User
) -> None:
    admin = create_user(server.engine, "admin@example.com", PASSWORD, is_admin=True)
    with signed_in_client(server, admin.email) as client:
        refused = post_form(client, "/account", "/account/delete", {"confirm_email": admin.email})
        assert refused.status_code == 400 and "only administrator" in refused.text
        with server.engine.connect() as conn:
            assert conn.execute(sa.select(users.c.id).where(users.c.id == admin.id)).first() is not None
        # Alone on the server, they may: it goes back to its first run.
        with server.engine.begin() as conn:
            conn.execute(users.delete().where(users.c.id == alice.id))
        assert post_form(client, "/account", "/account/delete", {"confirm_email": admin.email}).status_code == 303


def delete_own_accounts_at_once(clients: list[httpx.Client], emails: list[str]) -> list[int]:
    """POST "Delete my account" from every client, released together (forms fetched first)."""
    tokens = [csrf_of(client.get("/account").text) for client in clients]
    start = threading.Barrier(len(clients))

    def delete(client: httpx.Client, token: str, email: str) -> int:
        start.wait(timeout=10)
        return client.post("/account/delete", data={"confirm_email": email, "csrf_token": token}).status_code

    with ThreadPoolExecutor(len(clients)) as pool:
        return sorted(pool.map(delete, clients, tokens, emails))


def test_two_administrators_deleting_themselves_at_once_leave_one(server: RunningServer, alice: User) -> None:
    """The check and the deletion are one transaction behind a lock on the administrators' rows.
    Checked apart (before), both requests saw the other administrator still there and both
    deleted: nobody was left to manage the people on the server (alice). Several rounds, so the
    race gets its chances."""
    for round_number in range(4):
        admins = [
            create_user(server.engine, f"admin{round_number}-{n}@example.com", PASSWORD, is_admin=True) for n in (1, 2)
        ]
        with signed_in_client(server, admins[0].email) as first, signed_in_client(server, admins[1].email) as second:
            statuses = delete_own_accounts_at_once([first, second], [a.email for a in admins])
        assert statuses == [303, 400], statuses
        with server.engine.connect() as conn:
            left = conn.execute(sa.select(users.c.id).where(users.c.is_admin.is_(True))).scalars().all()
        assert len(left) == 1 and left[0] in {a.id for a in admins}
        with server.engine.begin() as conn:  # the next round starts with no administrator again
            conn.execute(users.delete().where(users.c.id == left[0]))


def test_two_administrators_removing_each_other_at_once_leave_one(server: RunningServer, alice: User) -> None:
    """From /admin, A disables B while B deletes A: the change that runs second finds its
    administrator gone or disabled and is refused (404, as for anyone who is not one)."""
    for round_number in range(3):
        first, second = (
            create_user(server.engine, f"peer{round_number}-{n}@example.com", PASSWORD, is_admin=True) for n in (1, 2)
        )
        with signed_in_client(server, first.email) as one, signed_in_client(server, second.email) as two:
            tokens = [csrf_of(client.get("/admin").text) for client in (one, two)]
            start = threading.Barrier(2)

            def change(client: httpx.Client, token: str, path: str, barrier: threading.Barrier = start) -> int:
                barrier.wait(timeout=10)
                return client.post(path, data={"csrf_token": token}).status_code

            paths = [f"/admin/people/{second.id}/disable", f"/admin/people/{first.id}/delete"]
            with ThreadPoolExecutor(2) as pool:
                statuses = sorted(pool.map(change, [one, two], tokens, paths))
        assert statuses == [303, 404], statuses
        with server.engine.begin() as conn:
            enabled = users.c.is_admin.is_(True) & users.c.disabled_at.is_(None)
            left = conn.execute(sa.select(users.c.id).where(enabled)).scalars().all()
            assert len(left) == 1
            conn.execute(users.delete().where(users.c.is_admin.is_(True)))


def test_many_removals_at_once_from_the_pages_never_deadlock(engine: Engine) -> None:
    """Every removal from the pages takes the administrators' lock first; many at once (people
    deleting their accounts while administrators disable and enable others) all finish, each
    with its own answer. The lock was a no-op UPDATE of the administrators' rows, which
    PostgreSQL locks in the order it meets them, and that order changes as the rows get new
    versions: two removals each held a row the other wanted ("deadlock detected", a 500 on the
    page; failed in every run before)."""
    password_hash = hash_password(PASSWORD)  # one hash for all: hashing is the slow part

    def people(prefix: str, count: int, is_admin: bool) -> list[str]:
        with engine.begin() as conn:
            return [insert_user(conn, f"{prefix}{n}@example.com", password_hash, is_admin).id for n in range(count)]

    for round_number in range(2):
        admins, others = people(f"lock{round_number}-admin", 4, True), people(f"lock{round_number}-p", 12, False)
        start = threading.Barrier(16)

        def act(
            n: int, admins: list[str] = admins, others: list[str] = others, start: threading.Barrier = start
        ) -> str:
            start.wait(timeout=10)
            try:
                if n < 8:  # a person deletes their own account
                    delete_user(engine, others[n], others[n])
                for step in range(4):  # an administrator disables and enables the others
                    change = disable_user if step % 2 == 0 else enable_user
                    change(engine, others[(n * 5 + step * 7) % len(others)], admins[n % len(admins)])
            except AccountError as exc:  # a refusal is an answer; a deadlock is not
                return type(exc).__name__
            except sa.exc.OperationalError as exc:
                return f"failed: {exc.orig!r}"[:200]
            return "ok"

        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(act, range(16)))
        assert outcomes == ["ok"] * 16, outcomes
        with engine.begin() as conn:
            conn.execute(users.delete().where(users.c.id.in_(admins + others)))
