"""A real browser through the person's side of OAuth: Debian's Chromium driven by Playwright.

The other flow tests read our forms with an HTML parser; here Chromium renders the sign-in,
consent and error pages, runs their forms, keeps the cookies and follows the redirect back to
a client listening on a loopback port, as it would on a person's machine. The client side is
the official MCP SDK's `OAuthClientProvider`: its `redirect_handler` opens the authorization URL
in the browser and its `callback_handler` waits for the redirect to reach the listener.

Screenshots of every page, at a desktop and a phone-sized viewport (light and dark), go to
`test-artifacts/browser/` for a person to look at; the phone layout is also checked for
horizontal overflow.

Needs Python Playwright and `/usr/bin/chromium` (scripts/install-ci-deps.sh installs both).
Without them the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from jean_memory.accounts.users import User
from tests.support.chromium import (
    DESKTOP,
    PHONE,
    assert_no_horizontal_overflow,
    chromium_page,
    require_chromium,
    submit,
)
from tests.support.oauth import PASSWORD, new_flow, pkce_pair
from tests.support.servers import RunningServer

pytestmark = [pytest.mark.slow, pytest.mark.one_database]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
# Long enough, without a break, to push a careless layout past a phone's width.
LONG_CLIENT_NAME = "Claude-Desktop-Workspace-Integration-For-Acme-Corporation-Research"


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    require_chromium()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Playwright's async API needs asyncio


def chromium(**context_options: Any) -> Any:
    """A fresh headless Chromium and one page in a new context (its own cookie jar)."""
    return chromium_page(**context_options)


# --- the client's loopback listener ------------------------------------------------------------


@dataclass
class LoopbackListener:
    """What a native MCP client runs to catch the redirect (RFC 8252 §7.3): an HTTP listener on
    127.0.0.1 that answers one request on /callback and hands over its query."""

    port: int
    server: asyncio.AbstractServer
    received: asyncio.Future[str]

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def wait(self, timeout: float = 30) -> dict[str, str]:
        target = await asyncio.wait_for(asyncio.shield(self.received), timeout)
        return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}


@asynccontextmanager
async def loopback_listener() -> AsyncIterator[LoopbackListener]:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1")
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.split(" ", 2)
            if len(parts) < 3:
                return  # Chromium opens spare connections it may close without a request
            method, target, _ = parts
            if method == "GET" and target.startswith("/callback"):
                status, body = "200 OK", b"<!doctype html><title>Done</title><p>You can close this page.</p>"
                if not received.done():
                    received.set_result(target)
            else:  # the favicon and anything else
                status, body = "404 Not Found", b""
            head = f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield LoopbackListener(port, server, received)
    finally:
        server.close()


# --- page checks -------------------------------------------------------------------------------


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def visible_messages(page: Any) -> list[str]:
    """The texts of the visible error/alert boxes on the page."""
    boxes = page.locator(".error, [role=alert]")
    return [
        (await boxes.nth(i).inner_text()).strip() for i in range(await boxes.count()) if await boxes.nth(i).is_visible()
    ]


def authorize_url(server: RunningServer, client_id: str, redirect_uri: str, state: str) -> str:
    _, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "scope": "memory",
        "resource": server.mcp_url,
    }
    return f"{server.base_url}/oauth/authorize?{urlencode(query)}"


# --- the whole flow, started by the SDK --------------------------------------------------------


@dataclass
class MemoryStorage:
    """The SDK's `TokenStorage`, in memory."""

    tokens: Any = None
    client_info: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


