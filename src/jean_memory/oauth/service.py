"""The authorization server's shared state and the one place tokens are issued.

Handlers (one module per endpoint) go through an `OAuthService`, so issuing and revoking follow
one set of rules; checking a token is `oauth/verify.py`'s, which the service holds as `verifier`
(the one the MCP resource server is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from jean_memory.accounts.users import get_user
from jean_memory.config import Settings, derive_key
from jean_memory.oauth import grants as grant_store
from jean_memory.oauth.cimd import CimdClients, is_metadata_url
from jean_memory.oauth.clients import Client, client_profile, get_client, touch_client
from jean_memory.oauth.guarded_fetch import CimdError, CimdFetcher
from jean_memory.oauth.jwt_tokens import AccessTokenClaims, InvalidAccessToken, mint_access_token
from jean_memory.oauth.revoked_grants import RevocationCache
from jean_memory.oauth.verify import TokenVerifier
from jean_memory.observability.metrics import Metrics
from jean_memory.off_loop import run_db

REFRESH_SUCCESSOR_PURPOSE = "refresh successor"


@dataclass
class OAuthService:
    engine: Engine
    settings: Settings
    revocations: RevocationCache
    metrics: Metrics = field(default_factory=Metrics)
    cimd: CimdClients = field(init=False)  # clients named by a metadata document URL
    verifier: TokenVerifier = field(init=False)  # the access-token check

    def __post_init__(self) -> None:
        self.verifier = TokenVerifier(self.settings, self.revocations)
        fetcher = CimdFetcher(ca_file=self.settings.cimd_ca_file, loopback_hosts=self.settings.cimd_test_loopback_hosts)
        self.cimd = CimdClients(self.engine, fetcher)

    @classmethod
    def create(cls, engine: Engine, settings: Settings, metrics: Metrics | None = None) -> OAuthService:
        return cls(engine, settings, RevocationCache(engine, settings.revocation_cache_seconds), metrics or Metrics())

    def token_response(
        self, grant: grant_store.Grant, client: Client, scope: str | None = None, refresh_token: str | None = None
    ) -> dict[str, Any]:
        """Mint an access token for a live grant, with `refresh_token` (the successor of the one
        just rotated) or, for a new grant whose client may refresh, a new refresh token."""
        user = get_user(self.engine, grant.user_id)
        if user is None:
            raise InvalidAccessToken("the account no longer exists")
        scope = scope or grant.scope
        access_token, expires_in = mint_access_token(
            secret=self.settings.jwt_secret_key,
            issuer=self.settings.issuer,
            audience=grant.resource,
            user_id=user.id,
            email=user.email,
            client_profile=client_profile(client.client_name),
            client_id=client.client_id,
            scope=scope,
            grant_id=grant.id,
            lifetime_seconds=self.settings.access_token_seconds,
        )
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": scope,
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        elif "refresh_token" in client.grant_types:
            body["refresh_token"] = grant_store.issue_refresh_token(
                self.engine, grant.id, self.settings.refresh_token_days * 86400
            )
        touch_client(self.engine, client.client_id)
        return body

    @property
    def refresh_successor_keys(self) -> tuple[bytes, ...]:
        """Keys deriving a refresh token's successor: the current key's, then the previous one's,
        so a retry that straddles a key rotation still gets the successor it was given."""
        return tuple(derive_key(key, REFRESH_SUCCESSOR_PURPOSE) for key in self.settings.verification_keys)

    def verify(self, token: str) -> AccessTokenClaims:
        """Signature, claims, then the grant (live, and this `sub`'s for this `client_id`):
        raises InvalidAccessToken. Blocking: call it from a worker thread."""
        return self.verifier.verify_blocking(token)

    def revoke(self, grant_id: str, reason: str) -> None:
        grant_store.revoke_grant(self.engine, grant_id, reason)
        self.revocations.mark_revoked(grant_id)

    async def client_async(self, client_id: str | None) -> Client | None:
        """The client, or None when it is unknown or unusable; a metadata document is fetched in
        the fetch pool, never a database thread."""
        try:
            return await self.resolve_client_async(client_id)
        except CimdError:
            return None

    async def resolve_client_async(self, client_id: str | None, requester: str | None = None) -> Client | None:
        """Like `client_async`, but a client_id that is a metadata document URL which cannot be
        used raises CimdError saying why (for the authorization page to show); `requester`, the
        client address, bounds that address's share of the fetch pool."""
        if client_id and is_metadata_url(client_id):
            return await self.cimd.get_async(client_id, requester)
        return await run_db(get_client, self.engine, client_id)
