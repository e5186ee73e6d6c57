"""What a client metadata document must say (draft-ietf-oauth-client-id-metadata-document §4),
and the pinned copies of the documents of well-known apps that are used when a fetch fails.

The URL's own rules are checked before any fetch, in `guarded_fetch`; these rules apply to the
JSON that came back. A document that breaks one is refused with a CimdError whose `message`
names the rule and never repeats the document's text.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jean_memory.oauth.clients import GRANT_TYPES
from jean_memory.oauth.forms import is_valid_text
from jean_memory.oauth.guarded_fetch import CimdError
from jean_memory.oauth.redirects import RedirectUriError, check_registrable_list
from jean_memory.oauth.scopes import grantable_scope

SHARED_SECRET_METHODS = ("client_secret_post", "client_secret_basic", "client_secret_jwt")
PINNED_DIRECTORY = "pinned_clients"


def validate_document(url: str, document: Any) -> dict[str, Any]:
    """The client's fields from its document, or CimdError naming the first thing that is wrong."""
    if not isinstance(document, dict):
        raise CimdError("the document is not a JSON object")
    if not is_valid_text(document):
        raise CimdError("the document holds text that is not valid Unicode (e.g. a lone surrogate such as \\udfff)")
    found = document.get("client_id")
    if found is None:
        raise CimdError("the document has no client_id (it must equal the document's URL)")
    if found != url:
        raise CimdError(
            "the document's client_id must equal the URL it was fetched from exactly",
            detail=f"the document's client_id is {found!r}, but it must equal the URL it was fetched from exactly",
        )
    name = document.get("client_name")
    if not isinstance(name, str) or not name.strip():
        raise CimdError("the document has no client_name")
    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise CimdError("the document's redirect_uris must be a non-empty list")
    try:
        redirect_uris = check_registrable_list(uris)
    except RedirectUriError as exc:
        # The page names the rule broken, not the URI: the document's text is not ours to show.
        raise CimdError(
            f"the document's redirect_uris are not acceptable: a redirect URI {exc.reason}",
            detail=f"the document's redirect_uris are not acceptable: {exc}",
        ) from exc
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise CimdError("the document contains a client_secret; a metadata document must not hold a secret")
    _check_auth_method(document)
    grant_types = document.get("grant_types")
    if grant_types is None:
        grant_types = list(GRANT_TYPES)
    if not isinstance(grant_types, list) or "authorization_code" not in grant_types:
        raise CimdError("the document's grant_types must include authorization_code")
    response_types = document.get("response_types")
    if response_types is not None and (not isinstance(response_types, list) or "code" not in response_types):
        raise CimdError("the document's response_types must include code")
    scope = document.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise CimdError("the document's scope must be a space-separated string")
    return {
        "client_name": name.strip()[:255],
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": "none",
        # Grant types we do not offer (Claude lists jwt-bearer) are ignored, not refused.
        "grant_types": [g for g in GRANT_TYPES if g in grant_types],
        "scope": grantable_scope(scope) if scope else None,
    }


def _check_auth_method(document: dict[str, Any]) -> None:
    """CIMD clients are public here: `none`, the only method that needs nothing registered.

    Both the RFC 7591 field and the plural list some documents carry are read, and a client is
    accepted when either offers `none`: ChatGPT's document names `private_key_jwt` but lists
    `["none", "private_key_jwt"]`, so it connects as a public client. A document offering
    neither field is taken as `none` (there is no secret it could be using)."""
    method = document.get("token_endpoint_auth_method")
    supported = document.get("token_endpoint_auth_methods_supported")
    if method is not None and not isinstance(method, str):
        raise CimdError("the document's token_endpoint_auth_method must be a string")
    if supported is not None and (not isinstance(supported, list) or not all(isinstance(m, str) for m in supported)):
        raise CimdError("the document's token_endpoint_auth_methods_supported must be a list of strings")
    offered = ([method] if method is not None else []) + list(supported or [])
    if not offered or "none" in offered:
        return
    if "private_key_jwt" in offered:
        raise CimdError(
            "the document asks for private_key_jwt client authentication, which this server does not support; "
            'the app must offer token_endpoint_auth_method "none" (a public client using PKCE)'
        )
    shared = [m for m in offered if m in SHARED_SECRET_METHODS]
    if shared:
        raise CimdError(
            f"the document asks for {shared[0]}, a shared-secret method, but an app identified by a metadata "
            'document has no secret registered with this server; it must use token_endpoint_auth_method "none"'
        )
    raise CimdError(
        'the document\'s token_endpoint_auth_method is not supported; use "none"',
        detail=f'the document\'s token_endpoint_auth_method {offered[0]!r} is not supported; use "none"',
    )


@cache
def pinned_documents() -> dict[str, dict[str, Any]]:
    """The documents shipped in `pinned_clients/`, by their client_id (each must validate)."""
    documents: dict[str, dict[str, Any]] = {}
    folder = resources.files("jean_memory.oauth").joinpath(PINNED_DIRECTORY)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            document = json.loads(entry.read_text(encoding="utf-8"))
            validate_document(document["client_id"], document)
            documents[document["client_id"]] = document
    return documents
