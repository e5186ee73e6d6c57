"""`/keys`: "Create key" shows the key once, the list shows prefix, created and last used,
"Revoke" ends it at once; one person can never revoke another's key (404 like an unknown one)."""

from __future__ import annotations

import re

import httpx

from jean_memory.accounts.api_keys import create_api_key
from jean_memory.accounts.users import User
from tests.support.pages import post_form, signed_in_client
from tests.support.servers import RunningServer

KEY = re.compile(r'value="(jm_sk_[A-Za-z0-9_-]{20,})"')
REVOKE = re.compile(r'action="/keys/([^/"]+)/revoke"')


def legacy_status(server: RunningServer, user: User, key: str) -> int:
    """An MCP initialize on the legacy endpoint with this key: 200 while the key works."""
    response = httpx.post(
        f"{server.base_url}/mcp/v2/claude/{user.id}",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        headers={"X-Api-Key": key, "Accept": "application/json, text/event-stream"},
        timeout=15,
    )
    return response.status_code


def test_a_created_key_is_shown_once_works_and_revoke_ends_it(server: RunningServer, alice: User) -> None:
    with signed_in_client(server, alice.email) as browser:
        assert "You have no keys" in browser.get("/keys").text
        created = post_form(browser, "/keys", "/keys/create")
        assert created.status_code == 200
        (key,) = KEY.findall(created.text)
        assert "shown only this once" in created.text
        assert legacy_status(server, alice, key) == 200
        listing = browser.get("/keys")
        assert key not in listing.text  # only its prefix from now on
        (prefix,) = REVOKE.findall(listing.text)
        assert key.startswith(prefix) and f"{prefix}…" in listing.text
        assert "Last used" in listing.text and "never" not in listing.text.split("<tbody>")[1]
        revoked = post_form(browser, "/keys", f"/keys/{prefix}/revoke")
        assert revoked.status_code == 303 and revoked.headers["location"] == "/keys?revoked=1"
        assert "Key revoked" in browser.get(revoked.headers["location"]).text
        assert REVOKE.findall(browser.get("/keys").text) == []
    assert legacy_status(server, alice, key) == 401


def test_another_persons_key_is_404_like_an_unknown_one(server: RunningServer, alice: User, bob: User) -> None:
    bobs_key = create_api_key(server.engine, bob.id)
    with signed_in_client(server, alice.email) as browser:
        theirs = post_form(browser, "/keys", f"/keys/{bobs_key[:12]}/revoke")
        unknown = post_form(browser, "/keys", "/keys/jm_sk_AAAAAA/revoke")
        malformed = post_form(browser, "/keys", "/keys/whatever/revoke")
        assert theirs.status_code == unknown.status_code == malformed.status_code == 404
        assert theirs.text == unknown.text == malformed.text
        assert bobs_key[:12] not in browser.get("/keys").text
    assert legacy_status(server, bob, bobs_key) == 200


def test_key_forms_need_the_csrf_field(server: RunningServer, alice: User) -> None:
    key = create_api_key(server.engine, alice.id)
    with signed_in_client(server, alice.email) as browser:
        assert browser.post("/keys/create", data={}).status_code == 403
        assert browser.post(f"/keys/{key[:12]}/revoke", data={"csrf_token": "0" * 64}).status_code == 403
        assert len(REVOKE.findall(browser.get("/keys").text)) == 1
    assert legacy_status(server, alice, key) == 200
