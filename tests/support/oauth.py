"""The OAuth steps an MCP client and a person's browser take, over real HTTP.

Tests compose these to walk the whole flow or stop at the step they probe. The browser part
reads the forms the server renders (action and hidden fields) exactly as a browser would.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx

CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback"
CLAUDE_REGISTRATION = {
    # What claude.ai sends to the registration endpoint.
    "client_name": "claudeai",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "client_secret_post",
    "scope": "claudeai",
    "redirect_uris": [CLAUDE_CALLBACK, "https://claude.com/api/mcp/auth_callback"],
}
PASSWORD = "correct horse battery staple"
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


def chunked_form(fields: dict[str, str], padding: int) -> Iterator[bytes]:
    """`fields` and then `padding` bytes of filler, as a generator: httpx sends it chunked,
    without a Content-Length, so only a server that counts the bytes it reads can refuse it."""
    yield urlencode(fields).encode()
    for i in range(padding // 8192):
        yield f"&pad{i}=".encode() + b"a" * 8192  # distinct names: a repeated parameter is refused


def surrogate_multipart(fields: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A multipart body whose declared charset (`unicode-escape`) turns `\\udfff` into a lone
    surrogate when the form is decoded: the one way a form field can carry one."""
    boundary = "jm-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}; charset=unicode-escape"}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": attributes.get("action", ""), "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and attributes.get("name"):
            self.forms[-1]["fields"][attributes["name"]] = attributes.get("value", "")
        elif tag == "button" and self.forms and attributes.get("name"):
            self.forms[-1]["buttons"].append((attributes["name"], attributes.get("value", "")))


def parse_form(html: str) -> dict[str, Any]:
    parser = _FormParser()
    parser.feed(html)
    assert parser.forms, f"no form on the page:\n{html[:500]}"
    return parser.forms[0]


def redirect_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, f"expected a redirect, got {response.status_code}: {response.text[:300]}"
    query = urlsplit(response.headers["location"]).query
    return {k: v[0] for k, v in parse_qs(query).items()}


@dataclass
class Flow:
    """One client's connection attempt: its registration and PKCE pair."""

    base_url: str
    http: httpx.Client
    registration: dict[str, Any] = field(default_factory=dict)
    verifier: str = ""
    challenge: str = ""
    redirect_uri: str = CLAUDE_CALLBACK

    def register(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post(f"{self.base_url}/oauth/register", json=body or CLAUDE_REGISTRATION)
        assert response.status_code == 201, response.text
        self.registration = response.json()
        self.redirect_uri = self.registration["redirect_uris"][0]
        return self.registration

    @property
    def client_id(self) -> str:
        return self.registration["client_id"]

    def client_auth(self) -> dict[str, str]:
        """Form fields for client_secret_post (or just the id for a public client)."""
        fields = {"client_id": self.client_id}
        if self.registration.get("client_secret"):
            fields["client_secret"] = self.registration["client_secret"]
        return fields

    def authorize(self, **overrides: str | None) -> httpx.Response:
        self.verifier, self.challenge = pkce_pair()
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
            "state": "state-" + secrets.token_hex(4),
            "scope": "claudeai",
            "resource": f"{self.base_url}/mcp",
        }
        params.update(overrides)
        return self.http.get(
            f"{self.base_url}/oauth/authorize", params={k: v for k, v in params.items() if v is not None}
        )

    def submit(self, page: httpx.Response, **values: str) -> httpx.Response:
        form = parse_form(page.text)
        return self.http.post(urljoin(self.base_url, form["action"]), data={**form["fields"], **values})

    def sign_in(self, page: httpx.Response, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.submit(page, email=email, password=password)

    def consent(self, page: httpx.Response, decision: str = "approve") -> httpx.Response:
        return self.submit(page, decision=decision)

    def get_code(self, email: str, password: str = PASSWORD, **overrides: str | None) -> dict[str, str]:
        """Authorize, sign in (if asked) and approve (if asked): the callback's parameters."""
        page = self.authorize(**overrides)
        if page.status_code == 200 and 'name="password"' in page.text:
            page = self.sign_in(page, email, password)
        if page.status_code == 200 and 'value="approve"' in page.text:
            page = self.consent(page)
        return redirect_params(page)

    def exchange(self, code: str, **overrides: str) -> httpx.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": self.verifier,
            **self.client_auth(),
        }
        data.update(overrides)
        return self.http.post(f"{self.base_url}/oauth/token", data=data)

    def refresh(self, refresh_token: str, **overrides: str) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **self.client_auth()}
        data.update(overrides)
        return self.http.post(f"{self.base_url}/oauth/token", data=data)

    def tokens(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        params = self.get_code(email, password)
        response = self.exchange(params["code"])
        assert response.status_code == 200, response.text
        return response.json()


def new_flow(base_url: str, body: dict[str, Any] | None = None) -> Flow:
    flow = Flow(base_url=base_url, http=httpx.Client(timeout=30))
    flow.register(body)
    return flow


class McpHttp:
    """Raw JSON-RPC over Streamable HTTP, for tests that check wire details the SDK client hides."""

    def __init__(self, url: str, token: str | None, http: httpx.Client | None = None) -> None:
        self.url = url
        self.token = token
        self.http = http or httpx.Client(timeout=30)
        self._id = 0

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra)
        return headers

    def post(self, payload: Any, **extra_headers: str) -> httpx.Response:
        return self.http.post(self.url, json=payload, headers=self.headers(**extra_headers))

    def rpc(self, method: str, params: dict[str, Any] | None = None, **extra_headers: str) -> httpx.Response:
        self._id += 1
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": self._id, "method": method}
        if params is not None:
            payload["params"] = params
        return self.post(payload, **extra_headers)

    def initialize(self, version: str = "2025-11-25") -> httpx.Response:
        return self.rpc(
            "initialize",
            {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
        )

    def call_tool(self, name: str, arguments: dict[str, Any], version: str = "2025-11-25") -> dict[str, Any]:
        response = self.rpc("tools/call", {"name": name, "arguments": arguments}, **{"MCP-Protocol-Version": version})
        assert response.status_code == 200, response.text
        return response.json()["result"]
