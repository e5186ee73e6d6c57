"""Jean Memory behind a real TLS-terminating reverse proxy, the way docs/deploy.md sets it up.

Caddy (with deploy/Caddyfile, its internal CA instead of ACME) listens on
https://localhost:PORT in front of `jean-memory serve --issuer https://localhost:PORT` started
with JEAN_MEMORY_TRUSTED_PROXIES=127.0.0.1. The test client trusts Caddy's root CA and connects
from 127.0.0.2, a loopback address that is not a trusted proxy, so the server's request log
(JEAN_MEMORY_LOG_FORMAT=json, field `client_ip`) tells whose address it believed: Caddy always
connects from 127.0.0.1 and passes the client's address in X-Forwarded-For.

Without Caddy installed the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from jean_memory.accounts.browser_sessions import COOKIE_NAME as SESSION_COOKIE
from jean_memory.oauth.browser import CSRF_COOKIE
from tests.support.caddy import RunningCaddy, caddy_binary, caddy_proxy
from tests.support.oauth import CLAUDE_REGISTRATION, PASSWORD, Flow, McpHttp, redirect_params
from tests.support.servers import cli_env, free_port, run_cli, server_process

pytestmark = pytest.mark.slow

CLIENT_ADDRESS = "127.0.0.2"  # where "internet" clients connect from: not a trusted proxy
SPOOFED = "203.0.113.66"  # an address a client claims in its own X-Forwarded-For
EMAIL = "proxy@example.com"


@dataclass
class Deployment:
    caddy: RunningCaddy
    direct_url: str  # http://127.0.0.1:PORT: the server itself, bypassing Caddy
    server_log: Path
    env: dict[str, str]

    @property
    def issuer(self) -> str:
        return self.caddy.base_url


def two_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def server_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    return {
        **cli_env(database_url, data_dir),
        "JEAN_MEMORY_LOG_FORMAT": "json",
        "JEAN_MEMORY_EMBEDDINGS": "none",  # the proxy is the subject here; lexical search starts faster
        "PYTHONIOENCODING": "utf-8",
        **settings,
    }


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    caddy_binary()  # skip (or fail under CI) before starting anything
    public_port, app_port = two_ports()
    issuer = f"https://localhost:{public_port}"
    env = server_env(database_url, tmp_path / "data", JEAN_MEMORY_TRUSTED_PROXIES="127.0.0.1", JEAN_MEMORY_METRICS="on")
    log_path = tmp_path / "server.log"
    with (
        server_process(env, port=app_port, extra=["--issuer", issuer], log_path=log_path) as direct_url,
        caddy_proxy(public_port, app_port, tmp_path / "caddy") as caddy,
    ):
        yield Deployment(caddy, direct_url, log_path, env)


def log_entries(log_path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a server's output (not its banner, nor a line still being written)."""
    entries = []
    for line in log_path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [e for e in entries if isinstance(e, dict)]


