"""The person's connected apps: their live grants as the /apps page shows them, and "Disconnect".

An app's name is whatever it registered (dynamic registration is open to anyone), so it is
shown the way the consent page shows it (`display.py`): an app calling itself "Claude" from
another host carries a warning with its real host, and hosts are in their ASCII form. A grant
whose client row is gone (swept) is still listed, as an unknown app, so it can be disconnected.

Disconnecting revokes the grant through `OAuthService.revoke` (its access tokens stop on this
instance at once, on the others within the revocation cache's lifetime; its refresh tokens are
deleted) and forgets the consent for that client, so connecting again asks again.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory.db.tables import consents, grants, oauth_clients
from jean_memory.oauth.clients import client_from_row
from jean_memory.oauth.display import impostor_warning, shown_host
from jean_memory.oauth.scopes import SCOPE_DESCRIPTIONS
from jean_memory.oauth.service import OAuthService

UNKNOWN_APP = "Unknown app"
REGISTERED_HERE = "registered here"
DISCONNECTED_REASON = "disconnected"
MAX_NAME_CHARS = 80


@dataclass(frozen=True)
class ConnectedApp:
    grant_id: str
    name: str
    host: str  # the host of a metadata-document client_id, else REGISTERED_HERE
    warning: str | None  # set when the app borrows a well-known app's name
    scopes: list[str]  # in words
    connected_at: float
    last_used_at: float | None


def _printable_name(name: str | None) -> str:
    """The name as text a person can read: no control or format characters, bounded length."""
    cleaned = "".join(c for c in (name or "") if c.isprintable()).strip()
    if len(cleaned) > MAX_NAME_CHARS:
        cleaned = cleaned[: MAX_NAME_CHARS - 1] + "…"
    return cleaned or UNKNOWN_APP


def scope_words(scope: str) -> list[str]:
    return [SCOPE_DESCRIPTIONS.get(s, s) for s in scope.split()]


def list_connected_apps(engine: Engine, user_id: str) -> list[ConnectedApp]:
    """The person's live grants, most recently connected first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                grants.c.id.label("grant_id"),
                grants.c.client_id.label("grant_client_id"),
                grants.c.scope.label("grant_scope"),
                grants.c.created_at.label("grant_created_at"),
                grants.c.last_used_at.label("grant_last_used_at"),
                oauth_clients,
            )
            .outerjoin(oauth_clients, oauth_clients.c.client_id == grants.c.client_id)
            .where(grants.c.user_id == user_id, grants.c.revoked_at.is_(None))
            .order_by(grants.c.created_at.desc(), grants.c.id)
        ).all()
    apps = []
    for row in rows:
        client_id = row.grant_client_id
        if row.client_name is None:  # the client row is gone: say only what the id itself shows
            name, warning = UNKNOWN_APP, None
            host = shown_host(client_id) if client_id.lower().startswith("https://") else REGISTERED_HERE
        else:
            client = client_from_row(row)
            name = _printable_name(client.client_name)
            warning = impostor_warning(client, client.redirect_uris[0] if client.redirect_uris else "")
            host = shown_host(client_id) if client.source == "cimd" else REGISTERED_HERE
        apps.append(
            ConnectedApp(
                grant_id=row.grant_id,
                name=name,
                host=host or REGISTERED_HERE,
                warning=warning,
                scopes=scope_words(row.grant_scope),
                connected_at=row.grant_created_at,
                last_used_at=row.grant_last_used_at,
            )
        )
    return apps


def disconnect(service: OAuthService, user_id: str, grant_id: str) -> bool:
    """Revoke this person's live grant and forget their consent for its client; False when the
    grant is unknown, revoked already, or someone else's (the caller answers all three alike)."""
    engine = service.engine
    with engine.connect() as conn:
        client_id = conn.execute(
            sa.select(grants.c.client_id).where(
                grants.c.id == grant_id, grants.c.user_id == user_id, grants.c.revoked_at.is_(None)
            )
        ).scalar_one_or_none()
    if client_id is None:
        return False
    service.revoke(grant_id, DISCONNECTED_REASON)
    with engine.begin() as conn:
        conn.execute(consents.delete().where(consents.c.user_id == user_id, consents.c.client_id == client_id))
    return True


def grant_ids_of(engine: Engine, user_id: str) -> list[str]:
    """Every grant id of the person, live or not: what this instance's revocation cache must
    forget when the account is deleted (a cached "live" would outlast the deleted rows)."""
    with engine.connect() as conn:
        return list(conn.execute(sa.select(grants.c.id).where(grants.c.user_id == user_id)).scalars())
