"""The checks, one function each, in the order Claude meets the server.

Each function judges one thing Claude (or a browser client such as the MCP Inspector) relies
on, names the clause that makes it a requirement, and on failure says what to change. They run
in the order of `CHECKS`; later ones use what earlier ones found (see `Context`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from jean_memory.doctor import claude
from jean_memory.doctor.context import Context
from jean_memory.doctor.discovery import (
    has_bearer_challenge,
    header_tokens,
    is_loopback,
    openid_urls,
    origin,
    pkce_pair,
    protected_resource_candidates,
    resource_metadata_from,
    rfc8414_url,
)
from jean_memory.doctor.fetcher import Exchange
from jean_memory.doctor.results import Severity, Skip, Verdict

CheckFunction = Callable[[Context], Verdict]


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    severity: Severity
    run: CheckFunction


CHECKS: list[Check] = []


def check(name: str, title: str, severity: Severity = Severity.REQUIRED) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check; registration order is the order they run and print in."""

    def register(function: CheckFunction) -> CheckFunction:
        CHECKS.append(Check(name, title, severity, function))
        return function

    return register


def _error_summary(exchange: Exchange) -> str:
    """`error: error_description` of an OAuth error body, else the page's text, shortened."""
    doc = exchange.json_object()
    if doc and "error" in doc:
        description = doc.get("error_description")
        return f"{doc['error']}: {description}" if description else str(doc["error"])
    text = html.unescape(re.sub(r"<[^>]+>", " ", exchange.text()))
    text = " ".join(text.split())
    return text[:160] + ("…" if len(text) > 160 else "")


def _status_line(exchange: Exchange) -> str:
    summary = _error_summary(exchange)
    return f"{exchange.describe()} ({summary})" if summary else exchange.describe()


PUBLIC_METADATA_FIX = (
    "Serve /.well-known/* without authentication: exclude it from the auth middleware. "
    "Clients fetch metadata before they have any token (RFC 9728 §3, RFC 8414 §3)."
)


# -- transport ---------------------------------------------------------------------------------


@check("https", "https with a valid certificate")
def check_https(ctx: Context) -> Verdict:
    """Claude calls the connector from Anthropic's cloud, over https only, and verifies the
    certificate (MCP authorization spec, "Communication Security": authorization endpoints MUST
    be served over HTTPS; OAuth 2.1 §1.5). Loopback hosts may use http for local testing."""
    parts = urlsplit(ctx.url)
    probe = ctx.probe()
    if probe.error_kind == "tls":
        return Verdict(
            False,
            f"TLS failed: {probe.error}",
            "Use a certificate from a public CA that covers this host name and send the full chain "
            "(e.g. Caddy or Let's Encrypt). For a private test CA pass --ca-file or set SSL_CERT_FILE.",
            probe.ms,
        )
    if probe.error_kind in ("connect", "other"):
        return Verdict(
            False,
            f"cannot connect to {parts.netloc}: {probe.error}",
            "Check the URL, that the server is running, and that its port is reachable from the internet "
            "(Claude connects from Anthropic's cloud, not from your machine).",
            probe.ms,
        )
    if parts.scheme == "https":
        if probe.error_kind == "timeout":
            raise Skip(
                f"no connection to {parts.netloc} within {ctx.fetcher.timeout:g} s (see 'answers within budget')"
            )
        return Verdict(True, f"certificate for {parts.hostname} verified", ms=probe.ms)
    if is_loopback(parts.hostname):
        return Verdict(
            True, f"http on loopback host {parts.hostname}: fine locally; Claude needs public https", ms=probe.ms
        )
    return Verdict(
        False,
        f"plain http on {parts.hostname}",
        "Claude only connects over https: put the server behind a TLS-terminating proxy (Caddy, nginx with "
        "Let's Encrypt, a tunnel) and paste the https URL.",
        probe.ms,
    )


# -- the resource server -------------------------------------------------------------------------


