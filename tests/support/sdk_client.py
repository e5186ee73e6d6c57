"""The official MCP Python SDK client, wired to our server the way an application wires it.

`OAuthClientProvider` (an `httpx2.Auth`) does discovery, registration, PKCE and the token
exchange itself; it only needs a place to keep tokens (`TokenStorage`) and two callbacks: one
that sends the person to the authorization URL and one that hands back what the redirect
carried. Here the person is `Browser`: an `httpx.AsyncClient` that keeps cookies, reads the
forms the server renders (via `tests.support.oauth.parse_form`) and stops at the redirect to
the client, so the code never has to reach a real callback listener.

`WireLog` records every request the SDK's HTTP client sends, including the auth flow's own
(discovery, registration, token), so tests can check what the SDK actually did rather than
infer it from the outcome.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.support.oauth import PASSWORD, parse_form, redirect_params

# A loopback redirect URI, as a native app registers one (RFC 8252 §7.3). Nothing listens on
# it: the browser below captures the redirect instead of following it.
SDK_REDIRECT_URI = "http://127.0.0.1:33418/callback"
TIMEOUT = httpx2.Timeout(15.0)


@dataclass
class MemoryTokenStorage:
    """`mcp.client.auth.TokenStorage` kept in memory; a test can pre-fill or inspect it."""

    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None
    token_writes: int = 0

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.token_writes += 1

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Browser:
    """The person's browser: opens the authorization URL, signs in, approves, and captures the
    302 back to the client without following it.

    `open` is the SDK's `redirect_handler`, `callback` its `callback_handler`. The cookie jar
    outlives one authorization, so a second one finds the person still signed in.
    """

    http: httpx.AsyncClient
    email: str
    password: str = PASSWORD
    allow_write: bool = True  # the consent page's checkbox, as the person leaves it
    opened: list[str] = field(default_factory=list)  # every authorization URL the SDK sent us to
    pages: list[str] = field(default_factory=list)  # "login" / "consent" for each page we answered
    _result: AuthorizationCodeResult | None = None

    async def open(self, authorization_url: str) -> None:
        self.opened.append(authorization_url)
        page = await self.http.get(authorization_url)
        if page.status_code == 200 and 'name="password"' in page.text:
            self.pages.append("login")
            page = await self._submit(page, email=self.email, password=self.password)
        if page.status_code == 200 and 'value="approve"' in page.text:
            self.pages.append("consent")
            page = await self._submit(page, decision="approve", **({} if self.allow_write else {"allow_write": None}))
        params = redirect_params(page)  # asserts a 302 and reads its query
        assert "code" in params, f"the authorization was refused: {params}"
        self._result = AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    async def callback(self) -> AuthorizationCodeResult:
        result, self._result = self._result, None
        assert result is not None, "the SDK asked for the callback before sending the person to authorize"
        return result

    async def _submit(self, page: httpx.Response, **values: str | None) -> httpx.Response:
        """Post the page's form as a browser would: its hidden fields plus what the person typed."""
        form = parse_form(page.text)
        action = urljoin(str(page.url), form["action"])
        fields = {k: v for k, v in {**form["fields"], **values}.items() if v is not None}  # None: unchecked
        return await self.http.post(action, data=fields)


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    status: int
    grant_type: str | None  # for token requests: which grant the SDK used


@dataclass
class WireLog:
    """Every request the SDK's httpx2 client sent and the status it got (auth-flow requests included)."""

    exchanges: list[Exchange] = field(default_factory=list)

    async def record(self, response: httpx2.Response) -> None:
        request = response.request
        grant_type = None
        if request.url.path.endswith("/token"):
            grant_type = parse_qs(request.content.decode()).get("grant_type", [None])[0]
        self.exchanges.append(Exchange(request.method, request.url.path, response.status_code, grant_type))

    def grants(self) -> list[tuple[str | None, int]]:
        return [(e.grant_type, e.status) for e in self.exchanges if e.path.endswith("/token")]

    def paths(self) -> list[tuple[str, str, int]]:
        return [(e.method, e.path, e.status) for e in self.exchanges]

    def clear(self) -> None:
        self.exchanges.clear()


def sdk_provider(
    mcp_url: str,
    storage: MemoryTokenStorage,
    browser: Browser,
    token_endpoint_auth_method: str | None = None,
) -> OAuthClientProvider:
    """The SDK's OAuth provider for a native app with a loopback redirect, as its docs set one up."""
    metadata = OAuthClientMetadata.model_validate(
        {
            "client_name": "SDK test client",
            "redirect_uris": [SDK_REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": token_endpoint_auth_method,
        }
    )
    return OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )


@asynccontextmanager
async def sdk_client(mcp_url: str, provider: OAuthClientProvider, log: WireLog) -> AsyncIterator[Client]:
    """An initialized SDK `Client` over Streamable HTTP, authenticated by `provider`.

    `mode="legacy"` makes the client open with the `initialize` handshake, as MCP clients of
    the 2025 protocol versions (Claude among them) do.
    """
    async with (
        httpx2.AsyncClient(auth=provider, timeout=TIMEOUT, event_hooks={"response": [log.record]}) as http,
        Client(streamable_http_client(mcp_url, http_client=http), mode="legacy") as client,
    ):
        yield client


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
