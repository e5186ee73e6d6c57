"""Taking things back from the shell (issue 12, finding 7): keys, passwords, disabled and deleted
accounts, each run as `jean-memory ...` against the database of a running server, and checked by
what that server then answers."""

from __future__ import annotations

import time

import httpx
import pytest
import sqlalchemy as sa

from jean_memory import clock
from jean_memory.accounts.api_keys import create_api_key
from jean_memory.accounts.users import create_user
from jean_memory.db import tables
from jean_memory.memory import jobs
from tests.support.oauth import PASSWORD, McpHttp, new_flow
from tests.support.pages import csrf_of
from tests.support.servers import cli_env, run_cli

NEW_PASSWORD = "a brand new passphrase"
SIGN_IN_FAILED = "do not match an account"


@pytest.fixture
def env(server, tmp_path):
    return cli_env(server.settings.database_url, tmp_path / "cli-data")


def legacy(server, user_id: str, key: str) -> McpHttp:
    mcp = McpHttp(f"{server.base_url}/mcp/v2/claude/{user_id}", None)
    mcp.http.headers["X-Api-Key"] = key
    return mcp


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def columns(stdout: str) -> list[list[str]]:
    """The rows of an aligned listing, header dropped."""
    return [line.split() for line in stdout.strip().splitlines()[1:]]


def test_apikey_list_and_revoke(server, env, alice, bob):
    first = run_cli(["apikey", "create", alice.email], env).stdout.strip()
    second = run_cli(["apikey", "create", alice.email], env).stdout.strip()
    create_api_key(server.engine, bob.id)
    assert legacy(server, alice.id, first).initialize().status_code == 200

    listed = run_cli(["apikey", "list", alice.email], env)
    assert listed.returncode == 0, listed.stderr
    rows = {row[0]: row for row in columns(listed.stdout)}
    assert set(rows) == {first[:12], second[:12]}  # bob's key is not shown; no key is shown whole
    assert first not in listed.stdout and second not in listed.stdout
    assert rows[first[:12]][2] != "never" and rows[second[:12]][2] == "never"  # last used

    revoked = run_cli(["apikey", "revoke", first[:12]], env)
    assert revoked.returncode == 0, revoked.stderr
    assert legacy(server, alice.id, first).initialize().status_code == 401  # at once
    assert legacy(server, alice.id, second).initialize().status_code == 200  # the other key still works
    assert [row[0] for row in columns(run_cli(["apikey", "list", alice.email], env).stdout)] == [second[:12]]

    again = run_cli(["apikey", "revoke", first[:12]], env)
    assert again.returncode == 1 and "no API key has the prefix" in again.stderr
    nonsense = run_cli(["apikey", "revoke", "hello"], env)
    assert nonsense.returncode == 1 and "not a key prefix" in nonsense.stderr
    unknown = run_cli(["apikey", "list", "nobody@example.com"], env)
    assert unknown.returncode == 1 and "no account for nobody@example.com" in unknown.stderr


def test_an_ambiguous_prefix_revokes_nothing(server, env, alice):
    keys: dict[str, str] = {}
    while True:  # two keys sharing their first random character: about ten keys on average
        key = create_api_key(server.engine, alice.id)
        if key[:7] in keys:
            break
        keys[key[:7]] = key
    result = run_cli(["apikey", "revoke", key[:7]], env)
    assert result.returncode == 1 and "API keys start with" in result.stderr  # 2, or more from earlier tests
    assert legacy(server, alice.id, key).initialize().status_code == 200
    assert legacy(server, alice.id, keys[key[:7]]).initialize().status_code == 200