@check("unauthenticated-401", "401 on unauthenticated initialize")
def check_unauthenticated_401(ctx: Context) -> Verdict:
    """Claude first sends `initialize` without a token and starts OAuth only when the answer is
    401 with `WWW-Authenticate: Bearer resource_metadata="..."` (RFC 6750 §3.1, RFC 9728 §5.1,
    MCP authorization spec 2025-06-18 "Authorization Server Location"). A redirect, 200, 403 or
    5xx leaves Claude with nothing to follow."""
    probe = ctx.answer(ctx.probe())
    status = probe.status or 0
    location = probe.headers.get("location", "")
    if 300 <= status < 400:
        return Verdict(
            False,
            f"{status} redirect to {location}",
            "Answer at exactly this URL without redirecting: clients do not follow a redirect on POST "
            "(a 307 from /mcp to /mcp/ is the usual culprit, e.g. Starlette's Mount). Serve /mcp and /mcp/ alike.",
            probe.ms,
        )
    if 200 <= status < 300:
        return Verdict(
            False,
            f"{status}: the server answered without any token",
            "Require a Bearer token: answer a request without one with 401 and "
            'WWW-Authenticate: Bearer resource_metadata="<protected-resource metadata URL>", '
            "so that Claude starts OAuth (RFC 6750 §3.1, RFC 9728 §5.1).",
            probe.ms,
        )
    if status == 403:
        return Verdict(
            False,
            f"403 instead of 401 ({_error_summary(probe) or 'no body'})",
            "Answer a missing or invalid token with 401, not 403 (RFC 6750 §3.1): Claude treats 403 as final and "
            'never starts OAuth. Keep 403 for error="insufficient_scope" only.',
            probe.ms,
        )
    if status in (404, 405):
        return Verdict(
            False,
            f"{status}: nothing serves POST at this URL",
            "Check the path you pasted (the MCP endpoint, usually /mcp) and that the server mounts its "
            "Streamable HTTP endpoint there.",
            probe.ms,
        )
    if status != 401:
        return Verdict(
            False,
            f"{_status_line(probe)} instead of 401",
            "Decide authentication first: a request without a token must get 401 with WWW-Authenticate "
            "before any other validation or error (RFC 6750 §3.1).",
            probe.ms,
        )
    challenges = probe.headers.get_list("www-authenticate")
    if not challenges or not has_bearer_challenge(challenges):
        return Verdict(
            False,
            "401 without a Bearer WWW-Authenticate challenge" + (f" (got {challenges[0]!r})" if challenges else ""),
            'Send WWW-Authenticate: Bearer resource_metadata="<protected-resource metadata URL>" with the 401 '
            "(RFC 6750 §3, RFC 9728 §5.1).",
            probe.ms,
        )
    if resource_metadata_from(challenges) is None:
        return Verdict(
            False,
            f"401, but WWW-Authenticate has no resource_metadata: {challenges[0]!r}",
            f'Add resource_metadata="{protected_resource_candidates(ctx.url)[0]}" to the Bearer challenge '
            "(RFC 9728 §5.1; MCP authorization spec 2025-06-18 requires it).",
            probe.ms,
        )
    return Verdict(True, f"401, WWW-Authenticate: {challenges[0]}", ms=probe.ms)


# -- discovery -----------------------------------------------------------------------------------


@check("protected-resource-metadata", "protected-resource metadata")
def check_protected_resource_metadata(ctx: Context) -> Verdict:
    """RFC 9728 §3: the document that names the authorization server. Claude fetches the URL in
    `resource_metadata`, or without one the well-known locations (path-inserted, then root, as
    in the MCP authorization spec 2025-11-25). It must be public JSON with `resource` and
    `authorization_servers`."""
    probe = ctx.probe()
    advertised = None
    if probe.status == 401:
        advertised = resource_metadata_from(probe.headers.get_list("www-authenticate"))
    candidates = [advertised] if advertised else protected_resource_candidates(ctx.url)
    tried: list[Exchange] = []
    found: tuple[Exchange, dict[str, Any]] | None = None
    for url in candidates:
        exchange = ctx.answer(ctx.get_document(url))
        doc = exchange.json_object()
        if exchange.status == 200 and doc is not None:
            found = (exchange, doc)
            break
        tried.append(exchange)
    if found is None:
        account = "; ".join(f"{e.url} → {_status_line(e)}" for e in tried)
        ms = max(e.ms for e in tried)
        if any(e.status in (401, 403) for e in tried):
            return Verdict(False, f"metadata requires authentication: {account}", PUBLIC_METADATA_FIX, ms)
        return Verdict(
            False,
            f"not found: {account}",
            f"Serve RFC 9728 metadata as JSON at {protected_resource_candidates(ctx.url)[0]} "
            '(e.g. {"resource": "' + ctx.url + '", "authorization_servers": ["https://your-issuer"]}) and '
            "point to it from the 401's resource_metadata.",
            ms,
        )
    exchange, doc = found
    servers = doc.get("authorization_servers")
    if not isinstance(doc.get("resource"), str) or not (
        isinstance(servers, list) and servers and all(isinstance(s, str) for s in servers)
    ):
        return Verdict(
            False,
            f"{exchange.url} lacks `resource` or a non-empty `authorization_servers` list",
            "Include `resource` (the connector URL) and `authorization_servers` (your issuer) "
            "(RFC 9728 §2; the MCP authorization spec requires authorization_servers).",
            exchange.ms,
        )
    ctx.prm, ctx.prm_exchange = doc, exchange
    how = "advertised in WWW-Authenticate" if advertised else "found at a well-known URL"
    return Verdict(True, f"{exchange.url} ({how})", ms=exchange.ms)


