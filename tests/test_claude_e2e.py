"""Claude's whole connection, step by step, against `jean-memory serve` as a separate process,
then once more after a restart: nothing may live only in process memory.

Each step is the request claude.ai makes (PROTOCOL.md), in order: the unauthenticated probe,
discovery, registration, the person's sign-in and consent, the code exchange, MCP calls,
refresh with rotation, reuse detection and revocation.
"""

import httpx
import pytest

from tests.support.oauth import CLAUDE_CALLBACK, CLAUDE_REGISTRATION, PASSWORD, Flow, McpHttp, redirect_params
from tests.support.servers import cli_env, free_port, run_cli, server_process

pytestmark = pytest.mark.slow


@pytest.fixture
def env(database_url, tmp_path):
    env = cli_env(database_url, tmp_path / "data")
    result = run_cli(["user", "add", "me@example.com", "--password-stdin"], env, stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    return env


def test_claude_connector_flow_survives_a_restart(env):
    port = free_port()
    with server_process(env, port=port) as base:
        mcp_url = f"{base}/mcp"
        http = httpx.Client(timeout=30)

        # 1. Claude probes the pasted URL without a token and learns where the metadata is.
        probe = McpHttp(mcp_url, None, http).initialize()
        assert probe.status_code == 401
        challenge = probe.headers["www-authenticate"]
        metadata_url = challenge.split('resource_metadata="')[1].split('"')[0]

        # 2. Discovery: protected resource, then the authorization server it names.
        resource_doc = http.get(metadata_url).json()
        assert resource_doc["resource"] == mcp_url
        issuer = resource_doc["authorization_servers"][0]
        as_doc = http.get(f"{issuer}/.well-known/oauth-authorization-server").json()
        assert as_doc["issuer"] == issuer == base

        # 3. Dynamic client registration with Claude's body.
        registration = http.post(as_doc["registration_endpoint"], json=CLAUDE_REGISTRATION)
        assert registration.status_code == 201
        flow = Flow(base_url=base, http=http, registration=registration.json(), redirect_uri=CLAUDE_CALLBACK)

        # 4-6. The person's browser: authorize -> login form -> consent -> redirect with code.
        login = flow.authorize(scope="claudeai", resource=mcp_url)
        assert login.status_code == 200 and 'name="password"' in login.text
        consent = flow.sign_in(login, "me@example.com")
        assert consent.status_code == 200 and 'value="approve"' in consent.text
        callback = flow.consent(consent)
        assert callback.headers["location"].startswith(CLAUDE_CALLBACK)
        params = redirect_params(callback)
        assert set(params) == {"code", "state", "iss"} and params["iss"] == issuer

        # 7. Code exchange with PKCE at the advertised token endpoint.
        tokens = http.post(
            as_doc["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": CLAUDE_CALLBACK,
                "code_verifier": flow.verifier,
                "resource": mcp_url,
                **flow.client_auth(),
            },
        ).json()
        assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]

        # 8. MCP with the token: initialize (2025-11-25), tools/list, tools/call.
        mcp = McpHttp(mcp_url, tokens["access_token"], http)
        assert mcp.initialize("2025-11-25").json()["result"]["protocolVersion"] == "2025-11-25"
        names = {t["name"] for t in mcp.rpc("tools/list", {}).json()["result"]["tools"]}
        assert "jean_memory" in names
        mcp.call_tool("add_memories", {"text": "My dog is a beagle called Max"})
        assert mcp.call_tool("search_memory", {"query": "beagle"})["structuredContent"]["results"]

        # 9. Refresh rotates; the old refresh token still works once within the grace window.
        refreshed = flow.refresh(tokens["refresh_token"]).json()
        assert refreshed["refresh_token"] != tokens["refresh_token"]
        refresh_after_restart = refreshed["refresh_token"]
        mcp.token = refreshed["access_token"]
        assert mcp.initialize().status_code == 200

    # A restart: new process, same database and key. Tokens, client and memories must all survive.
    with server_process(env, port=port) as base:
        mcp = McpHttp(f"{base}/mcp", refreshed["access_token"])
        hits = mcp.call_tool("search_memory", {"query": "dog"})["structuredContent"]["results"]
        assert hits[0]["text"] == "My dog is a beagle called Max"
        flow.http = httpx.Client(timeout=30)
        again = flow.refresh(refresh_after_restart)
        assert again.status_code == 200, again.text
        newest = again.json()

        # 10. Revocation (RFC 7009) ends the grant: its access token stops at once.
        revoke = flow.http.post(f"{base}/oauth/revoke", data={"token": newest["refresh_token"], **flow.client_auth()})
        assert revoke.status_code == 200
        mcp.token = newest["access_token"]
        assert mcp.initialize().status_code == 401
        assert flow.refresh(newest["refresh_token"]).json()["error"] == "invalid_grant"
