"""The authorization server's endpoints: client registration and the authorization request."""

from __future__ import annotations

from urllib.parse import parse_qs, urljoin, urlsplit

from jean_memory.doctor import claude
from jean_memory.doctor.checks.base import check, status_line
from jean_memory.doctor.context import Context
from jean_memory.doctor.discovery import origin, pkce_pair
from jean_memory.doctor.results import Skip, Verdict


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
            f"POST {endpoint} → {status_line(exchange)}",
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
    return Verdict(False, f"{status_line(exchange)}", fix_error, exchange.ms)
