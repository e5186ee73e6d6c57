"""One key, one use, and a token honoured only with its own grant (issue 12, finding 1).

The JWT key signs access tokens and nothing else; the CSRF MAC takes a key derived for it. And
a correctly signed token whose `sid` is another person's (or another client's) live grant is
refused: the grant's user and client must be the token's `sub` and `client_id`.
"""

import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from jean_memory import config
from tests.support.oauth import McpHttp, new_flow, parse_form
from tests.support.servers import TEST_SECRET


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def signed(claims: dict) -> str:
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def test_the_csrf_token_is_not_a_mac_under_the_jwt_key(server):
    flow = new_flow(server.base_url)
    page = flow.authorize()
    form = parse_form(page.text)
    fields = form["fields"]
    session_id = parse_qs(urlsplit(form["action"]).query)["session_id"][0]
    cookie = flow.http.cookies["jm_csrf"]
    message = f"{cookie}:{session_id}".encode()
    assert fields["csrf_token"] != hmac.new(TEST_SECRET.encode(), message, hashlib.sha256).hexdigest()
    # It is the MAC under the key derived for CSRF alone.
    assert fields["csrf_token"] == hmac.new(config.derive_key(TEST_SECRET, "csrf"), message, hashlib.sha256).hexdigest()


def test_derived_keys_differ_by_purpose_and_from_the_key():
    keys = {config.derive_key(TEST_SECRET, purpose) for purpose in ("csrf", "refresh successor")}
    assert len(keys) == 2 and TEST_SECRET.encode() not in keys
    assert config.derive_key(TEST_SECRET, "csrf") != config.derive_key(TEST_SECRET + "x", "csrf")


def test_a_token_with_another_persons_live_grant_gets_401(server, alice, bob):
    alice_token = new_flow(server.base_url).tokens(alice.email)["access_token"]
    bob_token = new_flow(server.base_url).tokens(bob.email)["access_token"]
    alice_claims, bob_claims = claims_of(alice_token), claims_of(bob_token)
    assert McpHttp(server.mcp_url, bob_token).initialize().status_code == 200  # Bob's grant is live

    # Alice's subject beside Bob's live grant (and Bob's client), correctly signed.
    for forged in (
        {**alice_claims, "sid": bob_claims["sid"]},
        {**alice_claims, "sid": bob_claims["sid"], "client_id": bob_claims["client_id"]},
    ):
        response = McpHttp(server.mcp_url, signed(forged)).initialize()
        assert response.status_code == 401, forged
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    # The same after the grant's status is cached by a good request.
    assert McpHttp(server.mcp_url, alice_token).initialize().status_code == 200
    forged = signed({**bob_claims, "sid": alice_claims["sid"], "client_id": alice_claims["client_id"]})
    assert McpHttp(server.mcp_url, forged).initialize().status_code == 401


def test_a_token_naming_another_client_than_its_grant_gets_401(server, alice):
    flow = new_flow(server.base_url)
    token = flow.tokens(alice.email)["access_token"]
    other = new_flow(server.base_url)  # a second registered client
    forged = signed({**claims_of(token), "client_id": other.client_id})
    assert McpHttp(server.mcp_url, forged).initialize().status_code == 401
    assert McpHttp(server.mcp_url, token).initialize().status_code == 200


def test_revocation_of_a_token_with_a_foreign_grant_is_refused_silently(server, alice, bob):
    """RFC 7009 with a forged access token naming Bob's grant: Bob's grant must live on."""
    bob_flow = new_flow(server.base_url)
    bob_token = bob_flow.tokens(bob.email)["access_token"]
    alice_claims = claims_of(new_flow(server.base_url).tokens(alice.email)["access_token"])
    forged = signed({**alice_claims, "sid": claims_of(bob_token)["sid"], "client_id": bob_flow.client_id})
    response = bob_flow.http.post(f"{server.base_url}/oauth/revoke", data={"token": forged, **bob_flow.client_auth()})
    assert response.status_code == 200
    assert McpHttp(server.mcp_url, bob_token).initialize().status_code == 200


@pytest.mark.parametrize("value", ["é", "\u00e9\u00e9", "日本", "\U0001f600"])
def test_a_non_ascii_csrf_value_on_sign_in_is_403(server, alice, value):
    flow = new_flow(server.base_url)
    page = flow.authorize()
    response = flow.submit(page, email=alice.email, password="x", csrf_token=value)
    assert response.status_code == 403
    assert "another site" in response.text


@pytest.mark.parametrize("value", ["é", "\U0001f600"])
def test_a_non_ascii_csrf_value_on_consent_is_403(server, alice, value):
    flow = new_flow(server.base_url)
    consent_page = flow.sign_in(flow.authorize(), alice.email)
    assert 'value="approve"' in consent_page.text
    response = flow.submit(consent_page, decision="approve", csrf_token=value)
    assert response.status_code == 403
    # The genuine form still works afterwards: nothing was half-done.
    assert "code" in flow.consent(consent_page).headers["location"]
