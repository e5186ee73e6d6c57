"""Browser clients (the MCP Inspector): CORS on the metadata and on the 401."""

from __future__ import annotations

from urllib.parse import urlsplit

from jean_memory.doctor import claude
from jean_memory.doctor.checks.base import check, error_summary, status_line
from jean_memory.doctor.context import Context
from jean_memory.doctor.discovery import header_tokens
from jean_memory.doctor.fetcher import Exchange
from jean_memory.doctor.results import Skip, Verdict


def _allows_origin(exchange: Exchange) -> bool:
    allowed = exchange.headers.get("access-control-allow-origin")
    return allowed in ("*", claude.BROWSER_ORIGIN)


@check("cors-metadata", "CORS on the metadata")
def check_cors_metadata(ctx: Context) -> Verdict:
    """Fetch spec (CORS): browser clients such as the MCP Inspector (origin
    http://localhost:6274) can read the metadata only when it carries
    Access-Control-Allow-Origin, and their requests with an MCP-Protocol-Version header need an
    answered preflight (OPTIONS without authentication)."""
    ctx.require_prm()
    ctx.require_as_metadata()
    urls = [e.url for e in (ctx.prm_exchange, ctx.as_exchange) if e is not None]
    problems: list[str] = []
    exchanges: list[Exchange] = []
    for url in urls:
        get = ctx.answer(ctx.get_document(url, {"Origin": claude.BROWSER_ORIGIN}))
        exchanges.append(get)
        if not _allows_origin(get):
            problems.append(f"GET {urlsplit(url).path} has no Access-Control-Allow-Origin")
    preflight = ctx.answer(
        ctx.fetcher.request(
            "OPTIONS",
            urls[-1],
            headers={
                "Origin": claude.BROWSER_ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "mcp-protocol-version",
            },
        )
    )
    exchanges.append(preflight)
    if not (200 <= (preflight.status or 0) < 300 and _allows_origin(preflight)):
        problems.append(
            f"preflight OPTIONS {urlsplit(urls[-1]).path} → {preflight.status} without Access-Control-Allow-Origin"
        )
    ms = max(e.ms for e in exchanges)
    if problems:
        return Verdict(
            False,
            "; ".join(problems),
            "Add CORS to /.well-known/*, register and token: Access-Control-Allow-Origin (* is fine without "
            "credentials) and answer OPTIONS preflights without authentication.",
            ms,
        )
    return Verdict(True, f"Access-Control-Allow-Origin for {claude.BROWSER_ORIGIN} on GET and preflight", ms=ms)


@check("cors-mcp-401", "CORS on the 401")
def check_cors_mcp_401(ctx: Context) -> Verdict:
    """Fetch spec (CORS): a browser client sees the 401 and its WWW-Authenticate (to find the
    metadata) only when that answer carries Access-Control-Allow-Origin and
    Access-Control-Expose-Headers naming WWW-Authenticate. Its preflight must allow the
    Authorization header by name (a `*` does not cover it)."""
    if not ctx.passed("unauthenticated-401"):
        raise Skip("needs the 401 (see '401 on unauthenticated initialize')")
    preflight = ctx.answer(
        ctx.fetcher.request(
            "OPTIONS",
            ctx.url,
            headers={
                "Origin": claude.BROWSER_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
            },
        )
    )
    post = ctx.answer(
        ctx.fetcher.request(
            "POST",
            ctx.url,
            headers={**claude.PROBE_HEADERS, "Origin": claude.BROWSER_ORIGIN},
            json_body=claude.INITIALIZE_BODY,
        )
    )
    ms = max(preflight.ms, post.ms)
    problems: list[str] = []
    if not (200 <= (preflight.status or 0) < 300 and _allows_origin(preflight)):
        problems.append(f"preflight OPTIONS → {preflight.status} without Access-Control-Allow-Origin")
    elif "authorization" not in header_tokens(preflight.headers.get("access-control-allow-headers")):
        problems.append("preflight does not list Authorization in Access-Control-Allow-Headers")
    if post.status == 403:
        problems.append(f"POST with Origin {claude.BROWSER_ORIGIN} → 403 ({error_summary(post)})")
    elif post.status != 401:
        problems.append(f"POST with Origin → {status_line(post)}, not 401")
    else:
        if not _allows_origin(post):
            problems.append("the 401 has no Access-Control-Allow-Origin")
        exposed = header_tokens(post.headers.get("access-control-expose-headers"))
        if not exposed & {"www-authenticate", "*"}:
            problems.append("the 401 does not expose WWW-Authenticate (Access-Control-Expose-Headers)")
    if problems:
        return Verdict(
            False,
            "; ".join(problems),
            f"Apply CORS to the MCP endpoint outside the auth check, so 401s carry it too: allow loopback "
            f"origins such as {claude.BROWSER_ORIGIN}, expose WWW-Authenticate, Mcp-Session-Id and "
            "MCP-Protocol-Version, allow the Authorization header by name, answer OPTIONS without auth.",
            ms,
        )
    return Verdict(True, "401 carries Access-Control-Allow-Origin and exposes WWW-Authenticate", ms=ms)
