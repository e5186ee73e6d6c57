"""The token endpoint and revocation (OAuth 2.1 §3.2, RFC 6749 §5.2, RFC 7636, RFC 7009, RFC 9700)."""

import base64
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from jean_memory import clock
from jean_memory.accounts.users import create_user
from jean_memory.config import derive_key
from jean_memory.db.tables import grants, refresh_tokens
from jean_memory.oauth import grants as grant_store
from tests.support.oauth import FORM_HEADERS, McpHttp, chunked_form, new_flow


def mcp_status(server, token: str) -> int:
    return McpHttp(server.mcp_url, token).initialize().status_code


def test_code_exchange_answers_tokens_with_no_store(server, alice):
    flow = new_flow(server.base_url)
    response = flow.exchange(flow.get_code(alice.email)["code"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "memory"  # `claudeai` dropped, memory granted
    assert body["refresh_token"]


def test_wrong_verifier_is_invalid_grant(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    response = flow.exchange(code, code_verifier="x" * 50)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_missing_verifier_is_invalid_request(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    response = flow.exchange(code, code_verifier="")
    assert response.json()["error"] == "invalid_request"


def test_reused_code_is_refused_and_revokes_the_grant(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    first = flow.exchange(code).json()
    assert mcp_status(server, first["access_token"]) == 200
    second = flow.exchange(code)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    # RFC 9700 §4.2.4 / OAuth 2.1 §4.1.3: tokens issued from the code are revoked.
    assert mcp_status(server, first["access_token"]) == 401
    assert flow.refresh(first["refresh_token"]).json()["error"] == "invalid_grant"


def test_code_of_client_a_redeemed_by_client_b_is_refused(server, alice):
    a = new_flow(server.base_url)
    b = new_flow(server.base_url)
    code = a.get_code(alice.email)["code"]
    b.verifier = a.verifier
    response = b.exchange(code)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert a.exchange(code).status_code == 200  # B's attempt did not burn A's code


def test_expired_code_is_invalid_grant(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    clock.advance(61)
    response = flow.exchange(code)
    assert response.json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_the_authorization_request(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    response = flow.exchange(code, redirect_uri="https://claude.com/api/mcp/auth_callback")
    assert response.json()["error"] == "invalid_grant"


def _exchange_without_redirect_uri(flow, code: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": flow.verifier, **flow.client_auth()}
    return flow.http.post(f"{flow.base_url}/oauth/token", data=data)


def test_redirect_uri_sent_at_authorize_is_required_at_token(server, alice):
    """RFC 6749 §4.1.3: REQUIRED if it was included in the authorization request."""
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    response = _exchange_without_redirect_uri(flow, code)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_redirect_uri_left_out_of_both_requests(server, alice):
    """A client with one registered redirect URI may leave it out of the authorization request
    (OAuth 2.1 §4.1.1) and then of the token request (RFC 6749 §4.1.3); it used to be refused."""
    only = {
        "client_name": "One callback",
        "redirect_uris": ["https://app.example/cb"],
        "token_endpoint_auth_method": "none",
    }
    flow = new_flow(server.base_url, only)
    params = flow.get_code(alice.email, redirect_uri=None)
    response = _exchange_without_redirect_uri(flow, params["code"])
    assert response.status_code == 200, response.text
    # Sent at the token endpoint anyway, it must be the one the code went to.
    other = flow.get_code(alice.email, redirect_uri=None)["code"]
    wrong = flow.exchange(other, redirect_uri="https://app.example/other")
    assert wrong.json()["error"] == "invalid_grant"
    third = flow.get_code(alice.email, redirect_uri=None)["code"]
    assert flow.exchange(third).status_code == 200


def test_wrong_resource_at_token_is_invalid_target(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    response = flow.exchange(code, resource="https://other.example.com/mcp")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


def test_json_body_is_a_400_not_a_500(server):
    response = httpx.post(f"{server.base_url}/oauth/token", json={"grant_type": "authorization_code"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_unknown_grant_type(server):
    flow = new_flow(server.base_url)
    response = flow.http.post(f"{server.base_url}/oauth/token", data={"grant_type": "password", **flow.client_auth()})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_unknown_client_is_401_invalid_client(server):
    response = httpx.post(
        f"{server.base_url}/oauth/token",
        data={"grant_type": "authorization_code", "client_id": "jmc_nope", "code": "x"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_wrong_client_secret_is_401(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    response = flow.exchange(code, client_secret="jms_wrong")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_client_secret_basic_works(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    secret = flow.registration["client_secret"]
    basic = base64.b64encode(f"{flow.client_id}:{secret}".encode()).decode()
    response = flow.http.post(
        f"{server.base_url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": flow.redirect_uri,
            "code_verifier": flow.verifier,
        },
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text


def test_refresh_rotates_and_keeps_scope_and_resource(server, alice):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    refreshed = flow.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200
    body = refreshed.json()
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["scope"] == tokens["scope"]
    assert mcp_status(server, body["access_token"]) == 200


def test_refresh_within_grace_window_succeeds_twice(server, alice):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    first = flow.refresh(tokens["refresh_token"])
    clock.advance(30)
    second = flow.refresh(tokens["refresh_token"])  # a retried refresh whose answer was lost
    assert first.status_code == second.status_code == 200
    assert mcp_status(server, second.json()["access_token"]) == 200
    assert mcp_status(server, first.json()["access_token"]) == 200


def live_refresh_hashes(server) -> list[str]:
    with server.engine.connect() as conn:
        rows = conn.execute(sa.select(refresh_tokens.c.token_hash).where(refresh_tokens.c.rotated_at.is_(None)))
        return [row.token_hash for row in rows]


def test_a_refresh_token_presented_again_in_the_grace_window_gets_the_same_successor(server, alice):
    """Issue 12, finding 5: a second answer used to mint an independent successor, forking the
    chain into two that both lived on undetected (RFC 9700 §4.14.2)."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    first = flow.refresh(tokens["refresh_token"]).json()
    clock.advance(30)
    second = flow.refresh(tokens["refresh_token"]).json()
    assert second["refresh_token"] == first["refresh_token"]
    assert mcp_status(server, second["access_token"]) == 200
    # One chain: its one live refresh token is the successor, which works.
    assert live_refresh_hashes(server) == [clock.sha256_hex(first["refresh_token"])]
    third = flow.refresh(first["refresh_token"])
    assert third.status_code == 200
    assert third.json()["refresh_token"] not in (tokens["refresh_token"], first["refresh_token"])
    assert live_refresh_hashes(server) == [clock.sha256_hex(third.json()["refresh_token"])]


def test_a_refresh_token_whose_successor_was_used_revokes_the_grant(server, alice):
    """Inside the grace window, but after its successor was used: the chain has moved on, so
    whoever presents the old token holds a second copy of it (RFC 9700 §4.14.2)."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    successor = flow.refresh(tokens["refresh_token"]).json()
    latest = flow.refresh(successor["refresh_token"]).json()
    reuse = flow.refresh(tokens["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert flow.refresh(latest["refresh_token"]).json()["error"] == "invalid_grant"
    assert mcp_status(server, latest["access_token"]) == 401


def test_the_successor_survives_a_key_rotation_inside_the_grace_window(engine):
    """The successor is derived, not stored: a retry that straddles a JWT key rotation must
    still get it (the previous key's derivation is tried), and without that key none is made."""
    user = create_user(engine, "rotation@example.com", "a password long enough")
    pending = grant_store.PendingAuthorization(
        client_id="jmc_test",
        redirect_uri="https://app.example.com/cb",
        code_challenge="c" * 43,
        state=None,
        scope="memory",
        resource="https://memory.example.com/mcp",
        user_id=user.id,
    )
    grant_store.issue_code(engine, pending, user.id, 60, remember=False)
    with engine.connect() as conn:
        grant_id = conn.execute(sa.select(grants.c.id)).scalar_one()
    token = grant_store.issue_refresh_token(engine, grant_id, 86400)
    old, new = derive_key("o" * 32, "refresh successor"), derive_key("n" * 32, "refresh successor")
    _, successor = grant_store.rotate_refresh_token(engine, token, "jmc_test", 60, (old,), 86400)
    _, again = grant_store.rotate_refresh_token(engine, token, "jmc_test", 60, (new, old), 86400)
    assert again == successor == grant_store.refresh_successor(token, old)
    with pytest.raises(grant_store.RefreshRejected) as rejected:
        grant_store.rotate_refresh_token(engine, token, "jmc_test", 60, (new,), 86400)
    assert rejected.value.revoke_grant_id is None


def test_refresh_reuse_after_grace_revokes_the_grant(server, alice):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    newer = flow.refresh(tokens["refresh_token"]).json()
    clock.advance(61)
    reuse = flow.refresh(tokens["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert flow.refresh(newer["refresh_token"]).json()["error"] == "invalid_grant"
    assert mcp_status(server, newer["access_token"]) == 401  # at once on this instance


def test_refresh_may_narrow_but_not_widen_scope(server, alice):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    widened = flow.refresh(tokens["refresh_token"], scope="memory admin")
    assert widened.json()["error"] == "invalid_scope"


def test_refresh_token_of_another_client_is_refused(server, alice):
    a = new_flow(server.base_url)
    b = new_flow(server.base_url)
    tokens = a.tokens(alice.email)
    assert b.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_expired_refresh_token_is_invalid_grant(server, alice):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    clock.advance(31 * 86400)
    assert flow.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
def test_revocation_ends_the_grant(server, alice, which):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    response = flow.http.post(f"{server.base_url}/oauth/revoke", data={"token": tokens[which], **flow.client_auth()})
    assert response.status_code == 200
    assert mcp_status(server, tokens["access_token"]) == 401
    assert flow.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_revoking_an_unknown_token_is_200(server):
    flow = new_flow(server.base_url)
    response = flow.http.post(f"{server.base_url}/oauth/revoke", data={"token": "nonsense", **flow.client_auth()})
    assert response.status_code == 200


def test_another_client_cannot_revoke_my_token(server, alice):
    mine = new_flow(server.base_url)
    other = new_flow(server.base_url)
    tokens = mine.tokens(alice.email)
    other.http.post(f"{server.base_url}/oauth/revoke", data={"token": tokens["refresh_token"], **other.client_auth()})
    assert mcp_status(server, tokens["access_token"]) == 200


def test_token_alias(server, alice):
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    response = flow.http.post(
        f"{server.base_url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": flow.redirect_uri,
            "code_verifier": flow.verifier,
            **flow.client_auth(),
        },
    )
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke"])
def test_chunked_body_over_64_kib_is_refused(server, path):
    """The cap counts the bytes as they arrive: a chunked body carries no Content-Length to
    check (a 180 MiB one used to be read and parsed whole)."""
    body = chunked_form({"grant_type": "refresh_token", "client_id": "x", "token": "x"}, 128 * 1024)
    response = httpx.post(server.base_url + path, content=body, headers=FORM_HEADERS)
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"
    assert "64 KiB" in response.json()["error_description"]
    assert response.headers["cache-control"] == "no-store"


def test_chunked_body_within_the_limit_is_read(server, alice):
    """The form is parsed from the bytes the cap already read, chunked or not."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    body = chunked_form({"token": tokens["refresh_token"], **flow.client_auth()}, 16 * 1024)
    response = httpx.post(f"{server.base_url}/oauth/revoke", content=body, headers=FORM_HEADERS)
    assert response.status_code == 200
    assert mcp_status(server, tokens["access_token"]) == 401


@pytest.mark.parametrize("name", ["code", "grant_type", "client_id", "code_verifier"])
def test_a_parameter_sent_twice_is_invalid_request(server, alice, name):
    """RFC 6749 §3.1: parameters MUST NOT be included more than once (the last value used to win)."""
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    fields = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": flow.redirect_uri,
        "code_verifier": flow.verifier,
        **flow.client_auth(),
    }
    body = [*fields.items(), (name, fields[name])]
    response = flow.http.post(
        f"{server.base_url}/oauth/token",
        content=urlencode(body),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request" and name in response.json()["error_description"]
    assert flow.exchange(code).status_code == 200  # and the code was not spent


def test_revocation_with_the_token_sent_twice_is_invalid_request(server, alice):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    body = [("token", tokens["refresh_token"]), ("token", "other"), *flow.client_auth().items()]
    response = flow.http.post(
        f"{server.base_url}/oauth/revoke",
        content=urlencode(body),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_a_file_as_a_token_parameter_counts_as_absent(server, alice):
    """Multipart is accepted at the token endpoint; a file is no parameter value (its repr was
    echoed in the error before)."""
    flow = new_flow(server.base_url)
    code = flow.get_code(alice.email)["code"]
    response = flow.http.post(
        f"{server.base_url}/oauth/token",
        data={"code": code, "code_verifier": flow.verifier, **flow.client_auth()},
        files={"grant_type": ("grant.txt", b"authorization_code")},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": "grant_type is required"}