def logged_request(log_path: Path, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The server's JSON request-log entry for the request sent with this X-Request-ID."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in log_entries(log_path):
            if entry.get("request_id") == request_id:
                return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no log entry for request {request_id} in:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def secure_cookie_names(response: httpx.Response) -> set[str]:
    """Names of the cookies the response sets, each checked to be Secure, HttpOnly and SameSite."""
    names = set()
    for cookie in response.headers.get_list("set-cookie"):
        name, _, rest = cookie.partition("=")
        attributes = {part.strip().split("=")[0].lower() for part in rest.split(";")[1:]}
        assert {"secure", "httponly", "samesite"} <= attributes, cookie
        names.add(name)
    return names


@pytest.mark.one_database
def test_jean_memory_behind_caddy(deployment: Deployment, database_url: str, tmp_path: Path) -> None:
    """One deployment (two server starts in all) for the three checks, to keep the test short."""
    claude_connects_through_the_proxy(deployment)
    forwarded_for_is_believed_only_from_the_proxy(deployment, database_url, tmp_path)
    doctor_passes_through_the_proxy(deployment)


def claude_connects_through_the_proxy(deployment: Deployment) -> None:
    issuer = deployment.issuer
    added = run_cli(["user", "add", EMAIL, "--password-stdin"], deployment.env, stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr

    with deployment.caddy.client(local_address=CLIENT_ADDRESS) as http:
        # Claude's probe: an unauthenticated initialize gets the 401 that names the https metadata.
        probe = McpHttp(f"{issuer}/mcp", None, http).initialize()
        assert probe.status_code == 401, probe.text
        challenge = probe.headers["www-authenticate"]
        metadata_url = f"{issuer}/.well-known/oauth-protected-resource/mcp"
        assert f'resource_metadata="{metadata_url}"' in challenge

        protected = http.get(metadata_url)
        assert protected.status_code == 200
        assert protected.json()["resource"] == f"{issuer}/mcp"
        assert protected.json()["authorization_servers"] == [issuer]
        server_metadata = http.get(f"{issuer}/.well-known/oauth-authorization-server").json()
        assert server_metadata["issuer"] == issuer
        for key in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"):
            assert server_metadata[key].startswith(f"{issuer}/"), server_metadata[key]

        # Registration, sign-in and consent as Claude and a person's browser do them, over https.
        flow = Flow(base_url=issuer, http=http)
        flow.register(CLAUDE_REGISTRATION)
        login = flow.authorize()
        assert login.status_code == 200 and 'name="password"' in login.text, login.text[:300]
        assert CSRF_COOKIE in secure_cookie_names(login)
        consent = flow.sign_in(login, EMAIL)
        assert consent.status_code == 200 and 'value="approve"' in consent.text, consent.text[:300]
        assert SESSION_COOKIE in secure_cookie_names(consent)
        params = redirect_params(flow.consent(consent))
        assert params["iss"] == issuer

        exchanged = flow.exchange(params["code"])
        assert exchanged.status_code == 200, exchanged.text
        tokens = exchanged.json()
        claims = jwt_claims(tokens["access_token"])
        assert claims["iss"] == issuer
        assert claims["aud"] == f"{issuer}/mcp"

        mcp = McpHttp(f"{issuer}/mcp", tokens["access_token"], http)
        assert mcp.initialize().status_code == 200
        saved = mcp.call_tool("add_memories", {"text": "I deploy behind Caddy"})
        assert saved.get("isError") is not True, saved
        memory_id = saved["structuredContent"]["saved"][0]["id"]
        listed = mcp.call_tool("list_memories", {"limit": 10})
        assert [r["id"] for r in listed["structuredContent"]["results"]] == [memory_id]

        # Every request above came through Caddy and was logged with the client's own address.
        request_id = "proxy-flow-check-0001"
        http.get(f"{issuer}/healthz", headers={"X-Request-ID": request_id})
        assert logged_request(deployment.server_log, request_id)["client_ip"] == CLIENT_ADDRESS
        entries = log_entries(deployment.server_log)
        requests = [e for e in entries if "route" in e and e["route"] != "/healthz"]  # /healthz: start-up polls
        assert {"/oauth/register", "/oauth/authorize", "/oauth/complete", "/oauth/token"} <= {
            e["route"] for e in requests
        }
        assert {e["client_ip"] for e in requests} == {CLIENT_ADDRESS}, requests

        # deploy/Caddyfile keeps /metrics private while the server itself serves it.
        assert http.get(f"{issuer}/metrics").status_code == 404
        assert http.get(f"{issuer}/readyz").status_code == 200
    assert httpx.get(f"{deployment.direct_url}/metrics").status_code == 200


def forwarded_for_is_believed_only_from_the_proxy(deployment: Deployment, database_url: str, tmp_path: Path) -> None:
    log = deployment.server_log
    with deployment.caddy.client(local_address=CLIENT_ADDRESS) as via_caddy:
        # Through Caddy: the client's address, as Caddy's X-Forwarded-For says (the TCP peer is Caddy).
        via_caddy.get(f"{deployment.issuer}/healthz", headers={"X-Request-ID": "via-caddy-plain-01"})
        assert logged_request(log, "via-caddy-plain-01")["client_ip"] == CLIENT_ADDRESS
        # A client's own X-Forwarded-For does not survive Caddy: it sets the header from the connection.
        via_caddy.get(
            f"{deployment.issuer}/healthz",
            headers={"X-Request-ID": "via-caddy-spoof-01", "X-Forwarded-For": SPOOFED},
        )
        assert logged_request(log, "via-caddy-spoof-01")["client_ip"] == CLIENT_ADDRESS

    # Straight to the server from an address that is not a trusted proxy: the header is ignored.
    direct = httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT_ADDRESS), timeout=10)
    with direct:
        answer = direct.get(
            f"{deployment.direct_url}/healthz",
            headers={"X-Request-ID": "direct-untrusted-01", "X-Forwarded-For": SPOOFED},
        )
    assert answer.status_code == 200
    assert logged_request(log, "direct-untrusted-01")["client_ip"] == CLIENT_ADDRESS

    # A server without JEAN_MEMORY_TRUSTED_PROXIES believes no one, not even loopback.
    other_log = tmp_path / "untrusting.log"
    env = server_env(database_url, tmp_path / "data-untrusting")
    with server_process(env, log_path=other_log) as url:
        answer = httpx.get(
            f"{url}/healthz", headers={"X-Request-ID": "no-trusted-proxy-01", "X-Forwarded-For": SPOOFED}
        )
        assert answer.status_code == 200
        assert logged_request(other_log, "no-trusted-proxy-01")["client_ip"] == "127.0.0.1"


def doctor_passes_through_the_proxy(deployment: Deployment) -> None:
    url = f"{deployment.issuer}/mcp"
    result = run_cli(["doctor", url, "--ca-file", str(deployment.caddy.ca_file)], deployment.env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line[:2] in ("✓ ", "✗ ", "! ", "- ")]
    assert len(lines) >= 10, result.stdout
    assert all(line.startswith("✓ ") for line in lines), result.stdout
    assert "certificate for localhost verified" in result.stdout

    # Without the CA (public roots only) the certificate is untrusted, and the doctor says so.
    env = {k: v for k, v in deployment.env.items() if k != "SSL_CERT_FILE"}
    untrusted = run_cli(["doctor", url], env)
    assert untrusted.returncode == 1
    assert "✗ https" in untrusted.stdout and "TLS failed" in untrusted.stdout, untrusted.stdout
