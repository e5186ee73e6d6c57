"""Grants and what hangs off them: pending authorization requests, codes and refresh tokens.

A grant is one person's approval of one client for one resource and scope. Every code,
refresh token and access token belongs to exactly one grant, so revoking the grant (code
replay, refresh-token reuse, RFC 7009, "disconnect") ends all of them at once. Codes and
refresh tokens are stored as SHA-256 hashes; single use is enforced by conditional updates,
so two instances racing on one code cannot both win.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import (
    authorization_codes,
    authorization_requests,
    consents,
    grants,
    refresh_tokens,
    users,
)
from jean_memory.oauth.scopes import within_consent

CODE_PREFIX = "jmac_"
REFRESH_PREFIX = "jmrt_"


@dataclass(frozen=True)
class PendingAuthorization:
    client_id: str
    redirect_uri: str
    code_challenge: str
    state: str | None
    scope: str
    resource: str
    user_id: str | None
    prompt: str | None = None
    redirect_uri_given: bool = True  # False: left out, the only registered one is used (RFC 6749 §4.1.3)

    def wants(self, prompt: str) -> bool:
        """OpenID Connect `prompt` values (login, consent, none) the client asked for."""
        return prompt in (self.prompt or "").split()


@dataclass(frozen=True)
class Grant:
    id: str
    user_id: str
    client_id: str
    scope: str
    resource: str
    revoked: bool


@dataclass(frozen=True)
class CodeRedemption:
    grant: Grant
    redirect_uri: str
    redirect_uri_given: bool
    code_challenge: str
    expired: bool


class CodeReplayed(Exception):
    """The code was used before: the caller must revoke `grant_id`."""

    def __init__(self, grant_id: str) -> None:
        super().__init__("authorization code replayed")
        self.grant_id = grant_id


# --- pending authorization requests (between /authorize and the consent decision) ---------------


def save_pending(engine: Engine, pending: PendingAuthorization, lifetime_seconds: int) -> str:
    session_id = clock.new_token()
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(
            authorization_requests.insert().values(
                id_hash=clock.sha256_hex(session_id),
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                redirect_uri_given=pending.redirect_uri_given,
                code_challenge=pending.code_challenge,
                state=pending.state,
                scope=pending.scope,
                resource=pending.resource,
                prompt=pending.prompt,
                user_id=pending.user_id,
                created_at=now,
                expires_at=now + lifetime_seconds,
            )
        )
    return session_id


def load_pending(engine: Engine, session_id: str | None) -> PendingAuthorization | None:
    if not session_id:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(authorization_requests).where(
                authorization_requests.c.id_hash == clock.sha256_hex(session_id),
                authorization_requests.c.expires_at > clock.now(),
            )
        ).first()
    if row is None:
        return None
    return PendingAuthorization(
        client_id=row.client_id,
        redirect_uri=row.redirect_uri,
        code_challenge=row.code_challenge,
        state=row.state,
        scope=row.scope,
        resource=row.resource,
        user_id=row.user_id,
        prompt=row.prompt,
        redirect_uri_given=row.redirect_uri_given,
    )


def attach_user(engine: Engine, session_id: str, user_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            authorization_requests.update()
            .where(authorization_requests.c.id_hash == clock.sha256_hex(session_id))
            .values(user_id=user_id)
        )


def finish_pending(engine: Engine, session_id: str) -> bool:
    """Remove the request; False when another submit already finished it (double click, replay)."""
    with engine.begin() as conn:
        result = conn.execute(
            authorization_requests.delete().where(authorization_requests.c.id_hash == clock.sha256_hex(session_id))
        )
    return bool(result.rowcount)


# --- consent --------------------------------------------------------------------------------------


def consented_scope(engine: Engine, user_id: str, client_id: str, scope: str, redirect_uri: str) -> str | None:
    """The scope a remembered consent lets go without asking: None unless the person approved
    this client sending codes to this exact redirect URI (a consent for one URI says nothing
    about where else codes may go) for at least this scope, or approved it read-only (then
    the request made read-only: a silent approval never widens what the person chose)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(consents.c.scope, consents.c.redirect_uri).where(
                consents.c.user_id == user_id, consents.c.client_id == client_id
            )
        ).first()
    if row is None or row.redirect_uri != redirect_uri:
        return None
    return within_consent(scope, row.scope)


def remember_consent(conn: Connection, user_id: str, client_id: str, scope: str, redirect_uri: str) -> None:
    conn.execute(consents.delete().where(consents.c.user_id == user_id, consents.c.client_id == client_id))
    conn.execute(
        consents.insert().values(
            user_id=user_id, client_id=client_id, scope=scope, redirect_uri=redirect_uri, created_at=clock.now()
        )
    )


