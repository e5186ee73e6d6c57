"""How hosts and app names are shown to a person on the authorization pages.

A person decides from the consent page whom to trust, so what it shows must not be forgeable:
- hosts in their ASCII form (IDNA / punycode): `cl\u0430ude.ai`, with a Cyrillic a, reads as
  `xn--clude-5ve.ai`, never as `claude.ai` (RFC 3492; UTS #39 on confusables);
- an app that calls itself by the name of a well-known app (the pinned documents' names:
  "Claude", "Claude Code", "ChatGPT") but is not from that app's host is shown with its real
  host in plain words;
- nothing of a client_id that failed its checks but its host, and only when it is an https URL
  (an error page must not carry text of the requester's choosing).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache

from jean_memory.oauth.cimd_document import pinned_documents
from jean_memory.oauth.clients import Client
from jean_memory.oauth.redirects import split_url


def ascii_host(host: str) -> str:
    """`host` lowercased, each label that is not ASCII in its punycode (`xn--`) form."""
    labels = []
    for label in host.lower().split("."):
        if label.isascii():
            labels.append(label)
            continue
        try:
            labels.append(label.encode("idna").decode("ascii"))
        except UnicodeError:  # IDNA 2003 refuses some labels; punycode takes any
            labels.append("xn--" + label.encode("punycode").decode("ascii"))
    return ".".join(labels)


def shown_host(uri: str) -> str:
    """host[:port] of a URI as a person should read it: ASCII, and without user information
    (what precedes an `@` is not where the browser goes); `scheme:` for a private-use scheme."""
    parts = split_url(uri)
    if parts is None:
        return ""
    if not parts.hostname:
        return f"{parts.scheme}:" if parts.scheme else ""
    host = ascii_host(parts.hostname)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port is not None else host


def https_host(client_id: str | None) -> str | None:
    """The host an https client_id names (shown on its error page), else None."""
    if not client_id or not client_id.lower().startswith("https://"):
        return None
    parts = split_url(client_id)
    if parts is None or not parts.hostname:
        return None
    host = shown_host(client_id)
    return host if host.isprintable() else None


def _same_name(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


@dataclass(frozen=True)
class _Known:
    name: str
    home: str  # the host its document is published on (claude.ai)
    hosts: frozenset[str]  # every host the real app is at: its document's and its redirects'


@cache
def _known_apps() -> dict[str, _Known]:
    known: dict[str, _Known] = {}
    for url, document in pinned_documents().items():
        home = shown_host(url)
        hosts = {home, *(shown_host(u).rsplit(":", 1)[0] for u in document["redirect_uris"])}
        name = _same_name(document["client_name"])
        previous = known.get(name)
        known[name] = _Known(document["client_name"], home, frozenset(hosts | (previous.hosts if previous else set())))
    return known


def impostor_warning(client: Client, redirect_uri: str) -> str | None:
    """Words for the consent page when the app uses a well-known app's name from another host.

    The app's host is its document's host for a metadata-document client, else the host its
    code goes to (a registered client names nothing else)."""
    known = _known_apps().get(_same_name(client.client_name))
    if known is None:
        return None
    source = client.client_id if client.source == "cimd" else redirect_uri
    host = shown_host(source)
    if host in known.hosts or host.rsplit(":", 1)[0] in known.hosts:
        return None
    where = host or "an unknown address"
    return f"“{known.name}” — this app is from {where}, not {known.home}"


def consent_facts(client: Client, redirect_uri: str) -> dict[str, str | None]:
    """The consent page's hosts and warning, ready for the template."""
    return {
        "redirect_host": shown_host(redirect_uri),
        # The host that vouches for an app identified by a metadata document (e.g. claude.ai).
        "client_host": shown_host(client.client_id) if client.source == "cimd" else None,
        "impostor_warning": impostor_warning(client, redirect_uri),
    }