@pytest.mark.anyio
async def test_sdk_client_authorizes_through_a_real_browser(
    server: RunningServer, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MCP SDK discovers us, registers a loopback client, sends the person to our pages in
    Chromium (sign in, Allow), receives the redirect on its listener, exchanges the code and
    calls a tool with the token."""
    import httpx2
    from mcp.client import Client
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    seen: dict[str, Any] = {}
    async with loopback_listener() as listener, chromium(viewport=DESKTOP) as page:

        async def open_in_browser(url: str) -> None:
            seen["authorization_url"] = url
            await page.goto(url)
            await page.get_by_label("Email").fill(alice.email)
            await page.get_by_label("Password").fill(PASSWORD)
            await submit(page, page.get_by_role("button", name="Sign in"))
            await page.get_by_role("button", name="Allow").wait_for()
            seen["consent_heading"] = await page.locator("h1").inner_text()
            # CONTRACT "Scopes": the labelled allow_write box, checked by default (a full grant).
            seen["allow_write"] = await page.get_by_label("Allow saving and changing memories").is_checked()
            await page.get_by_role("button", name="Allow").click()
            await page.wait_for_url(lambda u: u.startswith(listener.redirect_uri + "?"))
            seen["final_url"] = page.url
            seen["final_text"] = await page.locator("body").inner_text()

        async def wait_for_callback() -> AuthorizationCodeResult:
            params = await listener.wait()
            return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

        storage = MemoryStorage()
        provider = OAuthClientProvider(
            server_url=server.mcp_url,
            client_metadata=OAuthClientMetadata.model_validate(
                {
                    "client_name": "Browser test app",
                    "redirect_uris": [listener.redirect_uri],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "none",
                }
            ),
            storage=storage,
            redirect_handler=open_in_browser,
            callback_handler=wait_for_callback,
        )
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the SDK's HTTP client honours *_PROXY
        async with (
            httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30.0)) as http,
            Client(streamable_http_client(server.mcp_url, http_client=http), mode="legacy") as client,
        ):
            tools = {t.name for t in (await client.list_tools()).tools}
            saved = await client.call_tool("add_memories", {"text": "My cat is called Miso"})

    assert seen["authorization_url"].startswith(f"{server.base_url}/oauth/authorize?")
    assert seen["consent_heading"] == "Allow Browser test app?"
    assert seen["allow_write"] is True and "add_memories" in tools
    # The browser itself ended on the client's redirect URI, with code, state and iss (RFC 9207).
    final = urlsplit(seen["final_url"])
    assert f"{final.scheme}://{final.netloc}{final.path}" == listener.redirect_uri
    params = {k: v[0] for k, v in parse_qs(final.query).items()}
    assert params.keys() >= {"code", "state", "iss"}, params
    assert params["iss"] == server.base_url
    assert params["state"] == parse_qs(urlsplit(seen["authorization_url"]).query)["state"][0]
    assert "You can close this page" in seen["final_text"]
    # The SDK exchanged the code and the token works on /mcp.
    assert storage.tokens is not None and storage.tokens.access_token
    assert {"jean_memory", "add_memories", "search_memory"} <= tools
    assert not saved.is_error, saved.content
    # And the same token works on the wire, outside the SDK.
    async with httpx.AsyncClient(timeout=15) as raw:
        listed = await raw.post(
            server.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={
                "Authorization": f"Bearer {storage.tokens.access_token}",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-11-25",
            },
        )
    assert listed.status_code == 200, listed.text


# --- every page, at each viewport --------------------------------------------------------------

VIEWPORTS = {
    "desktop": {"viewport": DESKTOP},
    "phone": {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True, "has_touch": True},
    "phone-dark": {
        "viewport": PHONE,
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
        "color_scheme": "dark",
    },
}


@pytest.mark.anyio
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
async def test_pages_render_and_work_at_each_viewport(server: RunningServer, alice: User, viewport: str) -> None:
    """Sign-in (and a failed one), consent (denied), and the unknown-client error page: each
    renders, keeps within the screen width, and behaves as the contract says."""
    async with loopback_listener() as listener, chromium(**VIEWPORTS[viewport]) as page:
        flow = new_flow(
            server.base_url,
            {
                "client_name": LONG_CLIENT_NAME,
                "redirect_uris": [listener.redirect_uri],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            },
        )
        url = authorize_url(server, flow.client_id, listener.redirect_uri, state="st-" + viewport)

        # Sign-in page.
        response = await page.goto(url)
        assert response is not None and response.status == 200
        await page.get_by_role("button", name="Sign in").wait_for()
        assert await page.locator("input[type=hidden][name=csrf_token]").count() == 1
        assert await visible_messages(page) == []
        assert LONG_CLIENT_NAME in await page.locator("body").inner_text()
        await screenshot(page, f"{viewport}-1-login")
        await assert_no_horizontal_overflow(page, f"the sign-in page ({viewport})")

        # A wrong password: the form again, 4xx, exactly one visible message.
        await page.get_by_label("Email").fill(alice.email)
        await page.get_by_label("Password").fill("not the password")
        failed = await submit(page, page.get_by_role("button", name="Sign in"))
        assert 400 <= failed.status < 500, failed.status
        messages = await visible_messages(page)
        assert len(messages) == 1, messages
        await screenshot(page, f"{viewport}-2-login-failed")
        await assert_no_horizontal_overflow(page, f"the failed sign-in page ({viewport})")
        # An unknown email reads exactly the same (no account enumeration).
        await page.get_by_label("Email").fill("nobody@example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        unknown = await submit(page, page.get_by_role("button", name="Sign in"))
        assert unknown.status == failed.status
        assert await visible_messages(page) == messages

        # The right password: the consent page.
        await page.get_by_label("Email").fill(alice.email)
        await page.get_by_label("Password").fill(PASSWORD)
        consent = await submit(page, page.get_by_role("button", name="Sign in"))
        assert consent.status == 200
        assert await page.get_by_role("button", name="Allow").is_visible()
        assert await page.get_by_role("button", name="Deny").is_visible()
        body = await page.locator("body").inner_text()
        assert LONG_CLIENT_NAME in body and f"127.0.0.1:{listener.port}" in body and alice.email in body
        await screenshot(page, f"{viewport}-3-consent")
        await assert_no_horizontal_overflow(page, f"the consent page ({viewport})")

        # Deny: back at the client with access_denied, state and iss.
        await page.get_by_role("button", name="Deny").click()
        params = await listener.wait()
        assert params.get("error") == "access_denied", params
        assert params.get("state") == "st-" + viewport and params.get("iss") == server.base_url, params
        await page.wait_for_url(lambda u: u.startswith(listener.redirect_uri + "?"))

        # The error page: an unknown client_id is never redirected anywhere.
        bad = authorize_url(server, "no-such-client", listener.redirect_uri, state="st-error")
        response = await page.goto(bad)
        assert response is not None and 400 <= response.status < 500, response and response.status
        assert urlsplit(page.url).path == "/oauth/authorize"
        assert len(await visible_messages(page)) == 1
        await screenshot(page, f"{viewport}-4-error-unknown-client")
        await assert_no_horizontal_overflow(page, f"the error page ({viewport})")