@check("resource", "resource equals the URL")
def check_resource(ctx: Context) -> Verdict:
    """RFC 9728 §3.3: the `resource` in the metadata MUST be identical to the resource the
    client asked about, or the client MUST NOT use it; Claude compares it with the pasted URL and
    also sends it as the RFC 8707 `resource` parameter that tokens are bound to."""
    prm = ctx.require_prm()
    ms = ctx.prm_exchange.ms if ctx.prm_exchange else None
    resource = prm["resource"]
    if resource == ctx.url:
        return Verdict(True, resource, ms=ms)
    hint = " (they differ only by a trailing slash)" if resource.rstrip("/") == ctx.url.rstrip("/") else ""
    return Verdict(
        False,
        f"resource is {resource!r}, the URL is {ctx.url!r}{hint}",
        f"If {resource} is the connector URL, paste that into Claude instead. Otherwise set `resource` to "
        f"exactly {ctx.url} (same scheme, host, port and path); behind a proxy, configure the public URL "
        "instead of deriving it from the request.",
        ms,
    )


@check("as-metadata", "AS metadata at the RFC 8414 path")
def check_as_metadata(ctx: Context) -> Verdict:
    """RFC 8414 §3.1: authorization-server metadata lives at
    `/.well-known/oauth-authorization-server` inserted before the issuer's path, as public JSON
    with at least issuer, authorization_endpoint, token_endpoint and response_types_supported
    (§2). This is the first place Claude looks."""
    issuer = ctx.authorization_server()
    url = rfc8414_url(issuer)
    exchange = ctx.answer(ctx.get_document(url))
    doc = exchange.json_object()
    if exchange.status in (401, 403):
        return Verdict(False, f"{url} → {_status_line(exchange)}", PUBLIC_METADATA_FIX, exchange.ms)
    if exchange.status != 200 or doc is None:
        return Verdict(
            False,
            f"{url} → {_status_line(exchange)}",
            f"Serve the RFC 8414 metadata document as JSON at {url} (the issuer named in authorization_servers "
            "decides the path).",
            exchange.ms,
        )
    missing = [
        key for key in ("issuer", "authorization_endpoint", "token_endpoint") if not isinstance(doc.get(key), str)
    ]
    if missing:
        return Verdict(
            False,
            f"{url} lacks {', '.join(missing)}",
            "Include issuer, authorization_endpoint, token_endpoint and response_types_supported (RFC 8414 §2).",
            exchange.ms,
        )
    ctx.as_metadata, ctx.as_exchange = doc, exchange
    return Verdict(True, url, ms=exchange.ms)


