"""RFC 8707 resource indicators compared in canonical form, so `HTTPS://Host:443/mcp/` is our `/mcp`."""

from __future__ import annotations

from urllib.parse import urlsplit

from jean_memory.oauth.errors import OAuthError

DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_resource(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # `http://[::1` ("Invalid IPv6 URL"): the URL itself, never equal to ours
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # `:443x`, `:8443:443`: no URL of ours, so nothing it may equal
        return url
    netloc = host if port in (None, DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    return f"{scheme}://{netloc}{path}" + (f"?{parts.query}" if parts.query else "")


def resolve_resource(requested: str | None, our_resource: str) -> str:
    """Our resource when none or an equivalent spelling is asked for; `invalid_target` otherwise."""
    if not requested:
        return our_resource
    if canonical_resource(requested) != canonical_resource(our_resource) or "#" in requested:
        raise OAuthError(
            "invalid_target",
            f"resource {requested!r} is not served here; this server's resource is {our_resource}",
        )
    return our_resource
