"""Chromium for the page tests: Debian's browser driven by Playwright, accessibility checked by
axe-core (npm), and screenshots of every page at desktop and phone size, light and dark.

Without Playwright, Chromium or axe-core the tests skip locally and fail under CI=true
(`require_chromium`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("JEAN_MEMORY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
PAGES_ARTIFACTS = ROOT / "test-artifacts" / "pages"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
STEP_TIMEOUT_MS = 15_000


def missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed (see scripts/install-ci-deps.sh)"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} is missing (apt-get install chromium; see scripts/install-ci-deps.sh)"
    if not AXE.exists():
        return f"{AXE} is missing (npm ci; see scripts/install-ci-deps.sh)"
    return None


def require_chromium() -> None:
    """Skip (locally) or fail (CI=true) when the browser tests cannot run."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@asynccontextmanager
async def chromium_page(**context_options: Any) -> AsyncIterator[Any]:
    """A fresh headless Chromium and one page in a new context (its own cookie jar)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(**{"viewport": DESKTOP, **context_options})
            context.set_default_timeout(STEP_TIMEOUT_MS)
            yield await context.new_page()
        finally:
            await browser.close()


async def serious_axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now (light and dark are
    checked by the caller switching the colour scheme)."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Added as a script element by Playwright: the page's CSP governs the page's own
        # scripts, and Playwright's evaluation bypasses it.
        await page.evaluate(AXE.read_text())
    result = await page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def assert_no_horizontal_overflow(page: Any, what: str) -> None:
    widths = await page.evaluate("() => ({scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth})")
    assert widths["scroll"] <= widths["inner"], f"{what} overflows horizontally: {widths}"


async def check_page(page: Any, name: str) -> None:
    """The page as it is now, in four looks: desktop and phone, light and dark. Each is
    screenshotted to test-artifacts/pages/{name}-{desktop|phone}-{light|dark}.png, checked by
    axe-core (no serious or critical violation) and, on the phone, for sideways scrolling."""
    PAGES_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        for scheme in ("light", "dark"):
            await page.emulate_media(color_scheme=scheme)
            for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
                await page.set_viewport_size(size)
                await page.screenshot(path=str(PAGES_ARTIFACTS / f"{name}-{size_name}-{scheme}.png"), full_page=True)
                if size_name == "phone":
                    await assert_no_horizontal_overflow(page, f"{name} ({scheme}, 390 px)")
            violations = await serious_axe_violations(page)
            assert not violations, f"axe-core on {name} ({scheme}): {violations}"
    finally:
        await page.set_viewport_size(DESKTOP)
        await page.emulate_media(color_scheme="light")


async def submit(page: Any, button: Any) -> Any:
    """Click a submit button and return the response of the navigation it causes."""
    async with page.expect_navigation() as navigation:
        await button.click()
    return await navigation.value


async def sign_in(page: Any, base_url: str, email: str, password: str, next_path: str = "") -> Any:
    """Sign in through /signin as a person would: fill the fields by label, click "Sign in"."""
    suffix = f"?next={next_path}" if next_path else ""
    await page.goto(f"{base_url}/signin{suffix}")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    return await submit(page, page.get_by_role("button", name="Sign in"))