def test_user_add_admin_and_list(server, env, alice):
    added = run_cli(["user", "add", "Boss@Example.com", "--admin", "--password-stdin"], env, stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert "admin: yes" in added.stdout
    mcp = McpHttp(server.mcp_url, new_flow(server.base_url).tokens(alice.email)["access_token"])
    for text in ("Alice keeps bees", "Alice speaks Welsh"):
        mcp.call_tool("add_memories", {"text": text})
    run_cli(["user", "disable", alice.email], env)

    listed = run_cli(["user", "list"], env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["EMAIL", "CREATED", "ADMIN", "DISABLED", "MEMORIES"]
    rows = {row[0]: row for row in columns(listed.stdout)}
    assert rows["alice@example.com"][2:3] == ["no"] and rows["alice@example.com"][3] != "no"
    assert rows["alice@example.com"][4] == "2"
    assert rows["boss@example.com"][2:] == ["yes", "no", "0"]


def signed_in_browser(server, email: str, password: str = PASSWORD):
    """A client's flow whose browser signed in: the flow, and the callback's parameters."""
    flow = new_flow(server.base_url)
    return flow, flow.get_code(email, password)


def sign_in_answer(server, email: str, password: str) -> httpx.Response:
    """What a fresh browser gets after submitting the sign-in form."""
    flow = new_flow(server.base_url)
    return flow.sign_in(flow.authorize(), email, password)


def signs_in(server, email: str, password: str) -> bool:
    """The sign-in form leads on to the consent page (the new client has no consent yet)."""
    return 'value="approve"' in sign_in_answer(server, email, password).text


def test_user_passwd_changes_the_password_and_signs_out_every_browser(server, env, alice):
    flow, _ = signed_in_browser(server, alice.email)
    assert 'name="password"' not in flow.authorize().text  # the session lets the browser straight through

    changed = run_cli(["user", "passwd", alice.email, "--password-stdin"], env, stdin=NEW_PASSWORD + "\n")
    assert changed.returncode == 0, changed.stderr
    assert "1 browser session(s) signed out" in changed.stdout

    assert 'name="password"' in flow.authorize().text  # the session ended: sign in again
    assert SIGN_IN_FAILED in sign_in_answer(server, alice.email, PASSWORD).text
    assert signs_in(server, alice.email, NEW_PASSWORD)

    weak = run_cli(["user", "passwd", alice.email, "--password-stdin"], env, stdin="short\n")
    assert weak.returncode == 1 and "at least 8 characters" in weak.stderr
    assert signs_in(server, alice.email, NEW_PASSWORD)  # unchanged


def test_a_disabled_person_loses_tokens_keys_and_sign_in_until_enabled(server, env, alice, bob):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    key = create_api_key(server.engine, alice.id)
    assert mcp.initialize().status_code == 200  # the server now holds the grant as live in its cache
    assert legacy(server, alice.id, key).initialize().status_code == 200
    bobs = McpHttp(server.mcp_url, new_flow(server.base_url).tokens(bob.email)["access_token"])

    disabled = run_cli(["user", "disable", alice.email], env)
    assert disabled.returncode == 0, disabled.stderr
    assert "1 app connection(s) revoked" in disabled.stdout

    assert legacy(server, alice.id, key).initialize().status_code == 401  # keys: at once
    assert flow.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert 'name="password"' in flow.authorize().text  # the browser session ended
    refused = sign_in_answer(server, alice.email, PASSWORD)
    wrong = sign_in_answer(server, bob.email, "not bob's password")
    assert SIGN_IN_FAILED in refused.text and refused.status_code == wrong.status_code  # as for a wrong password
    assert "disabled" not in refused.text.lower()
    # Another process revoked the grant: this server sees it when its cached answer ages out.
    clock.advance(server.settings.revocation_cache_seconds + 1)
    assert mcp.initialize().status_code == 401
    assert bobs.initialize().status_code == 200  # nobody else is touched

    enabled = run_cli(["user", "enable", alice.email], env)
    assert enabled.returncode == 0 and "connect again" in enabled.stdout
    assert signs_in(server, alice.email, PASSWORD)
    assert legacy(server, alice.id, key).initialize().status_code == 200
    assert mcp.initialize().status_code == 401  # revoked grants stay revoked
    assert "was not disabled" in run_cli(["user", "enable", alice.email], env).stdout


def owned_tables() -> dict[str, str]:
    """Every table holding something of a person, and how a row names its owner: its own
    `user_id`, or the grant or memory it hangs off. Written out, not derived the way the code
    derives it, so a table the erasure misses fails here."""
    tables_with_owner = {t.name: "user_id" for t in tables.metadata.sorted_tables if "user_id" in t.c}
    tables_with_owner.update(users="id", authorization_codes="grant", refresh_tokens="grant")
    assert set(tables_with_owner) >= {
        "users", "browser_sessions", "api_keys", "authorization_requests", "consents", "grants",
        "authorization_codes", "refresh_tokens", "memories", "documents", "memory_vectors",
        "memory_versions", "jobs", "memory_history",
    }  # fmt: skip
    return tables_with_owner


def counts(engine, user_id: str) -> dict[str, int]:
    result = {}
    with engine.connect() as conn:
        for name, owner in owned_tables().items():
            table = tables.metadata.tables[name]
            if owner == "grant":
                of_user = sa.select(tables.grants.c.id).where(tables.grants.c.user_id == user_id)
                where = table.c.grant_id.in_(of_user)
            else:
                where = table.c[owner] == user_id
            result[name] = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
        if engine.dialect.name == "sqlite":  # the full-text index, asked through its owner column
            from jean_memory.memory.lexical import owner_token

            result["memories_fts"] = conn.execute(
                sa.text("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH :q"),
                {"q": f"owner:{owner_token(user_id)}"},
            ).scalar_one()
    return result


def give_everything(server, user) -> None:
    """A row of the person in every table, made the way the server makes them."""
    tokens = new_flow(server.base_url).tokens(user.email)  # grant, used code, refresh token, consent, session
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    mcp.call_tool("add_memories", {"text": f"{user.email} grows tomatoes on the balcony"})
    content = "# Notes\n\n" + "\n\n".join(f"Paragraph {i} about the garden and its soil." for i in range(20))
    assert mcp.call_tool("store_document", {"title": "Garden", "content": content})["isError"] is False
    pending = new_flow(server.base_url)  # signed in, consent page not answered yet
    assert 'value="approve"' in pending.sign_in(pending.authorize(), user.email).text
    create_api_key(server.engine, user.id)
    with server.engine.begin() as conn:  # a job another instance is working on right now
        job_id = jobs.enqueue(conn, "document", user.id, {"document_id": "in-progress"})
        conn.execute(tables.jobs.update().where(tables.jobs.c.id == job_id).values(locked_until=clock.now() + 3600))
    wait_for(lambda: all(counts(server.engine, user.id).values()))


def test_user_delete_erases_everything_of_the_person_and_nothing_else(server, env, alice, bob):
    give_everything(server, alice)
    give_everything(server, bob)
    bobs_before = counts(server.engine, bob.id)

    unconfirmed = run_cli(["user", "delete", alice.email], env, stdin="bob@example.com\n")
    assert unconfirmed.returncode == 1 and "nothing was deleted" in unconfirmed.stderr
    assert all(counts(server.engine, alice.id).values())

    confirmed = run_cli(["user", "delete", alice.email], env, stdin="Alice@Example.com\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "deleted alice@example.com" in confirmed.stdout
    assert counts(server.engine, alice.id) == dict.fromkeys(bobs_before, 0)
    assert counts(server.engine, bob.id) == bobs_before
    assert "alice@example.com" not in run_cli(["user", "list"], env).stdout
    gone = run_cli(["user", "delete", alice.email, "--yes"], env)
    assert gone.returncode == 1 and "no account for alice@example.com" in gone.stderr


def test_user_delete_with_yes_does_not_ask(server, env):
    user = create_user(server.engine, "carol@example.com", PASSWORD)
    result = run_cli(["user", "delete", user.email, "--yes"], env, stdin="")
    assert result.returncode == 0, result.stderr
    assert "Type the email" not in result.stderr
    assert counts(server.engine, user.id)["users"] == 0


def test_user_invite_prints_a_one_time_link_the_server_takes(server, env):
    env = {**env, "JEAN_MEMORY_ISSUER": server.base_url}
    bad = run_cli(["user", "invite", "--email", "not an email"], env)
    assert bad.returncode == 1 and "is not an email address" in bad.stderr
    made = run_cli(["user", "invite", "--email", "Friend@Example.com"], env)
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(f"{server.base_url}/join?invite=") and "\n" not in link
    assert "friend@example.com only" in made.stderr
    with httpx.Client(headers={"Accept": "text/html"}) as browser:
        page = browser.get(link)
        assert page.status_code == 200 and 'value="friend@example.com"' in page.text
        answer = browser.post(
            f"{server.base_url}/join",
            data={
                "invite": link.split("invite=", 1)[1],
                "email": "friend@example.com",
                "password": PASSWORD,
                "password_again": PASSWORD,
                "csrf_token": csrf_of(page.text),
            },
        )
        assert answer.status_code == 303
        assert browser.get(link).status_code == 404  # used up
    closed = run_cli(["user", "invite"], {**env, "JEAN_MEMORY_SIGNUP": "closed"})
    assert closed.returncode == 0 and "JEAN_MEMORY_SIGNUP=closed" in closed.stderr
    wrong = run_cli(["user", "invite"], {**env, "JEAN_MEMORY_SIGNUP": "sometimes"})
    assert wrong.returncode == 2 and "JEAN_MEMORY_SIGNUP must be one of invite, open, closed" in wrong.stderr