@check("openid-configuration", "AS metadata at the OpenID path", Severity.INFO)
def check_openid_configuration(ctx: Context) -> Verdict:
    """OpenID Connect Discovery §4: `/.well-known/openid-configuration`. The MCP authorization
    spec (2025-11-25) has clients try it after RFC 8414, and servers MUST offer at least one of
    the two, so its absence alone is a warning; when both exist they must agree on the issuer."""
    issuer = ctx.authorization_server()
    tried: list[Exchange] = []
    for url in openid_urls(issuer):
        exchange = ctx.answer(ctx.get_document(url))
        doc = exchange.json_object()
        if exchange.status == 200 and doc is not None and isinstance(doc.get("issuer"), str):
            break
        tried.append(exchange)
    else:
        account = "; ".join(f"{e.url} → {_status_line(e)}" for e in tried)
        fix = "Also serve the same document at " + openid_urls(issuer)[0] + " for clients that look there first."
        if ctx.as_metadata is None:
            fix = PUBLIC_METADATA_FIX if any(e.status in (401, 403) for e in tried) else fix
        return Verdict(False, f"not found: {account}", fix, max(e.ms for e in tried))
    if ctx.as_metadata is None:
        ctx.as_metadata, ctx.as_exchange = doc, exchange
        return Verdict(True, f"{exchange.url} (used in place of the RFC 8414 document)", ms=exchange.ms)
    if doc.get("issuer") != ctx.as_metadata.get("issuer"):
        return Verdict(
            False,
            f"{exchange.url} names issuer {doc.get('issuer')!r}, the RFC 8414 document {ctx.as_metadata.get('issuer')!r}",
            "Serve one and the same document at both well-known paths.",
            exchange.ms,
        )
    return Verdict(True, exchange.url, ms=exchange.ms)


@check("issuer", "issuer equals authorization_servers[0]")
def check_issuer(ctx: Context) -> Verdict:
    """RFC 8414 §3.3: the `issuer` in the metadata MUST be identical to the issuer the client
    used to find it, and clients compare byte for byte (so does RFC 9207's `iss`). A trailing
    slash, often added by URL types such as pydantic's AnyHttpUrl, is the usual mismatch."""
    declared = ctx.authorization_server()
    issuer = ctx.require_as_metadata()["issuer"]
    fix = (
        "Use one issuer string, without a trailing slash (https://host, not https://host/), in "
        "authorization_servers, in the metadata's issuer and in the iss of redirects and tokens. "
        "Serialize it as a plain string: URL types such as pydantic's AnyHttpUrl append '/'."
    )
    if declared != issuer:
        return Verdict(False, f"authorization_servers[0] is {declared!r}, issuer is {issuer!r}", fix, ctx.as_ms())
    if issuer.endswith("/"):
        return Verdict(False, f"issuer {issuer!r} ends with '/'", fix, ctx.as_ms())
    return Verdict(True, issuer, ms=ctx.as_ms())


@check("pkce-s256", "PKCE S256 advertised")
def check_pkce_s256(ctx: Context) -> Verdict:
    """OAuth 2.1 §4.1.1 and the MCP authorization spec: clients MUST use PKCE with S256 and
    MUST refuse to proceed when `code_challenge_methods_supported` (RFC 8414 §2) is absent."""
    methods = ctx.require_as_metadata().get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" in methods:
        return Verdict(True, f"code_challenge_methods_supported: {methods}", ms=ctx.as_ms())
    return Verdict(
        False,
        f"code_challenge_methods_supported is {methods!r}",
        'Support PKCE with S256 and advertise "code_challenge_methods_supported": ["S256"].',
        ctx.as_ms(),
    )


@check("token-auth-methods", "token auth methods none and client_secret_post")
def check_token_auth_methods(ctx: Context) -> Verdict:
    """RFC 8414 §2: without `token_endpoint_auth_methods_supported` only client_secret_basic
    is implied. Claude registers asking for client_secret_post; public clients (Claude Code,
    clients identified by a metadata document) need `none`."""
    methods = ctx.require_as_metadata().get("token_endpoint_auth_methods_supported")
    listed = methods if isinstance(methods, list) else []
    missing = [m for m in ("none", "client_secret_post") if m not in listed]
    if not missing:
        return Verdict(True, f"token_endpoint_auth_methods_supported: {methods}", ms=ctx.as_ms())
    return Verdict(
        False,
        f"token_endpoint_auth_methods_supported is {methods!r}; missing {', '.join(missing)}",
        'Accept and advertise "token_endpoint_auth_methods_supported": ["none", "client_secret_post", '
        '"client_secret_basic"].',
        ctx.as_ms(),
    )


