"""The official TypeScript MCP SDK as a second real client (tests/test_sdk_client.py is the Python one).

`tests/ts_sdk/client.mjs` runs under Node 22 with npm `@modelcontextprotocol/sdk` (pinned in the
repo's package.json, installed by `npm ci`; see scripts/install-ci-deps.sh). Its
`StreamableHTTPClientTransport` and an in-memory `OAuthClientProvider` take every OAuth step the
way Claude Code, Cursor, VS Code and the MCP Inspector (all built on this SDK) do: the 401,
protected-resource and authorization-server discovery, registration, PKCE authorization with
`resource`, the code exchange, then MCP calls, and a refresh when the access token stops working.
The script plays the person too (sign in, approve) over plain HTTP and prints what happened as
JSON. Without Node 22 or the package the test skips, except in CI, where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jean_memory.accounts.users import User
from tests.conformance.suite import REPO, find_node
from tests.support.oauth import PASSWORD
from tests.support.servers import RunningServer

SCRIPT = Path(__file__).resolve().parent / "ts_sdk" / "client.mjs"
PACKAGE = "@modelcontextprotocol/sdk"
PACKAGE_JSON = REPO / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
MEMORY_TOOLS = {
    "jean_memory",
    "add_memories",
    "search_memory",
    "list_memories",
    "update_memory",
    "delete_memory",
    "store_document",
}


def pinned_version() -> str:
    return json.loads((REPO / "package.json").read_text())["devDependencies"][PACKAGE]


def missing() -> str | None:
    """Why the TypeScript client cannot run here, or None when it can."""
    if find_node() is None:
        return "Node 22 is not installed (npm ci at the repo root installs it; see scripts/install-ci-deps.sh)"
    try:
        installed = json.loads(PACKAGE_JSON.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return f"{PACKAGE} is not installed (run npm ci at the repo root; see scripts/install-ci-deps.sh)"
    if installed != pinned_version():
        return f"{PACKAGE} {installed} is installed; package.json pins {pinned_version()} (run npm ci)"
    return None


@pytest.fixture
def node() -> str:
    reason = missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the TypeScript SDK client: {reason}")
        pytest.skip(reason)
    found = find_node()
    assert found is not None
    return found


def run_client(node: str, server: RunningServer, email: str, auth_method: str) -> dict[str, Any]:
    env = {**os.environ, "JM_EMAIL": email, "JM_PASSWORD": PASSWORD}
    result = subprocess.run(
        [node, str(SCRIPT), server.mcp_url, auth_method],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"the TypeScript client failed:\n{result.stderr[-4000:]}\n{result.stdout[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("auth_method", ["none", "client_secret_basic"])
def test_typescript_sdk_connects_authorizes_and_calls_tools(
    node: str, server: RunningServer, alice: User, auth_method: str
) -> None:
    out = run_client(node, server, alice.email, auth_method)
    issuer = server.base_url

    # The SDK found everything from our 401 and metadata, in the order the spec describes.
    steps = [(w["method"], w["path"], w["status"]) for w in out["wire"]]
    assert steps[:5] == [
        ("POST", "/mcp", 401),
        ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", "/.well-known/oauth-authorization-server", 200),
        ("POST", "/oauth/register", 201),
        ("POST", "/oauth/token", 200),
    ], steps
    # The registration answered with the method the client asked for, and a secret only with one.
    assert out["registration"]["token_endpoint_auth_method"] == auth_method
    assert out["registration"]["has_secret"] is (auth_method != "none")

    # The authorization request: PKCE S256, our resource, the scope from our metadata.
    authorization = out["authorization"]
    assert out["authorization_endpoint"] == f"{issuer}/oauth/authorize"
    assert authorization["code_challenge_method"] == "S256" and authorization["code_challenge"]
    assert authorization["resource"] == server.mcp_url
    assert authorization["scope"] == "memory"
    # The callback (RFC 9207): code, the client's state and our issuer.
    assert set(out["callback"]) == {"code", "state", "iss"}
    assert out["callback"]["iss"] == issuer and out["callback"]["state"] == authorization["state"]

    assert out["tokens"] == {"token_type": "Bearer", "scope": "memory", "has_refresh_token": True}
    assert out["sdk_protocol_version"] == "2025-11-25"
    assert out["server"]["name"] == "jean-memory"
    assert set(out["tools"]) == MEMORY_TOOLS

    # add_memories then search_memory find the same memory.
    saved_ids = {m["id"] for m in out["saved"]["saved"] + out["saved"]["similar"]}
    assert saved_ids, out["saved"]
    assert out["found"]["results"] and out["found"]["results"][0]["id"] in saved_ids
    assert out["found"]["results"][0]["text"] == out["fact"]

    # A dead access token: the SDK refreshed (rotation) on our 401 and retried.
    assert out["refresh"] == {"rotated": True, "new_access_token": True}
    assert steps[-3:] == [("POST", "/mcp", 401), ("POST", "/oauth/token", 200), ("POST", "/mcp", 200)], steps
    assert out["after_refresh"]["results"][0]["id"] in saved_ids
