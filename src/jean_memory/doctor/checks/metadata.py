"""Discovery: the protected-resource and authorization-server metadata and what they must say."""

from __future__ import annotations

from typing import Any

from jean_memory.doctor.checks.base import PUBLIC_METADATA_FIX, check, status_line
from jean_memory.doctor.context import Context
from jean_memory.doctor.discovery import openid_urls, protected_resource_candidates, resource_metadata_from, rfc8414_url
from jean_memory.doctor.fetcher import Exchange
from jean_memory.doctor.results import Severity, Verdict


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
        account = "; ".join(f"{e.url} → {status_line(e)}" for e in tried)
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
        return Verdict(False, f"{url} → {status_line(exchange)}", PUBLIC_METADATA_FIX, exchange.ms)
    if exchange.status != 200 or doc is None:
        return Verdict(
            False,
            f"{url} → {status_line(exchange)}",
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
        account = "; ".join(f"{e.url} → {status_line(e)}" for e in tried)
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