@check("iss-parameter", "RFC 9207 iss parameter advertised", Severity.INFO)
def check_iss_parameter(ctx: Context) -> Verdict:
    """RFC 9207 §3: `authorization_response_iss_parameter_supported: true` tells clients that
    every authorization response carries `iss`, which defends against mix-up attacks; clients
    that support RFC 9207 check it."""
    flag = ctx.require_as_metadata().get("authorization_response_iss_parameter_supported")
    if flag is True:
        return Verdict(True, "authorization_response_iss_parameter_supported: true", ms=ctx.as_ms())
    return Verdict(
        False,
        f"authorization_response_iss_parameter_supported is {flag!r}",
        "Send iss=<issuer> on every authorization response (success and error) and advertise "
        '"authorization_response_iss_parameter_supported": true.',
        ctx.as_ms(),
    )


@check("cimd", "client ID metadata documents (CIMD)", Severity.INFO)
def check_cimd(ctx: Context) -> Verdict:
    """draft-ietf-oauth-client-id-metadata-document; the MCP authorization spec (2025-11-25)
    recommends it over dynamic registration. Claude uses CIMD only when the metadata says
    `client_id_metadata_document_supported: true` (and lists `none`); otherwise it registers a
    new client on every connection, which works but piles up clients."""
    flag = ctx.require_as_metadata().get("client_id_metadata_document_supported")
    if flag is True:
        return Verdict(True, "client_id_metadata_document_supported: true", ms=ctx.as_ms())
    return Verdict(
        False,
        "not advertised: Claude will use dynamic client registration",
        "Optional: accept https client_ids that name a client metadata document, then advertise "
        '"client_id_metadata_document_supported": true.',
        ctx.as_ms(),
    )


# -- the authorization server's endpoints -----------------------------------------------------------


@check("registration", "registration with Claude's request")
def check_registration(ctx: Context) -> Verdict:
    """RFC 7591 §3: Claude registers itself with exactly this body and needs 201 with a
    `client_id`; a `client_secret` MUST come with `client_secret_expires_at` (§3.2.1). Unknown
    values such as scope `claudeai` should be narrowed or ignored, not refused (§2)."""
    metadata = ctx.require_as_metadata()
    endpoint = metadata.get("registration_endpoint")
    if not isinstance(endpoint, str):
        return Verdict(
            False,
            "no registration_endpoint in the metadata",
            "Implement RFC 7591 dynamic client registration and advertise registration_endpoint; otherwise each "
            "person must enter a pre-registered client ID in Claude's advanced settings.",
            ctx.as_ms(),
        )
    exchange = ctx.answer(ctx.fetcher.request("POST", endpoint, json_body=claude.REGISTRATION_BODY))
    doc = exchange.json_object() or {}
    if exchange.status != 201:
        refused = exchange.status is not None and exchange.status >= 400
        return Verdict(
            False,
            f"POST {endpoint} → {_status_line(exchange)}",
            "Accept Claude's registration as sent: open registration (no initial access token), both "
            "claude.ai and claude.com callbacks, client_secret_post, and unknown scopes such as 'claudeai' "
            "ignored rather than refused; answer 201 Created (RFC 7591 §3.2.1)."
            if refused
            else "Answer a successful registration with 201 Created and the client information (RFC 7591 §3.2.1).",
            exchange.ms,
        )
    client_id = doc.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        return Verdict(False, "201 without a client_id", "Return the new client_id (RFC 7591 §3.2.1).", exchange.ms)
    if "client_secret" in doc and "client_secret_expires_at" not in doc:
        return Verdict(
            False,
            "a client_secret came without client_secret_expires_at",
            "Send client_secret_expires_at with every client_secret (0 for never); RFC 7591 §3.2.1 requires it.",
            exchange.ms,
        )
    ctx.client_id = client_id
    method = doc.get("token_endpoint_auth_method", "client_secret_basic (implied)")
    secret = "with a secret" if "client_secret" in doc else "no secret"
    return Verdict(True, f"201, client_id {client_id}, {method}, {secret}", ms=exchange.ms)


