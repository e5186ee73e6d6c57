"""Registered OAuth clients: dynamic (RFC 7591), static (`jean-memory client add`), and lookup.

Client secrets are high-entropy, so they are stored as SHA-256 hashes and compared in
constant time. Claude registers a fresh client on every new connection, so dynamic clients
nobody has used for `unused_client_days` are swept away.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import oauth_clients
from jean_memory.oauth.errors import ErrorCode
from jean_memory.oauth.redirects import RedirectUriError, check_registrable_list
from jean_memory.oauth.scopes import grantable_scope

AUTH_METHODS = ("none", "client_secret_post", "client_secret_basic")
GRANT_TYPES = ("authorization_code", "refresh_token")
CLIENT_ID_PREFIX = "jmc_"
# How long after its last successful fetch a client metadata document may still be used when a
# re-fetch fails for a network reason (oauth/cimd.py).
CIMD_STALE_SECONDS = 86400
# A metadata document no token was issued for is kept this long after its first fetch: longer
# than any authorization started with it can last (10 minutes to the code, a minute to redeem).
CIMD_NEVER_USED_SECONDS = 3600
# A dynamically registered client no token was ever issued to is kept this long: registering is
# open to anyone (120 per 10 minutes per address, ~21 KB each), and an app registers just before
# the person signs in, so a day without one token means the connection did not happen.
DCR_NEVER_USED_SECONDS = 86400
SECRET_PREFIX = "jms_"


class ClientMetadataError(ValueError):
    """RFC 7591 §3.2.2: `error` is invalid_redirect_uri or invalid_client_metadata."""

    def __init__(self, error: ErrorCode, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Client:
    client_id: str
    client_name: str
    redirect_uris: list[str]
    token_endpoint_auth_method: str
    grant_types: list[str]
    scope: str | None
    source: str
    client_secret_hash: str | None

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def secret_matches(self, secret: str | None) -> bool:
        if not secret or not self.client_secret_hash:
            return False
        return hmac.compare_digest(clock.sha256_hex(secret), self.client_secret_hash)


@dataclass(frozen=True)
class Registration:
    client: Client
    client_secret: str | None
    issued_at: int

    def response_body(self) -> dict[str, Any]:
        """RFC 7591 §3.2.1: always state the auth method; a secret always comes with its expiry."""
        body: dict[str, Any] = {
            "client_id": self.client.client_id,
            "client_id_issued_at": self.issued_at,
            "client_name": self.client.client_name,
            "redirect_uris": self.client.redirect_uris,
            "grant_types": self.client.grant_types,
            "response_types": ["code"],
            "token_endpoint_auth_method": self.client.token_endpoint_auth_method,
        }
        if self.client.scope:
            body["scope"] = self.client.scope
        if self.client_secret:
            body["client_secret"] = self.client_secret
            body["client_secret_expires_at"] = 0
        return body


def validate_metadata(body: dict[str, Any]) -> dict[str, Any]:
    """Liberal in what it accepts (unknown or null fields are ignored), exact in what it checks."""
    try:
        redirect_uris = check_registrable_list(body.get("redirect_uris"))
    except RedirectUriError as exc:
        raise ClientMetadataError("invalid_redirect_uri", str(exc)) from exc

    method = body.get("token_endpoint_auth_method") or "client_secret_basic"
    if method not in AUTH_METHODS:
        raise ClientMetadataError(
            "invalid_client_metadata",
            f"token_endpoint_auth_method {method!r} is not supported; use one of {', '.join(AUTH_METHODS)}",
        )
    grant_types = body.get("grant_types") or ["authorization_code", "refresh_token"]
    if not isinstance(grant_types, list) or "authorization_code" not in grant_types:
        raise ClientMetadataError("invalid_client_metadata", "grant_types must include authorization_code")
    unsupported = [g for g in grant_types if g not in GRANT_TYPES]
    if unsupported:
        raise ClientMetadataError(
            "invalid_client_metadata", f"grant types {unsupported} are not supported; use {list(GRANT_TYPES)}"
        )
    response_types = body.get("response_types") or ["code"]
    if not isinstance(response_types, list) or "code" not in response_types:
        raise ClientMetadataError("invalid_client_metadata", "response_types must include code")
    name = body.get("client_name")
    if name is not None and not isinstance(name, str):
        raise ClientMetadataError("invalid_client_metadata", "client_name must be a string")
    scope = body.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise ClientMetadataError("invalid_client_metadata", "scope must be a space-separated string")
    return {
        "client_name": (name or "").strip()[:255] or _name_from_redirect(redirect_uris[0]),
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": method,
        "grant_types": list(dict.fromkeys(grant_types)),
        "scope": grantable_scope(scope) if scope else None,
    }


def _name_from_redirect(uri: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    return parts.hostname or parts.scheme or "Unnamed app"


def register_client(engine: Engine, body: dict[str, Any], source: str = "dcr") -> Registration:
    fields = validate_metadata(body)
    secret = None if fields["token_endpoint_auth_method"] == "none" else clock.new_token(SECRET_PREFIX)
    client = Client(
        client_id=clock.new_token(CLIENT_ID_PREFIX, 18),
        client_secret_hash=clock.sha256_hex(secret) if secret else None,
        source=source,
        **fields,
    )
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(
            oauth_clients.insert().values(
                client_id=client.client_id,
                client_secret_hash=client.client_secret_hash,
                client_name=client.client_name,
                redirect_uris=client.redirect_uris,
                token_endpoint_auth_method=client.token_endpoint_auth_method,
                grant_types=client.grant_types,
                scope=client.scope,
                source=source,
                metadata={},
                created_at=now,
            )
        )
    return Registration(client=client, client_secret=secret, issued_at=int(now))


def get_client(engine: Engine, client_id: str | None) -> Client | None:
    if not client_id or len(client_id) > 2048:
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(oauth_clients).where(oauth_clients.c.client_id == client_id)).first()
    return None if row is None else client_from_row(row)


def client_from_row(row: sa.Row) -> Client:
    return Client(
        client_id=row.client_id,
        client_name=row.client_name,
        redirect_uris=list(row.redirect_uris),
        token_endpoint_auth_method=row.token_endpoint_auth_method,
        grant_types=list(row.grant_types),
        scope=row.scope,
        source=row.source,
        client_secret_hash=row.client_secret_hash,
    )


def touch_client(engine: Engine, client_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            oauth_clients.update().where(oauth_clients.c.client_id == client_id).values(last_used_at=clock.now())
        )


def sweep_unused_clients(engine: Engine, unused_days: int) -> int:
    """Delete dynamic clients unused for `unused_days`, and those never used (no token issued)
    DCR_NEVER_USED_SECONDS after registering; static clients stay until removed.

    Cached client metadata documents (source `cimd`) go once they expired more than
    CIMD_STALE_SECONDS ago: no rule may serve them any more, and the next use fetches again.
    One no token was ever issued for goes CIMD_NEVER_USED_SECONDS after it was first fetched:
    anyone may make us fetch and store documents by naming them in `/oauth/authorize`, and
    only a client people connected needs its copy kept through an outage of its site.
    """
    now = clock.now()
    cutoff = now - unused_days * 86400
    last_use = sa.func.coalesce(oauth_clients.c.last_used_at, oauth_clients.c.created_at)
    with engine.begin() as conn:
        never_used = sa.and_(
            oauth_clients.c.last_used_at.is_(None), oauth_clients.c.created_at < now - DCR_NEVER_USED_SECONDS
        )
        result = conn.execute(
            oauth_clients.delete().where(oauth_clients.c.source == "dcr", sa.or_(last_use < cutoff, never_used))
        )
        cimd = conn.execute(
            oauth_clients.delete().where(
                oauth_clients.c.source == "cimd",
                sa.or_(
                    oauth_clients.c.expires_at < now - CIMD_STALE_SECONDS,
                    sa.and_(
                        oauth_clients.c.last_used_at.is_(None),
                        oauth_clients.c.created_at < now - CIMD_NEVER_USED_SECONDS,
                    ),
                ),
            )
        )
    return (result.rowcount or 0) + (cimd.rowcount or 0)


def client_profile(client_name: str) -> str:
    """The `client` claim: which tool set a client gets, from its name, case-insensitively."""
    name = client_name.lower()
    if "claude" in name:
        return "claude"
    if "chatgpt" in name or "openai" in name:
        return "chatgpt"
    return "default"
