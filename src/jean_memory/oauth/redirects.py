"""Redirect URI rules: which URIs a client may register, and exact matching at authorize time.

RFC 9700 and OAuth 2.1 require exact string matching, with one exception from RFC 8252 §7.3:
a loopback `http` redirect may use any port, because native apps (Claude Code, VS Code) bind
an ephemeral one.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from jean_memory.config import is_loopback_host

# Schemes that must never receive a code: script or local-content schemes, and plain-web
# schemes other than https (http is allowed for loopback only).
FORBIDDEN_SCHEMES = frozenset(
    {
        "javascript",
        "data",
        "vbscript",
        "file",
        "about",
        "blob",
        "ftp",
        "ws",
        "wss",
        "mailto",
        "tel",
        "chrome",
        "view-source",
    }
)
SCHEME_PATTERN = re.compile(r"^[a-z][a-z0-9+.\-]*$")


MAX_REDIRECT_URIS = 10  # per client, registered or in a metadata document (CONTRACT)
MAX_REDIRECT_URI_CHARS = 2000


class RedirectUriError(ValueError):
    """Why a redirect URI cannot be registered. `str()` names the URI (for the registering
    client's JSON answer); `reason` does not (for pages, which must not echo outside text)."""

    def __init__(self, reason: str, uri: object = None) -> None:
        super().__init__(f"redirect URI {uri!r} {reason}" if uri is not None else reason)
        self.reason = reason


def split_url(uri: str) -> SplitResult | None:
    """`urlsplit`, or None for what it cannot parse (`http://[::1/cb` raises "Invalid IPv6
    URL"; a port that is not a number raises on `.port`): outside input must never raise."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    return parts


def check_registrable(uri: str) -> str:
    """The URI if a client may register it, else RedirectUriError saying why."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_REDIRECT_URI_CHARS:
        raise RedirectUriError(
            f"each redirect URI must be a non-empty string of at most {MAX_REDIRECT_URI_CHARS} characters"
        )
    if any(c.isspace() for c in uri):
        raise RedirectUriError("contains white space", uri)
    parts = split_url(uri)
    if parts is None:
        raise RedirectUriError("is not a valid URI (a malformed host or port)", uri)
    scheme = parts.scheme.lower()
    if not scheme or not SCHEME_PATTERN.match(scheme):
        raise RedirectUriError("must be an absolute URI", uri)
    if parts.fragment or "#" in uri:
        raise RedirectUriError("must not contain a fragment", uri)
    if "@" in parts.netloc:
        # https://claude.ai@evil.example/ goes to evil.example while reading like claude.ai.
        raise RedirectUriError("must not contain user information (user@host)", uri)
    if scheme in FORBIDDEN_SCHEMES:
        raise RedirectUriError(f"scheme {scheme!r} is not allowed")
    if scheme == "http":
        if not is_loopback_host(parts.hostname or ""):
            raise RedirectUriError(
                "uses http on a non-loopback host; use https, or http://127.0.0.1 / "
                "http://localhost for apps on this machine",
                uri,
            )
    elif scheme == "https":
        if not parts.hostname:
            raise RedirectUriError("has no host", uri)
    elif "." not in scheme and scheme not in {"cursor", "vscode", "vscode-insiders", "claude", "windsurf"}:
        # RFC 8252 §7.1: private-use schemes are reverse domain names (com.example.app:/cb);
        # a few well-known MCP clients use short registered names.
        # The URI goes in str() (the registering client's answer), not in `reason`: a page
        # showing the reason must not show a scheme a document's author chose (issue 12 finding 10).
        raise RedirectUriError(
            "has a scheme that is not a private-use scheme (expected a reverse domain name such as com.example.app)",
            uri,
        )
    return uri


def check_registrable_list(uris: object) -> list[str]:
    """A client's redirect URIs (a non-empty list of at most MAX_REDIRECT_URIS), each checked."""
    if not isinstance(uris, list) or not uris:
        raise RedirectUriError("redirect_uris must be a non-empty list of URIs")
    if len(uris) > MAX_REDIRECT_URIS:
        raise RedirectUriError(f"at most {MAX_REDIRECT_URIS} redirect_uris may be registered, not {len(uris)}")
    return [check_registrable(u) for u in uris]


def _loopback_key(uri: str) -> tuple[str, str, str, str] | None:
    """Everything but the port, for a loopback http URI; None for anything else, including a
    URI with user information, a fragment or a port that is not a number (only the port may
    differ from the registered URI)."""
    parts = split_url(uri)
    if parts is None or parts.scheme.lower() != "http" or not is_loopback_host(parts.hostname or ""):
        return None
    if "@" in parts.netloc or "#" in uri:
        return None
    return ("http", (parts.hostname or "").lower(), parts.path, parts.query)


def matches_registered(requested: str, registered: list[str]) -> bool:
    if requested in registered:
        return True
    key = _loopback_key(requested)
    return key is not None and any(_loopback_key(r) == key for r in registered)