# --- codes ------------------------------------------------------------------------------------------


def issue_code(
    engine: Engine, pending: PendingAuthorization, user_id: str, lifetime_seconds: int, remember: bool
) -> str:
    """Create the grant and its single-use code (and remember the consent) in one transaction.

    The person's account is read first, locked against a concurrent `user disable` (FOR SHARE on
    PostgreSQL; SQLite serialises writers): an approval whose session check passed just before
    the account was disabled would otherwise write a live grant the disable never saw, whose
    tokens would work for good. For a disabled (or deleted) account the grant is born revoked,
    so its code is refused at the token endpoint."""
    code = clock.new_token(CODE_PREFIX)
    now = clock.now()
    grant_id = clock.new_id()
    with engine.begin() as conn:
        account = conn.execute(
            sa.select(users.c.disabled_at).where(users.c.id == user_id).with_for_update(read=True)
        ).first()
        usable = account is not None and account.disabled_at is None
        conn.execute(
            grants.insert().values(
                id=grant_id,
                user_id=user_id,
                client_id=pending.client_id,
                scope=pending.scope,
                resource=pending.resource,
                created_at=now,
                revoked_at=None if usable else now,
                revoked_reason=None if usable else "account_disabled",
            )
        )
        conn.execute(
            authorization_codes.insert().values(
                code_hash=clock.sha256_hex(code),
                grant_id=grant_id,
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                redirect_uri_given=pending.redirect_uri_given,
                code_challenge=pending.code_challenge,
                expires_at=now + lifetime_seconds,
            )
        )
        if remember:
            remember_consent(conn, user_id, pending.client_id, pending.scope, pending.redirect_uri)
    return code


def _grant_from_row(row: sa.Row) -> Grant:
    return Grant(
        id=row.id,
        user_id=row.user_id,
        client_id=row.client_id,
        scope=row.scope,
        resource=row.resource,
        revoked=row.revoked_at is not None,
    )


def redeem_code(engine: Engine, code: str, client_id: str) -> CodeRedemption | None:
    """Use a code once. None when unknown or another client's (left unused: a client must not
    be able to burn someone else's code); CodeReplayed when used before."""
    code_hash = clock.sha256_hex(code)
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(authorization_codes, grants)
            .join(grants, grants.c.id == authorization_codes.c.grant_id)
            .where(authorization_codes.c.code_hash == code_hash)
        ).first()
        if row is None or row.client_id != client_id:
            return None
        used = conn.execute(
            authorization_codes.update()
            .where(authorization_codes.c.code_hash == code_hash, authorization_codes.c.used_at.is_(None))
            .values(used_at=clock.now())
        )
    if not used.rowcount:
        raise CodeReplayed(row.grant_id)
    return CodeRedemption(
        grant=_grant_from_row(row),
        redirect_uri=row.redirect_uri,
        redirect_uri_given=row.redirect_uri_given,
        code_challenge=row.code_challenge,
        expired=row.expires_at <= clock.now(),
    )


# --- refresh tokens --------------------------------------------------------------------------------


def issue_refresh_token(engine: Engine, grant_id: str, lifetime_seconds: int) -> str:
    token = clock.new_token(REFRESH_PREFIX)
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(
            refresh_tokens.insert().values(
                token_hash=clock.sha256_hex(token), grant_id=grant_id, created_at=now, expires_at=now + lifetime_seconds
            )
        )
    return token


