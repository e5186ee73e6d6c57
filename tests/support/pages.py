"""Helpers for the page tests that need no browser: a cookie-keeping client signed in through
/signin, and the CSRF field of a page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.support.oauth import PASSWORD
from tests.support.servers import RunningServer

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@contextmanager
def signed_in_client(server: RunningServer, email: str, password: str = PASSWORD) -> Iterator[httpx.Client]:
    """A client signed in through the /signin form (with its CSRF field), as a browser would be.
    Pages want `Accept: text/html` for `/`; the others answer HTML to anyone."""
    with httpx.Client(base_url=server.base_url, timeout=15, headers={"Accept": "text/html"}) as client:
        page = client.get("/signin")
        answer = client.post(
            "/signin", data={"email": email, "password": password, "csrf_token": csrf_of(page.text), "next": "/"}
        )
        assert answer.status_code == 303, answer.text
        yield client


def post_form(client: httpx.Client, page_path: str, action: str, data: dict[str, str] | None = None) -> httpx.Response:
    """POST a form of `page_path` to `action` with the page's CSRF field, as the browser would."""
    page = client.get(page_path)
    return client.post(action, data={**(data or {}), "csrf_token": csrf_of(page.text)})