@check("authorization", "authorization request from Claude")
def check_authorization(ctx: Context) -> Verdict:
    """OAuth 2.1 §4.1.1 with PKCE (RFC 7636) and `resource` (RFC 8707): Claude's request must
    lead a person to a sign-in or consent page. An error redirect to Claude's callback, or an
    error page, ends the connection attempt before anyone can sign in."""
    metadata = ctx.require_as_metadata()
    endpoint = metadata.get("authorization_endpoint")
    if ctx.client_id is None:
        raise Skip("no client_id: registration did not succeed")
    if not isinstance(endpoint, str):
        return Verdict(
            False, "no authorization_endpoint in the metadata", "Advertise authorization_endpoint (RFC 8414 §2)."
        )
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": ctx.client_id,
        "redirect_uri": claude.REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "jean-memory-doctor",
        "scope": claude.SCOPE,
        "resource": ctx.url,
    }
    exchange = ctx.answer(ctx.fetcher.request("GET", endpoint, params=params))
    status = exchange.status or 0
    fix_error = (
        "Accept Claude's request: the registered redirect_uri, PKCE S256, any state, unknown scopes "
        f"(drop them), and resource={ctx.url} (RFC 8707; compare it in canonical form)."
    )
    if 200 <= status < 300:
        content_type = exchange.headers.get("content-type", "")
        if "html" in content_type:
            return Verdict(True, f"{status} {content_type.split(';')[0]} page", ms=exchange.ms)
        return Verdict(
            False,
            f"{status} {content_type or 'without a content type'}, not a page",
            "Answer the authorization request with an HTML sign-in or consent page (or a redirect to one).",
            exchange.ms,
        )
    if 300 <= status < 400:
        location = urljoin(exchange.url, exchange.headers.get("location", ""))
        if location.split("?")[0] == claude.REDIRECT_URI:
            query = parse_qs(urlsplit(location).query)
            if "error" in query:
                description = query.get("error_description", [""])[0]
                return Verdict(
                    False,
                    f"error redirect to Claude: error={query['error'][0]}"
                    + (f" ({description})" if description else ""),
                    fix_error,
                    exchange.ms,
                )
            return Verdict(
                False,
                "redirected straight to Claude's callback without asking anyone to sign in",
                "Show a sign-in and consent page before issuing a code.",
                exchange.ms,
                warning=True,
            )
        if origin(location) == origin(exchange.url):
            return Verdict(
                True, f"{status} redirect to {urlsplit(location).path} (a page on the same host)", ms=exchange.ms
            )
        return Verdict(
            False,
            f"{status} redirect to another host: {origin(location)}",
            "Fine if that is your identity provider; make sure it shows a sign-in page for this request.",
            exchange.ms,
            warning=True,
        )
    return Verdict(False, f"{_status_line(exchange)}", fix_error, exchange.ms)


# -- browser clients ------------------------------------------------------------------------------


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
        problems.append(f"POST with Origin {claude.BROWSER_ORIGIN} → 403 ({_error_summary(post)})")
    elif post.status != 401:
        problems.append(f"POST with Origin → {_status_line(post)}, not 401")
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


# -- time ---------------------------------------------------------------------------------------------


@check("latency", "answers within budget")
def check_latency(ctx: Context) -> Verdict:
    """Claude gives discovery, registration and token requests 10 s each and then gives up
    with a generic error; `--timeout` can tighten the budget. Judges every request above."""
    budget_ms = ctx.budget_seconds * 1000
    exchanges = list(ctx.fetcher.exchanges)
    if not exchanges:
        raise Skip("no requests were made")
    slow = [e for e in exchanges if e.error_kind == "timeout" or (e.answered and e.ms > budget_ms)]
    slowest = max(exchanges, key=lambda e: e.ms)
    if slow:
        listed = "; ".join(f"{e.method} {urlsplit(e.url).path or '/'}: {e.error or f'{e.ms:.0f} ms'}" for e in slow[:4])
        return Verdict(
            False,
            f"{len(slow)} of {len(exchanges)} over {ctx.budget_seconds:g} s: {listed}",
            f"Answer every request within {ctx.budget_seconds:g} s: avoid cold starts (scale-to-zero hosting), "
            "slow database calls on discovery and the 401, and blocking work on the event loop.",
            slowest.ms,
        )
    return Verdict(
        True,
        f"{len(exchanges)} answers, slowest {slowest.ms:.0f} ms ({slowest.method} {urlsplit(slowest.url).path or '/'})",
        ms=slowest.ms,
    )
