"""URL arithmetic and header parsing for OAuth discovery, with no network access.

RFC 9728 §3.1 and RFC 8414 §3.1 place metadata by inserting the well-known segment between the
host and the path of the identifier; OpenID Connect Discovery appends it after the path. The
MCP authorization spec (2025-11-25, "Authorization Server Metadata Discovery") has clients try
these in order.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
from urllib.parse import urlsplit

PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"
AS_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"

_RESOURCE_METADATA = re.compile(r'resource_metadata\s*=\s*(?:"([^"]*)"|([^\s,]+))', re.IGNORECASE)
_BEARER = re.compile(r"(?:^|,)\s*bearer(?:\s|,|$)", re.IGNORECASE)


def validate_url(url: str) -> str | None:
    """Why `url` cannot be checked, or None when it can."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            f"{url!r} is not an http(s) URL; pass the connector URL you would paste into Claude, e.g. https://host/mcp"
        )
    if parts.fragment:
        return f"{url!r} has a fragment (#...); a connector URL has none"
    return None


def is_loopback(host: str | None) -> bool:
    """Loopback hosts may use plain http (OAuth 2.1 §1.5 exempts them, and so does the doctor)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _path(url: str) -> str:
    path = urlsplit(url).path
    return "" if path == "/" else path.rstrip("/")


def protected_resource_candidates(resource_url: str) -> list[str]:
    """RFC 9728 §3.1 (path-inserted) first, then the host-wide document that many servers use."""
    path = _path(resource_url)
    root = origin(resource_url) + PRM_WELL_KNOWN
    return [root + path, root] if path else [root]


def rfc8414_url(issuer: str) -> str:
    """RFC 8414 §3.1: `/.well-known/oauth-authorization-server` inserted before the issuer's path."""
    return origin(issuer) + AS_WELL_KNOWN + _path(issuer)


def openid_urls(issuer: str) -> list[str]:
    """OpenID Connect Discovery §4 appends to the issuer; RFC 8414 §5 also allows insertion."""
    path = _path(issuer)
    if not path:
        return [origin(issuer) + OIDC_WELL_KNOWN]
    return [origin(issuer) + OIDC_WELL_KNOWN + path, origin(issuer) + path + OIDC_WELL_KNOWN]


def has_bearer_challenge(challenges: list[str]) -> bool:
    return any(_BEARER.search(value) for value in challenges)


def resource_metadata_from(challenges: list[str]) -> str | None:
    """The `resource_metadata` parameter of a WWW-Authenticate challenge (RFC 9728 §5.1)."""
    for value in challenges:
        match = _RESOURCE_METADATA.search(value)
        if match:
            return match.group(1) if match.group(1) is not None else match.group(2)
    return None


def pkce_pair() -> tuple[str, str]:
    """A fresh code verifier and its S256 challenge (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def header_tokens(value: str | None) -> set[str]:
    """The lower-cased comma-separated items of a header such as Access-Control-Expose-Headers."""
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}
