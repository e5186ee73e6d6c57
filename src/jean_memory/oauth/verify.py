"""The one access-token check the other faces use: a bearer token in, its verified claims out.

The MCP resource server (and anything else that serves a protected resource) sees only
`AccessTokenVerifier` and `InvalidAccessToken`, never the authorization server's internals
(DESIGN.md's layering: `mcp_server/` imports `oauth.verify` and `oauth.scopes`, nothing else
of `oauth/`).

The check, in order: the signature (current key, then the previous one), `iss`, `aud` (our
resource, RFC 8707), `exp` and every claim's type and range (`jwt_tokens.verify_access_token`);
then the token's grant must be live and be this `sub`'s grant for this `client_id` (CONTRACT
"Access token"), asked of the revocation cache so most requests never touch the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from jean_memory import clock
from jean_memory.config import Settings
from jean_memory.oauth.jwt_tokens import AccessTokenClaims, InvalidAccessToken, verify_access_token
from jean_memory.oauth.revoked_grants import RevocationCache
from jean_memory.off_loop import run_db

__all__ = ["GRANT_REVOKED", "AccessTokenClaims", "AccessTokenVerifier", "InvalidAccessToken", "TokenVerifier"]

# One message for a revoked grant and one that is not the token's: neither tells a caller more.
GRANT_REVOKED = "the token's grant has been revoked"
#: Tokens whose signature and claims were checked, remembered (by hash) so a client's next call
#: with the same token skips the HMAC and claim parsing; cleared when full.
MAX_VERIFIED = 10_000


class AccessTokenVerifier(Protocol):
    """What a protected resource needs of the authorization server."""

    async def verify(self, token: str) -> AccessTokenClaims:
        """The token's claims when it may be honoured; raises InvalidAccessToken (whose message
        is safe to show: it never contains the token) and nothing else."""
        ...


@dataclass(frozen=True)
class TokenVerifier:
    """Our access tokens (HS256 JWTs) for our one resource, checked against live grants."""

    settings: Settings
    revocations: RevocationCache
    # SHA-256 of a token -> its verified claims. A client sends the same token on every call
    # for its hour, and its signature, issuer, audience and claims cannot change (the keys are
    # fixed for the process's life), so only the times are checked again (issue 17: PyJWT's
    # decode was 4-6% of the server's GIL time). The token itself is never kept.
    _verified: dict[bytes, AccessTokenClaims] = field(default_factory=dict, compare=False, repr=False)

    def verify_signed(self, token: str) -> AccessTokenClaims:
        """Everything but the grant's liveness: pure CPU, microseconds, safe on the event loop."""
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        known = self._verified.get(key)
        if known is not None:
            now = clock.now()
            if known.exp > now and known.raw.get("nbf", 0) <= now:
                return known
        claims = verify_access_token(
            token,
            secrets=self.settings.verification_keys,
            issuer=self.settings.issuer,
            audience=self.settings.resource,
        )
        if len(self._verified) >= MAX_VERIFIED:
            self._verified.clear()
        self._verified[key] = claims
        return claims

    def verify_blocking(self, token: str) -> AccessTokenClaims:
        """Signature, claims, then the grant (live, and this `sub`'s for this `client_id`), for
        callers already in a worker thread: may read the database."""
        claims = self.verify_signed(token)
        if self.revocations.is_revoked(claims.grant_id, claims.sub, claims.client_id):
            raise InvalidAccessToken(GRANT_REVOKED)
        return claims

    async def verify(self, token: str) -> AccessTokenClaims:
        """`verify_blocking`, going to a worker thread only when the grant's status must be read."""
        claims = self.verify_signed(token)
        revoked = self.revocations.known_status(claims.grant_id, claims.sub, claims.client_id)
        if revoked is None:
            revoked = await run_db(self.revocations.is_revoked, claims.grant_id, claims.sub, claims.client_id)
        if revoked:
            raise InvalidAccessToken(GRANT_REVOKED)
        return claims