class RefreshRejected(Exception):
    """`revoke_grant_id` is set when the rejection means the grant must be revoked (reuse)."""

    def __init__(self, description: str, revoke_grant_id: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.revoke_grant_id = revoke_grant_id


def refresh_successor(token: str, key: bytes) -> str:
    """The one refresh token that follows `token`: HMAC(key, token), so a token presented again
    inside the grace window gets the same successor back (two racing refreshes, even on two
    instances, end on one chain) without any successor kept in clear (RFC 9700 §4.14.2)."""
    mac = hmac.new(key, token.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return REFRESH_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def rotate_refresh_token(
    engine: Engine,
    token: str,
    client_id: str,
    grace_seconds: int,
    successor_keys: tuple[bytes, ...],
    lifetime_seconds: int,
) -> tuple[Grant, str]:
    """Accept a refresh token once, and answer its successor; presented again within the grace
    window (a retried or concurrent refresh) it answers the same successor. Any later reuse, or
    reuse after the successor itself was used, means it leaked: the whole grant must go
    (RFC 9700 §4.14). `successor_keys`: the current key first, then any previous one."""
    token_hash = clock.sha256_hex(token)
    now = clock.now()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(refresh_tokens, grants)
            .join(grants, grants.c.id == refresh_tokens.c.grant_id)
            .where(refresh_tokens.c.token_hash == token_hash)
        ).first()
        if row is None or row.client_id != client_id:
            raise RefreshRejected("the refresh token is unknown or was issued to another client")
        if row.revoked_at is not None:
            raise RefreshRejected("the refresh token's grant has been revoked; sign in again")
        if row.expires_at <= now:
            raise RefreshRejected("the refresh token has expired; sign in again")
        first_use = conn.execute(
            refresh_tokens.update()
            .where(refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.rotated_at.is_(None))
            .values(rotated_at=now)
        )
        if first_use.rowcount:
            # Issued in the same transaction as the rotation: whoever loses the race above
            # (blocked on the row until this commits) finds the successor already there.
            successor = refresh_successor(token, successor_keys[0])
            conn.execute(grants.update().where(grants.c.id == row.grant_id).values(last_used_at=now))
            conn.execute(
                refresh_tokens.insert().values(
                    token_hash=clock.sha256_hex(successor),
                    grant_id=row.grant_id,
                    created_at=now,
                    expires_at=now + lifetime_seconds,
                )
            )
            return _grant_from_row(row), successor
        rotated_at = conn.execute(
            sa.select(refresh_tokens.c.rotated_at).where(refresh_tokens.c.token_hash == token_hash)
        ).scalar_one()
        reused = RefreshRejected(
            "the refresh token was already used; the connection has been revoked, sign in again",
            revoke_grant_id=row.grant_id,
        )
        if now - rotated_at > grace_seconds:
            raise reused
        for key in successor_keys:
            successor = refresh_successor(token, key)
            successor_row = conn.execute(
                sa.select(refresh_tokens.c.rotated_at).where(
                    refresh_tokens.c.token_hash == clock.sha256_hex(successor),
                    refresh_tokens.c.grant_id == row.grant_id,
                )
            ).first()
            if successor_row is not None:
                if successor_row.rotated_at is not None:
                    raise reused  # the chain has moved on: this copy of the token is a second holder's
                return _grant_from_row(row), successor
    # Its successor was made under a key that is no longer configured.
    raise RefreshRejected("the refresh token was already used; use the one issued with it or sign in again")


def find_refresh_grant(engine: Engine, token: str) -> Grant | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(grants)
            .join(refresh_tokens, grants.c.id == refresh_tokens.c.grant_id)
            .where(refresh_tokens.c.token_hash == clock.sha256_hex(token))
        ).first()
    return _grant_from_row(row) if row else None


# --- grants ------------------------------------------------------------------------------------------


def get_grant(engine: Engine, grant_id: str) -> Grant | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(grants).where(grants.c.id == grant_id)).first()
    return _grant_from_row(row) if row else None


LAST_USED_EVERY_SECONDS = 60


def note_grant_use(engine: Engine, grant_id: str, last_used_at: float | None) -> None:
    """Record that the grant's token was used (the /apps page's "last used"), at most once a
    minute per grant: `last_used_at` is what the caller just read, so a fresh one costs no write.
    Best effort: a busy database must not turn a valid token away."""
    now = clock.now()
    if last_used_at is not None and now - last_used_at < LAST_USED_EVERY_SECONDS:
        return
    try:
        with engine.begin() as conn:
            conn.execute(
                grants.update()
                .where(
                    grants.c.id == grant_id,
                    sa.or_(grants.c.last_used_at.is_(None), grants.c.last_used_at < now - LAST_USED_EVERY_SECONDS),
                )
                .values(last_used_at=now)
            )
    except sa.exc.OperationalError:
        pass


def revoke_grant(engine: Engine, grant_id: str, reason: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            grants.update()
            .where(grants.c.id == grant_id, grants.c.revoked_at.is_(None))
            .values(revoked_at=clock.now(), revoked_reason=reason)
        )
        conn.execute(refresh_tokens.delete().where(refresh_tokens.c.grant_id == grant_id))


def sweep_expired(engine: Engine) -> None:
    """Drop what can never be used again, so tables do not grow without bound."""
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(authorization_requests.delete().where(authorization_requests.c.expires_at < now))
        conn.execute(authorization_codes.delete().where(authorization_codes.c.expires_at < now - 86400))
        conn.execute(refresh_tokens.delete().where(refresh_tokens.c.expires_at < now))
